"""The paper's config end to end offline, against the mirror conftest.py starts: its workflow
prefetch runs while the mirror is up, then the mirror stops and the shrunk grid runs through
profiles/local, and a cut of it through profiles/slurm on the test suite's one-node SLURM, whose
checkpoints and metrics must equal the local run's. Every compute process runs under a socket guard
that records any internet connection attempt.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import NamedTuple

import pytest

from conftest import built_once
from helpers import slurm
from helpers import workflow as wf
from mirror import hubfixtures as fx
from mirror.server import PAPER, offline_env, paper_config, refuses

pytestmark = pytest.mark.workflow  # a mirror server and workflow runs: not the unit tier

PROFILES = PAPER.parents[1] / "profiles"
MODELS = {"llama3-8b-instruct": fx.LLAMA3, "aya23-8b": fx.AYA23}


def failure_report(workdir: Path, output: str) -> str:
    """Snakemake's output and the tails of the jobs' logs that say why (an error line or a traceback)."""
    failed = [log for log in sorted(workdir.glob("logs/**/*.log"))
              if any(word in log.read_text(errors="replace") for word in ("error", "Error", "Traceback"))]
    return output[-5000:] + "".join(f"\n--- {log}\n{log.read_text(errors='replace')[-1500:]}" for log in failed[:3])


def snakemake(workdir: Path, config: Path, *args: str, env: dict, timeout: int = 3600) -> str:
    result = wf.snakemake(workdir, *args, "--configfile", str(config), environ=env, timeout=timeout, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, failure_report(workdir, output)
    return output


class Prefetched(NamedTuple):
    """The shrunk paper config after its prefetch: the config, the prefetch's results and the client's
    environment (pointing at the stopped mirror)."""

    config: Path
    results: Path
    client_env: dict

    def offline_env(self, workdir: Path) -> dict:
        """The compute side's environment for a run in ``workdir``: the network guard, logging to
        ``workdir/network.log``. No HF_*_OFFLINE here: the workflow sets them for its jobs itself."""
        return offline_env(self.client_env, workdir / "network.log")

    def copy_to(self, workdir: Path) -> None:
        """``workdir`` holding the prefetch's results and Snakemake's record of its job, as where it ran."""
        shutil.copytree(self.results, workdir / "results" / "prefetch")
        shutil.copytree(self.results.parents[1] / ".snakemake" / "metadata", workdir / ".snakemake" / "metadata")


@pytest.fixture(scope="module")
def grid(tmp_path_factory, request) -> Prefetched:
    """The prefetched grid, made once per test run (the local run's worker and the SLURM test's share it):
    the workflow's prefetch rule runs while the mirror is up, then the mirror is stopped for good."""
    def build(work: Path) -> None:
        mirror = request.getfixturevalue("mirror")
        online = mirror.client_env(work / "hf")
        out = snakemake(work, paper_config(work / "paper_small.yaml"), "results/prefetch/manifest.json",
                        "--cores", "1", env=online)
        assert "localrule prefetch:" in out
        mirror.stop()
        assert refuses(mirror.port)
        (work / "client_env.json").write_text(json.dumps(online))

    work = built_once(tmp_path_factory, "mirror-grid", build)
    return Prefetched(work / "paper_small.yaml", work / "results" / "prefetch",
                      json.loads((work / "client_env.json").read_text()))


