"""The SLURM profile against a real SLURM: a single-node cluster with two GPU
gres (tests/slurm/setup_slurm.sh, conftest.py's slurm_cluster) runs a cut of the
reduced toy through `--profile profiles/slurm`. Every job must go through sbatch,
pruning jobs must ask for a GPU, and the results must equal the session's local
reference run (the same toy with more variants).

Needs root (apt-get, daemons). It is skipped only where SLURM cannot be
installed at all; with LANGPRUNE_REQUIRE_SLURM=1 (CI) that is a failure.
"""

from __future__ import annotations

import os
import re

import pytest
import yaml

from helpers import slurm
from helpers import workflow as wf

# The reference run's toy, cut to two Wanda checkpoints evaluated on perplexity: every kind of job
# (toy data, shard, prune, evaluation, tables, analysis, report) once or twice, in about twenty jobs.
# Quantized variants are pruning jobs of another method to the scheduler, so the cut leaves them out.
SLURM_CUT = {"calibration.seeds": [0], "calibration.sets": {"de": ["de"], "en": ["en"]}, "pruning.methods": ["wanda"],
             "quantization": None, "evaluation.tasks": {}, "evaluation.multiple_choice": None}


def test_reduced_toy_through_slurm_profile(slurm_cluster, tmp_path, request):
    workdir = wf.make_workdir(tmp_path / "cluster", wf.with_changes(wf.reduced_default(), **SLURM_CUT))
    run = slurm.run_on_slurm(workdir, tmp_path)
    slurm.assert_every_job_went_through_sbatch(run)
    assert {"prune", "evaluate_perplexity", "report_tables", "analysis_masks"} <= set(run.jobs.values())
    slurm.assert_gpu_rules_asked_for_a_gpu(run)
    assert len(slurm.masks_digests(workdir)) == 2
    # asked for only now, so the SLURM run (mostly waiting on the scheduler) overlaps the local one
    slurm.assert_same_results(workdir, request.getfixturevalue("reference_run"))


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
