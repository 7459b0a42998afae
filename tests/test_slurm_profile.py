"""The SLURM profile against a real SLURM: a single-node cluster with one GPU
gres (tests/slurm/setup_slurm.sh) runs a reduced embedded default through
`--profile profiles/slurm`. Every job must go through sbatch, pruning jobs must
ask for a GPU, and the results must equal a local run's.

Needs root (apt-get, daemons). It is skipped only where SLURM cannot be
installed at all; with LANGPRUNE_REQUIRE_SLURM=1 (CI) that is a failure.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import unavailable
from slurm import workflow_runs as wf

SETUP = wf.REPO / "tests" / "slurm" / "setup_slurm.sh"
STOP = wf.REPO / "tests" / "slurm" / "stop_slurm.sh"
PROFILE = wf.REPO / "profiles" / "slurm"
# Jobs the test cluster's one fake GPU is asked for; the toy still computes on
# the CPU (models.toy.gpu is 0 so the rules pass --device cpu).
GPU_RULES = ("prune",)
# Rules declared `localrule: True` because they need the internet, which compute nodes
# often lack (fetch_udhr runs when the repository has no cached UDHR archive, as in a
# fresh clone); plus the target rule. Every other job must go through sbatch.
LOCAL_RULES = {"all", "fetch_udhr", "analysis_probe_text"}


def cannot_have_slurm(reason: str):
    """Skip, unless the caller (CI) insists on a real SLURM."""
    unavailable(reason, "slurm")


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    """Start munged, slurmctld and slurmd; stop each by its PID afterwards."""
    if os.geteuid() != 0:
        cannot_have_slurm("the test SLURM needs root (apt-get, daemons)")
    if not shutil.which("slurmctld") and not shutil.which("apt-get"):
        cannot_have_slurm("SLURM is not installed and there is no apt-get")
    state = tmp_path_factory.mktemp("slurm-state")
    setup = subprocess.run(["bash", str(SETUP), str(state)], capture_output=True, text=True, timeout=600)
    if setup.returncode != 0:
        subprocess.run(["bash", str(STOP), str(state)], capture_output=True)
        logs = "".join(p.read_text(errors="replace")[-2000:] for p in (state / "log").glob("*.log"))
        if not shutil.which("slurmctld"):
            cannot_have_slurm(f"installing slurm-wlm failed:\n{setup.stderr[-2000:]}")
        pytest.fail(f"setup_slurm.sh failed:\n{setup.stdout}\n{setup.stderr}\n{logs}")
    yield state
    stopped = subprocess.run(["bash", str(STOP), str(state)], capture_output=True, text=True)
    assert stopped.returncode == 0, stopped.stderr
    for daemon in ("munged", "slurmctld", "slurmd"):
        assert not (state / f"{daemon}.pid").exists(), f"{daemon} was not stopped"


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
    import csv

    with open(path, newline="") as stream:
        return [{k: v for k, v in row.items() if k != "checkpoint_hash"} for row in csv.DictReader(stream)]


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    """The same reduced default run locally (shared with the rerun tests)."""
    return wf.reference_run(tmp_path_factory.getbasetemp())


def test_reduced_default_through_slurm_profile(slurm_cluster, local_run, tmp_path):
    workdir = wf.make_workdir(tmp_path / "cluster", wf.reduced_default())
    planned = {job for job in wf.planned_jobs(workdir) if job[0] not in LOCAL_RULES}
    record = tmp_path / "sbatch-calls"
    shim = sbatch_recorder(tmp_path / "bin", record)
    run = wf.snakemake(
        workdir, "--profile", str(PROFILE),
        # fast polling for a test; the profile's 40 s default suits clusters
        "--slurm-init-seconds-before-status-checks", "2",
        "--jobs", "4", "--retries", "0",
        "--set-resources", *[f"{rule}:gpu=1" for rule in GPU_RULES],
        env={"PATH": f"{shim}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"},
        timeout=900,
    )
    output = run.stdout + run.stderr

    # every job went through sbatch, once
    jobs = submitted_jobs(output)
    sbatch_calls = [call.read_text() for call in record.iterdir()]
    assert len(jobs) == len(planned) == len(sbatch_calls), (sorted(planned), jobs, sbatch_calls)
    assert sorted(jobs.values()) == sorted(rule for rule, _ in planned)
    assert set(re.findall(r"localrule (\w+):", output)) <= LOCAL_RULES

    # pruning jobs asked SLURM for a GPU, and nothing else did
    for jobid, rule in jobs.items():
        asked = gpu_request(jobid)
        if rule in GPU_RULES:
            assert re.search(r"gpu[:=]1", asked), f"{rule} job {jobid} asked for no GPU: {asked!r}"
        else:
            assert "gpu" not in asked, f"{rule} job {jobid} asked for a GPU: {asked!r}"
    assert all("--gpus=1" in call for call in sbatch_calls if "rule_prune" in call)

    # same results as the local run: masks bit for bit, metrics value for value
    assert masks_digests(workdir) == masks_digests(local_run) != {}
    table = Path("results/tables/toy/metrics.csv")
    assert metrics_rows(workdir / table) == metrics_rows(local_run / table) != []


def load_profile(env: dict) -> dict:
    """The profile as Snakemake reads it (YTE-templated YAML) under ``env``."""
    import yte

    saved = dict(os.environ)
    try:
        os.environ.clear()
        os.environ.update(env)
        with open(PROFILE / "config.yaml") as stream:
            return yte.process_yaml(stream, require_use_yte=True)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_profile_takes_account_and_partitions_from_the_environment():
    profile = load_profile({"LANGPRUNE_SLURM_ACCOUNT": "proj42", "LANGPRUNE_SLURM_PARTITION": "cpu",
                            "LANGPRUNE_SLURM_GPU_PARTITION": "a100", "LANGPRUNE_SLURM_JOBS": "7"})
    assert profile["default-resources"]["slurm_account"] == "'proj42'"
    assert profile["default-resources"]["slurm_partition"] == "'cpu'"
    assert profile["jobs"] == 7
    gpu_rules = profile["set-resources"]
    assert gpu_rules and all(r == {"slurm_partition": "'a100'"} for r in gpu_rules.values())
    assert profile["slurm-status-command"] == "squeue" and profile["keep-going"] and profile["retries"] >= 1


def test_profile_without_site_settings_leaves_them_to_slurm():
    profile = load_profile({})
    assert "slurm_account" not in profile["default-resources"]
    assert "slurm_partition" not in profile["default-resources"]
    assert "set-resources" not in profile


def test_local_profile_runs_one_gpu_job_at_a_time(tmp_path):
    local = wf.REPO / "profiles" / "local"
    assert yaml.safe_load((local / "config.yaml").read_text())["resources"] == {"gpu": 1}
    workdir = wf.make_workdir(tmp_path, wf.reduced_default())
    run = wf.snakemake(workdir, "--profile", str(local), "--dry-run")
    assert "Using profile" in run.stdout + run.stderr and "rule prune:" in run.stdout


def test_profile_names_every_gpu_rule_of_the_workflow(tmp_path):
    """A rule that asks for a GPU but is missing from the profile would be sent
    to the CPU partition."""
    named = set(load_profile({"LANGPRUNE_SLURM_GPU_PARTITION": "gpu"})["set-resources"])
    workdir = wf.make_workdir(tmp_path, wf.reduced_default())
    listing = wf.snakemake(workdir, "--dry-run", "--cores", "1").stdout
    asking = set(re.findall(r"^(?:local)?rule (\w+):\n(?:    .*\n)*?    resources: [^\n]*\bgpu=", listing, flags=re.M))
    assert {"prune", "evaluate_perplexity", "evaluate_perplexity_dense"} <= asking  # the reduced toy runs no tasks
    assert asking <= named, f"GPU rules missing from profiles/slurm: {sorted(asking - named)}"
