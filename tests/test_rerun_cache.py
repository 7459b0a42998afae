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

from helpers import workflow as wf

CACHED_RULES = ("calibration_shard", "prune", "evaluate_perplexity_dense", "evaluate_tasks_dense")
CONFIG = wf.reduced_default()
SETS, SEEDS = list(CONFIG["calibration"]["sets"]), CONFIG["calibration"]["seeds"]
SHARD = "results/shards/toy/{calib}/seed{seed}.safetensors"
CKPT = "results/checkpoints/toy/wanda_unstructured_0.5/{calib}/seed{seed}"
GPTQ = "results/checkpoints/toy/gptq_w4g128-sym_0/{calib}/seed{seed}"
MAGNITUDE = "results/checkpoints/toy/magnitude_unstructured_0.5/none/seed0"  # calibration-free
DENSE = "results/metrics/toy/dense/perplexity.json"
DENSE_TASKS = "results/metrics/toy/dense/udhr_mc.json"


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


def cache_plan(workdir: Path, cache: Path) -> dict[str, set[str]]:
    """Outputs a `--cache` dry run will obtain from / write to the cache."""
    result = wf.snakemake(workdir, "--dry-run", "--cache", "--cores", "1",
                          env={"SNAKEMAKE_OUTPUT_CACHE": str(cache)})
    plan = {"obtained from": set(), "written to": set()}
    for out, how in re.findall(r"Output file (\S+) will be (obtained from|written to) global",
                               result.stdout + result.stderr):
        plan[how].add(out)
    return plan


def points(*templates: str, seeds=SEEDS) -> set[str]:
    return {template.format(calib=calib, seed=seed) for template in templates for calib in SETS for seed in seeds}


@pytest.mark.workflow
def test_second_config_takes_shared_artifacts_from_the_cache(reference_run, output_cache, tmp_path):
    new_seed = max(SEEDS) + 1
    grown = wf.with_changes(CONFIG, **{"calibration.seeds": [*SEEDS, new_seed]})
    workdir = wf.make_workdir(tmp_path / "other-config", grown)
    plan = cache_plan(workdir, output_cache)
    assert plan["obtained from"] == points(SHARD, CKPT, GPTQ) | {MAGNITUDE, DENSE, DENSE_TASKS}
    assert plan["written to"] == points(SHARD, CKPT, GPTQ, seeds=[new_seed])


@pytest.mark.workflow
def test_a_different_recipe_is_not_taken_from_the_cache(reference_run, output_cache, tmp_path):
    """New calibration and perplexity settings: every shard, calibrated checkpoint and dense
    perplexity is made anew; what they do not shape (the calibration-free checkpoint, the dense
    udhr_mc evaluation) is still taken from the cache."""
    changed = wf.with_changes(CONFIG, **{"evaluation.perplexity.max_tokens": 256, "calibration.nsamples": 2})
    plan = cache_plan(wf.make_workdir(tmp_path / "changed", changed), output_cache)
    assert plan["obtained from"] == {MAGNITUDE, DENSE_TASKS}
    assert plan["written to"] == points(SHARD, CKPT, GPTQ) | {DENSE}


@pytest.mark.workflow
def test_cached_checkpoint_is_fetched_not_recomputed(reference_run, output_cache, tmp_path):
    workdir = wf.make_workdir(tmp_path / "fetch", CONFIG)
    shutil.copytree(reference_run / "results" / "toy", workdir / "results" / "toy", symlinks=True)
    target = CKPT.format(calib="de", seed=0)
    run = wf.snakemake(workdir, "--cache", "--cores", "1", target, env={"SNAKEMAKE_OUTPUT_CACHE": str(output_cache)})
    masks = workdir / target / "masks.safetensors"
    assert masks.is_symlink() and Path(masks.resolve()).is_relative_to(output_cache.resolve())
    # a computed output is moved into the cache; a fetched one only linked
    assert "Moving output file" not in run.stdout + run.stderr, "shard or checkpoint was recomputed"
    assert masks.read_bytes() == (reference_run / target / "masks.safetensors").read_bytes()
