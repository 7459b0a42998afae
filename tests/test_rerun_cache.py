"""Reuse across config files through Snakemake's between-workflow cache:
shards, checkpoints and dense evaluations made under one config are taken from
the cache by another config (in another working directory) that asks for the
same recipe, and recomputed when the recipe differs. See docs/reruns.md.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from slurm import workflow_runs as wf

CACHED_RULES = ("calibration_shard", "prune", "evaluate_perplexity_dense", "evaluate_tasks_dense")
SHARD = "results/shards/toy/{calib}/seed{seed}.safetensors"
CKPT = "results/checkpoints/toy/wanda_unstructured_0.5/{calib}/seed{seed}"
DENSE = "results/metrics/toy/dense/perplexity.json"


def rule_bodies() -> dict[str, str]:
    """Rule name -> the text of its definition, from workflow/rules/*.smk; a `use rule ... with:`
    twin gets its base rule's text (shell included) followed by its own."""
    bodies, twins = {}, {}
    for smk in (wf.REPO / "workflow" / "rules").glob("*.smk"):
        text = smk.read_text()
        for rule, body in re.findall(r"^[ \t]*rule (\w+):\n((?:[ \t]+.*\n|\n)*)", text, flags=re.M):
            bodies[rule] = body
        for base, rule, body in re.findall(r"^[ \t]*use rule (\w+) as (\w+) with:\n((?:[ \t]+.*\n|\n)*)", text,
                                           flags=re.M):
            twins[rule] = (base, body)
    return {**bodies, **{rule: body + bodies[base] for rule, (base, body) in twins.items()}}


def rules_marked_cacheable() -> set[str]:
    """Rules whose definition carries a `cache:` directive."""
    return {rule for rule, body in rule_bodies().items() if re.search(r"^\s+cache:", body, flags=re.M)}


def test_shared_artifacts_are_cached_and_keyed_by_params():
    """The cache key covers a rule's params and unformatted shell command, not
    its wildcards: a cached rule whose command reads a wildcard would hand one
    seed's (or method's) output to another."""
    assert rules_marked_cacheable() == set(CACHED_RULES)
    bodies = rule_bodies()
    for rule in CACHED_RULES:
        shell = bodies[rule].split("shell:", 1)[1]
        assert "{wildcards." not in shell, f"rule {rule} reads a wildcard in its shell command"


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    base = tmp_path_factory.getbasetemp()
    wf.reference_run(base)
    return base


def cache_plan(workdir: Path, cache: Path) -> dict[str, set[str]]:
    """Outputs a `--cache` dry run will obtain from / write to the cache."""
    result = wf.snakemake(workdir, "--dry-run", "--cache", "--cores", "1",
                          env={"SNAKEMAKE_OUTPUT_CACHE": str(cache)})
    plan = {"obtained from": set(), "written to": set()}
    for out, how in re.findall(r"Output file (\S+) will be (obtained from|written to) global",
                               result.stdout + result.stderr):
        plan[how].add(out)
    return plan


def test_second_config_takes_shared_artifacts_from_the_cache(scratch, tmp_path):
    grown = wf.with_changes(wf.reduced_default(), **{"calibration.seeds": [0, 1]})
    workdir = wf.make_workdir(tmp_path / "other-config", grown)
    plan = cache_plan(workdir, scratch / "cache")
    shared = ({SHARD.format(calib=c, seed=0) for c in ("de", "en")}
              | {CKPT.format(calib=c, seed=0) for c in ("de", "en")})
    assert plan["obtained from"] == shared | {DENSE}
    assert plan["written to"] == ({SHARD.format(calib=c, seed=1) for c in ("de", "en")}
                                  | {CKPT.format(calib=c, seed=1) for c in ("de", "en")})


def test_a_different_recipe_is_not_taken_from_the_cache(scratch, tmp_path):
    changed = wf.with_changes(wf.reduced_default(), **{"evaluation.perplexity.max_tokens": 256,
                                                       "calibration.nsamples": 2})
    plan = cache_plan(wf.make_workdir(tmp_path / "changed", changed), scratch / "cache")
    assert plan["obtained from"] == set()
    assert DENSE in plan["written to"] and SHARD.format(calib="de", seed=0) in plan["written to"]


def test_cached_checkpoint_is_fetched_not_recomputed(scratch, tmp_path):
    reference = wf.reference_run(scratch)
    workdir = wf.make_workdir(tmp_path / "fetch", wf.reduced_default())
    shutil.copytree(reference / "results" / "toy", workdir / "results" / "toy", symlinks=True)
    target = CKPT.format(calib="de", seed=0)
    run = wf.snakemake(workdir, "--cache", "--cores", "1", target,
                       env={"SNAKEMAKE_OUTPUT_CACHE": str(scratch / "cache")})
    masks = workdir / target / "masks.safetensors"
    assert masks.is_symlink() and Path(masks.resolve()).is_relative_to((scratch / "cache").resolve())
    # a computed output is moved into the cache; a fetched one only linked
    assert "Moving output file" not in run.stdout + run.stderr, "shard or checkpoint was recomputed"
    assert masks.read_bytes() == (reference / target / "masks.safetensors").read_bytes()
