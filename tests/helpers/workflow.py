"""Running Snakemake in the tests: the one runner, the reduced toy config, config edits, and
readers for what Snakemake did or plans to do.

A test's working directory holds `config/config.yaml` (read by the Snakefile's `configfile:`),
the UDHR archive cache and, after a run, `results/`, `logs/` and `.snakemake/`; the workflow
code is the repository's own, passed with `--snakefile`.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
SNAKEFILE = REPO / "Snakefile"
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
REFERENCE_CONFIG = REPO / ".test" / "config" / "config.yaml"
# Set by conftest.py while a test without the `workflow` or `slurm` marker runs: it may not run Snakemake.
UNMARKED_TEST: str | None = None


def reduced_default() -> dict:
    """The committed reduced toy, .test/config/config.yaml: every stage of the real DAG in a few
    dozen small jobs (the file says what it cuts)."""
    return yaml.safe_load(REFERENCE_CONFIG.read_text())


def with_changes(config: dict, **changes) -> dict:
    """A deep copy of ``config`` with dotted keys replaced (``None`` deletes one), e.g.
    ``with_changes(c, **{"calibration.seeds": [0, 1]})``."""
    changed = copy.deepcopy(config)
    for dotted, value in changes.items():
        *parents, leaf = dotted.split(".")
        node = changed
        for key in parents:
            node = node[key]
        if value is None:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    return changed


def make_workdir(workdir: Path, config: dict) -> Path:
    """A working directory whose default config is ``config``; the UDHR archive
    is copied from the repository's cache when there is one, so no download."""
    workdir.mkdir(parents=True, exist_ok=True)
    write_config(workdir, config)
    archive = config.get("toy", {}).get("archive")
    if archive and (REPO / archive).exists() and not (workdir / archive).exists():
        (workdir / archive).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / archive, workdir / archive)
    return workdir


def write_config(workdir: Path, config: dict) -> None:
    """Replace the working directory's default config (the Snakefile reads it)."""
    (workdir / "config").mkdir(exist_ok=True)
    (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def snakemake_env(extra: dict | None = None) -> dict:
    """The environment every run gets: offline hub, quiet tokenizers, the venv
    first on PATH so rules find `langprune`."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra or {})
    return env


def snakemake(workdir: Path, *args: str, snakefile: Path | None = SNAKEFILE, env: dict | None = None,
              environ: dict | None = None, timeout: int = 900, check: bool = True) -> subprocess.CompletedProcess:
    """Run Snakemake in ``workdir`` (on the repository's Snakefile unless ``snakefile`` is None:
    then on the working directory's own) in ``environ`` (default: ``snakemake_env()``) with the
    variables of ``env`` added; with ``check``, a failure raises with Snakemake's output and the
    ends of the jobs' logs, so a test failure says what went wrong."""
    assert UNMARKED_TEST is None, f"{UNMARKED_TEST} runs Snakemake: mark it pytest.mark.workflow"
    command = [*SNAKEMAKE, *(["--snakefile", str(snakefile)] if snakefile else []), "--directory", str(workdir),
               *args]
    result = subprocess.run(command, cwd=workdir, env={**(snakemake_env() if environ is None else environ),
                                                       **(env or {})},
                            capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        logs = "\n".join(f"--- {p}\n{p.read_text(errors='replace')[-1500:]}"
                         for p in sorted((Path(workdir) / "logs").rglob("*.log")))
        raise AssertionError(f"{' '.join(command)} failed ({result.returncode}):\n"
                             f"{result.stdout[-6000:]}\n{result.stderr[-6000:]}\n{logs[-6000:]}")
    return result


def run_locally(workdir: Path, *args: str, cores: int = 2, **kwargs) -> subprocess.CompletedProcess:
    """A plain local run, the way `make demo` runs the workflow."""
    return snakemake(workdir, "--cores", str(cores), *args, **kwargs)


def job_counts(output: str) -> dict[str, int]:
    """Rule -> planned jobs, from the 'Job stats' table of a dry run's output."""
    table = output.split("Job stats:", 1)[1]
    counts = {}
    for line in table.splitlines()[3:]:
        match = re.fullmatch(r"(\w+)\s+(\d+)", line.strip())
        if not match:
            break
        counts[match.group(1)] = int(match.group(2))
    return counts


_JOB_HEADER = re.compile(r"^(?:local)?rule (\w+):$")
_JOB_OUTPUT = re.compile(r"^\s+output: (.+)$")


def planned_jobs(workdir: Path, *args: str, **kwargs) -> set[tuple[str, str]]:
    """The jobs a dry run would execute, as (rule, first output) pairs, parsed
    from Snakemake's job listing (`rule NAME:` then `    output: PATH, ...`).
    The target rule `all` has no output and is reported as (all, "")."""
    result = snakemake(workdir, "--dry-run", "--cores", "1", *args, **kwargs)
    jobs, rule = set(), None
    for line in result.stdout.splitlines() + [""]:
        header = _JOB_HEADER.match(line)
        if header:
            if rule is not None:
                jobs.add((rule, ""))
            rule = header.group(1)
            continue
        output = _JOB_OUTPUT.match(line)
        if rule is not None and output:
            jobs.add((rule, output.group(1).split(", ")[0]))
            rule = None
        elif rule is not None and not line.startswith(" "):
            jobs.add((rule, ""))
            rule = None
    return jobs


def rules_of(jobs: set[tuple[str, str]]) -> dict[str, int]:
    """How many planned jobs each rule has."""
    counts: dict[str, int] = {}
    for rule, _ in jobs:
        counts[rule] = counts.get(rule, 0) + 1
    return counts


def output_mtimes(root: Path) -> dict[str, int]:
    """Modification time (ns) of every file under ``root``/results, to prove
    that a run rewrote nothing it had already made."""
    results = root / "results"
    return {str(path.relative_to(root)): path.stat().st_mtime_ns
            for path in results.rglob("*") if path.is_file()}


# Rules that compute one artifact per grid point (or per model); a rerun must
# never redo one whose output exists. Every other rule aggregates over the grid
# (metrics table, report tables and figures, cross-checkpoint analyses) and
# reruns whenever the grid grows.
PER_POINT_RULES = frozenset({
    "toy_corpus", "toy_tokenizer", "toy_model", "multiple_choice_items", "calibration_shard",
    "prune", "evaluate_perplexity", "evaluate_perplexity_dense", "evaluate_tasks", "evaluate_tasks_dense",
    "analysis_hidden_dense", "analysis_hidden_pruned",
})


def is_aggregate(rule: str) -> bool:
    return rule not in PER_POINT_RULES


def copy_run(source: Path, target: Path) -> Path:
    """A copy of a completed working directory, timestamps and Snakemake's
    metadata included, that a test may change freely."""
    shutil.copytree(source, target, symlinks=True)
    return target
