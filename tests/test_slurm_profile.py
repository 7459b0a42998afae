"""The SLURM profile's settings: what it asks SLURM for under the site's environment variables, and
that it names every rule that asks for a GPU. The workflow runs through it on a real one-node SLURM in
test_mirror_grid.py (the paper config, offline compute nodes, results equal to a local run's).
"""

from __future__ import annotations

import os
import re

import pytest
import yaml

from helpers import slurm
from helpers import workflow as wf


def load_profile(env: dict) -> dict:
    """The profile as Snakemake reads it (YTE-templated YAML) under ``env``."""
    import yte

    saved = dict(os.environ)
    try:
        os.environ.clear()
        os.environ.update(env)
        with open(slurm.PROFILE / "config.yaml") as stream:
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


@pytest.mark.workflow
def test_local_profile_and_the_slurm_profile_know_every_gpu_rule(tmp_path):
    """The local profile runs one GPU job at a time; a rule that asks for a GPU but is missing
    from the SLURM profile would be sent to the CPU partition. One dry run of the reduced toy
    under the local profile shows both."""
    local = wf.REPO / "profiles" / "local"
    assert yaml.safe_load((local / "config.yaml").read_text())["resources"] == {"gpu": 1}
    named = set(load_profile({"LANGPRUNE_SLURM_GPU_PARTITION": "gpu"})["set-resources"])
    workdir = wf.make_workdir(tmp_path, wf.reduced_default())
    run = wf.snakemake(workdir, "--profile", str(local), "--dry-run")
    assert "Using profile" in run.stdout + run.stderr and "rule prune:" in run.stdout
    asking = set(re.findall(r"^(?:local)?rule (\w+):\n(?:    .*\n)*?    resources: [^\n]*\bgpu=", run.stdout,
                            flags=re.M))
    assert {"prune", "evaluate_perplexity", "evaluate_perplexity_dense", "evaluate_tasks", "evaluate_tasks_dense",
            "analysis_hidden_dense"} <= asking
    assert asking <= named, f"GPU rules missing from profiles/slurm: {sorted(asking - named)}"
