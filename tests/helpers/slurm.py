"""Running the workflow on the test SLURM (tests/slurm/setup_slurm.sh, started once per test run by
conftest.py's ``slurm_cluster``) and the checks every SLURM run must pass: each job went through
sbatch once, GPU rules asked SLURM for a GPU and nothing else did, and the results equal a local
run's. A test that runs a workflow through ``--profile profiles/slurm`` calls ``run_on_slurm``
and the ``assert_*`` functions."""

from __future__ import annotations

import csv
import os
import re
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

from helpers import workflow as wf

SETUP = wf.REPO / "tests" / "slurm" / "setup_slurm.sh"
STOP = wf.REPO / "tests" / "slurm" / "stop_slurm.sh"
PROFILE = wf.REPO / "profiles" / "slurm"
# Jobs the test cluster's one fake GPU is asked for; the toy still computes on
# the CPU (models.toy.gpu is 0 so the rules pass --device cpu).
GPU_RULES = ("prune",)
# Rules declared `localrule: True` because they need the internet, which compute nodes
# often lack (fetch_udhr runs when the repository has no cached UDHR archive, as in a
# fresh clone); plus the target rule. Every other job must go through sbatch.
LOCAL_RULES = {"all", "fetch_udhr", "analysis_probe_text", "prefetch"}


@dataclass
class SlurmRun:
    """What a run through the SLURM profile did: Snakemake's output, the jobs it planned to
    submit, the SLURM job id -> rule of each submission, and the arguments of each sbatch call."""

    output: str
    planned: set[tuple[str, str]]
    jobs: dict[str, str]
    sbatch_calls: list[str]


def sbatch_recorder(bin_dir: Path, record: Path) -> Path:
    """A `sbatch` first on PATH that writes its arguments to a new file in
    ``record`` and hands over to the real one: proof of what was submitted."""
    real = shutil.which("sbatch")
    bin_dir.mkdir(parents=True, exist_ok=True)
    record.mkdir(parents=True, exist_ok=True)
    wrapper = bin_dir / "sbatch"
    wrapper.write_text(f'#!/bin/sh\nprintf "%s" "$*" > "$(mktemp "{record}/call.XXXXXX")"\nexec "{real}" "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return bin_dir


def submitted_jobs(snakemake_output: str) -> dict[str, str]:
    """SLURM job id -> Snakemake rule, from the submission lines and the
    per-rule log paths the plugin names (logs/slurm/rule_NAME/...)."""
    found = re.findall(r"has been submitted with SLURM jobid (\d+) \(log: \S*?/rule_(\w+)/", snakemake_output)
    return {jobid: rule for jobid, rule in found}


def gpu_request(jobid: str) -> str:
    """What scontrol says job ``jobid`` asked for (its TresPerJob/TresPerNode)."""
    shown = subprocess.run(["scontrol", "show", "job", "-o", jobid], capture_output=True, text=True).stdout
    return " ".join(re.findall(r"Tres(?:PerJob|PerNode)=(\S+)", shown))


def run_on_slurm(workdir: Path, scratch: Path, *args: str, gpu_rules=GPU_RULES, environ: dict | None = None,
                 timeout: int = 900) -> SlurmRun:
    """Run the workflow in ``workdir`` (``args``: targets, --configfile, ...) through profiles/slurm in
    ``environ`` (default: ``wf.snakemake_env()``) with a recording sbatch (in ``scratch``), polling fast
    (the profile's 40 s default suits clusters), each of ``gpu_rules`` asking for one of the cluster's GPUs."""
    environ = wf.snakemake_env() if environ is None else environ
    planned = {job for job in wf.planned_jobs(workdir, *args, environ=environ) if job[0] not in LOCAL_RULES}
    record = scratch / "sbatch-calls"
    shim = sbatch_recorder(scratch / "bin", record)
    run = wf.snakemake(
        workdir, "--profile", str(PROFILE), "--slurm-init-seconds-before-status-checks", "2",
        "--jobs", "4", "--retries", "0", "--set-resources", *[f"{rule}:gpu=1" for rule in gpu_rules], *args,
        environ=environ, env={"PATH": f"{shim}{os.pathsep}{environ.get('PATH', '')}"}, timeout=timeout,
    )
    output = run.stdout + run.stderr
    return SlurmRun(output, planned, submitted_jobs(output), [call.read_text() for call in record.iterdir()])


def assert_every_job_went_through_sbatch(run: SlurmRun) -> None:
    """Each planned job was submitted once; only the local rules ran on the submit host."""
    assert len(run.jobs) == len(run.planned) == len(run.sbatch_calls), (sorted(run.planned), run.jobs,
                                                                        run.sbatch_calls)
    assert sorted(run.jobs.values()) == sorted(rule for rule, _ in run.planned)
    assert set(re.findall(r"localrule (\w+):", run.output)) <= LOCAL_RULES


def assert_gpu_rules_asked_for_a_gpu(run: SlurmRun, gpu_rules=GPU_RULES) -> None:
    """Jobs of ``gpu_rules`` asked SLURM for a GPU, and nothing else did."""
    for jobid, rule in run.jobs.items():
        asked = gpu_request(jobid)
        if rule in gpu_rules:
            assert re.search(r"gpu[:=]1", asked), f"{rule} job {jobid} asked for no GPU: {asked!r}"
        else:
            assert "gpu" not in asked, f"{rule} job {jobid} asked for a GPU: {asked!r}"
    assert all("--gpus=1" in call for call in run.sbatch_calls if any(f"rule_{r}" in call for r in gpu_rules))


def masks_digests(workdir: Path) -> dict[str, str]:
    """SHA-256 of every checkpoint's masks, by checkpoint ({model}/{variant}/{calib}/seed{seed}).

    An explicit pattern, not rglob: a run with --cache leaves checkpoints as symlinks into
    the cache, which rglob does not descend into.
    """
    from langprune.io import sha256_file

    root = workdir / "results" / "checkpoints"
    found = sorted(root.glob("*/*/*/*/masks.safetensors"))
    return {str(p.parent.relative_to(root)): sha256_file(p) for p in found}


def metrics_rows(path: Path) -> list[dict]:
    """The tidy metrics table without `checkpoint_hash`: a checkpoint's
    manifest records its own pruning time, so equal masks hash differently."""
    with open(path, newline="") as stream:
        return [{k: v for k, v in row.items() if k != "checkpoint_hash"} for row in csv.DictReader(stream)]


def assert_same_results(run_dir: Path, local_dir: Path, tables: tuple[str, ...]) -> None:
    """Every checkpoint of ``run_dir`` has the masks, bit for bit, and every row of its metrics
    tables the values, of the same checkpoint and row in ``local_dir`` (which may hold a larger
    grid of the same settings)."""
    made, local = masks_digests(run_dir), masks_digests(local_dir)
    assert made and {name: local.get(name) for name in made} == made
    for table in tables:
        rows = metrics_rows(run_dir / table)
        labels = [key for key in rows[0] if key != "value"] if rows else []
        by_label = {tuple(row[k] for k in labels): row for row in metrics_rows(local_dir / table)}
        assert rows and [by_label.get(tuple(row[k] for k in labels)) for row in rows] == rows