def check_results(grid: Prefetched, workdir: Path, models: dict, checkpoints: int) -> Path:
    """What every model of the run in ``workdir`` must have: tables, heatmaps and ``checkpoints``
    checkpoints of the prefetched commit; a report; and no process that reached for the network."""
    results, guard_log = workdir / "results", workdir / "network.log"
    commits = {i["repo"]: i["commit"] for i in json.loads((grid.results / "manifest.json").read_text())["items"]}
    for model, repo in models.items():
        assert (results / "tables" / model / "metrics.csv").is_file()
        assert list((results / "figures" / model).glob("heatmaps/**/*.png")), f"no heatmaps for {model}"
        manifests = list((results / "checkpoints" / model).glob("*/*/seed0/manifest.json"))
        assert len(manifests) == checkpoints
        assert {json.loads(m.read_text())["base"]["revision"] for m in manifests} == {commits[repo]}
    assert (results / "report.html").stat().st_size > 0
    assert not guard_log.exists(), f"a process reached for the network:\n{guard_log.read_text()}"
    guarded = Path(f"{guard_log}.loaded").read_text()
    for command in ("langprune prune", "langprune evaluate variant", "langprune calibrate"):
        assert command.split()[1] in guarded, f"the network guard was not loaded by {command}"
    return results


def report(workdir: Path, config: Path, env: dict) -> None:
    snakemake(workdir, config, "--report", str(workdir / "results" / "report.html"), "--cores", "1", env=env)


@pytest.fixture(scope="module")
def local_grid(grid, tmp_path_factory) -> Path:
    """The shrunk grid run offline through profiles/local, with its report, once per test run: this module
    checks it, and the SLURM test compares its results with it."""
    def build(workdir: Path) -> None:
        config, env = grid.config, grid.offline_env(workdir)
        grid.copy_to(workdir)
        snakemake(workdir, config, "--profile", str(PROFILES / "local"), "--cores", "2", env=env)
        report(workdir, config, env)

    return built_once(tmp_path_factory, "mirror-local-grid", build)


def test_the_paper_config_runs_offline_through_the_local_profile(grid, local_grid):
    """config/paper.yaml, shrunk by the size overlay, end to end offline: tables, heatmaps, the report."""
    # 2 methods x 2 calibration sets per model
    results = check_results(grid, local_grid, MODELS, checkpoints=4)
    rows = (results / "tables" / "aya23-8b" / "metrics.csv").read_text()
    for benchmark in ("perplexity", "arc", "belebele", "mmlu", "hellaswag", "mkqa"):
        assert f",{benchmark}," in rows


# The SLURM run: the same offline path on a cut of the grid (the local run above covers its breadth).
SLURM_CUT = {"models.aya23-8b": None, "pruning.methods": ["wanda"], "calibration.sets": {"de": ["de"]}}


@pytest.mark.usefixtures("slurm_cluster")
def test_the_paper_config_runs_offline_through_the_slurm_profile(grid, tmp_path, request):
    """A cut of the same grid through profiles/slurm on the test suite's one-node SLURM: every compute job
    goes through sbatch (pruning asking for the GPU) on a node without the mirror, ends with tables,
    heatmaps and the report, and gives the local run's checkpoints and metrics bit for bit."""
    config, env = paper_config(tmp_path / "paper_slurm.yaml", **SLURM_CUT), grid.offline_env(tmp_path)
    grid.copy_to(tmp_path)
    # The cut's config differs from the one the prefetch ran with, which would make Snakemake redo the
    # prefetch (params changed); the full grid's prefetch covers the cut, so only files count here.
    run = slurm.run_on_slurm(tmp_path, tmp_path / "sbatch", "--configfile", str(config), "--rerun-triggers",
                             "mtime", "input", environ=env, timeout=3600)
    assert run.jobs, failure_report(tmp_path, run.output)
    slurm.assert_every_job_went_through_sbatch(run)
    slurm.assert_gpu_rules_asked_for_a_gpu(run)
    assert {"prune", "report_tables", "analysis_drift"} <= set(run.jobs.values())
    report(tmp_path, config, env)
    model = "llama3-8b-instruct"
    check_results(grid, tmp_path, {model: MODELS[model]}, checkpoints=1)
    # asked for only now, so the SLURM run (mostly waiting on the scheduler) overlaps the local one
    slurm.assert_same_results(tmp_path, request.getfixturevalue("local_grid"),
                              tables=(f"results/tables/{model}/metrics.csv",))
