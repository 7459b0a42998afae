"""Growing a config reruns only what is new: checked from Snakemake's dry-run
job list against a copy of the session's reference run (the reduced toy).

Adding a calibration language, a mix, a seed or a model must plan exactly the
new shards, pruning and evaluation jobs plus the aggregates (metrics table,
report, cross-checkpoint analyses); changing an evaluation setting must plan
evaluations and aggregates but no pruning. One case is executed for real to
show nothing computed before is rewritten (in the grid cut to its first seed and
its pruned variants, so only the new language's few jobs run).
"""

from __future__ import annotations

import pytest

from helpers import workflow as wf
from langprune.io import sidecar_path

pytestmark = pytest.mark.workflow

CONFIG = wf.reduced_default()
SEEDS = CONFIG["calibration"]["seeds"]
# The calibrated variants of the reference config (a pruning method and a quantization setting);
# magnitude needs no calibration and has one checkpoint per model.
CALIBRATED = ("wanda_unstructured_0.5", "gptq_w4g128-sym_0")
CKPT = "results/checkpoints/{model}/{variant}/{calib}/seed{seed}"
SHARD = "results/shards/toy/{calib}/seed{seed}.safetensors"
METRICS = "results/metrics/{model}/{variant}/{calib}/seed{seed}/{benchmark}.json"


def point_jobs(model="toy", calib="de", seed=0, shard=True, variants=CALIBRATED):
    """The per-grid-point jobs of a calibration set and seed: its shard, and each variant's
    pruning (or quantization) and perplexity and udhr_mc evaluations."""
    jobs = set()
    for variant in variants:
        where = dict(model=model, variant=variant, calib=calib, seed=seed)
        jobs |= {("prune", CKPT.format(**where)),
                 ("evaluate_perplexity", METRICS.format(**where, benchmark="perplexity")),
                 ("evaluate_tasks", METRICS.format(**where, benchmark="udhr_mc"))}
    if shard:
        jobs.add(("calibration_shard", SHARD.format(calib=calib, seed=seed)))
    return jobs


def every_seed(**where):
    return set().union(*(point_jobs(seed=seed, **where) for seed in SEEDS))


@pytest.fixture
def grown(reference_run, tmp_path):
    """A copy of the completed run whose config a test replaces."""
    return wf.copy_run(reference_run, tmp_path / "run")


def plan_after(workdir, *args, **changes):
    wf.write_config(workdir, wf.with_changes(CONFIG, **changes))
    return wf.planned_jobs(workdir, *args)


def assert_exactly_new(planned, workdir, expected_points):
    """The per-point jobs planned are exactly ``expected_points``, none of them
    has an output already; everything else planned is an aggregate."""
    points = {(rule, out) for rule, out in planned if not wf.is_aggregate(rule)}
    assert points == expected_points
    assert not [out for _, out in points if (workdir / out).exists()]
    assert {"gather_metrics", "all"} <= {rule for rule, _ in planned}


def test_unchanged_config_plans_nothing(grown):
    assert wf.planned_jobs(grown) == set()


def test_adding_a_calibration_language(grown):
    sets = {**CONFIG["calibration"]["sets"], "es": ["es"]}
    planned = plan_after(grown, **{"calibration.sets": sets})
    assert_exactly_new(planned, grown, every_seed(calib="es"))


def test_adding_a_mix(grown):
    sets = {**CONFIG["calibration"]["sets"], "en+es": ["en", "es"]}
    planned = plan_after(grown, **{"calibration.sets": sets})
    assert_exactly_new(planned, grown, every_seed(calib="en+es"))


def test_adding_a_seed(grown):
    new_seed = max(SEEDS) + 1
    planned = plan_after(grown, **{"calibration.seeds": [*SEEDS, new_seed]})
    assert_exactly_new(planned, grown, set().union(*(point_jobs(calib=calib, seed=new_seed)
                                                     for calib in CONFIG["calibration"]["sets"])))


def test_adding_a_model_reuses_its_tokenizers_shards(grown):
    models = {**CONFIG["models"], "toy2": dict(CONFIG["models"]["toy"])}
    planned = plan_after(grown, models=models)
    sets = CONFIG["calibration"]["sets"]
    expected = set().union(*(every_seed(model="toy2", calib=calib, shard=False) for calib in sets))
    expected |= point_jobs("toy2", "none", 0, shard=False, variants=["magnitude_unstructured_0.5"])
    expected |= {("evaluate_perplexity_dense", "results/metrics/toy2/dense/perplexity.json"),
                 ("evaluate_tasks_dense", "results/metrics/toy2/dense/udhr_mc.json")}
    if "analysis_hidden_dense" in {rule for rule, _ in planned}:  # the analysis stage probes each model
        expected.add(("analysis_hidden_dense", "results/analysis/toy2/hidden/dense.safetensors"))
    assert_exactly_new(planned, grown, expected)


@pytest.mark.parametrize("change", [
    {"evaluation.perplexity.max_tokens": 256},
    {"evaluation.perplexity.seqlen": 16},
])
def test_evaluation_setting_reruns_evaluations_not_pruning(grown, change):
    planned = plan_after(grown, **change)
    rules = wf.rules_of(planned)
    checkpoints = len(list(grown.glob("results/checkpoints/toy/*/*/seed*")))
    assert checkpoints == 1 + len(CALIBRATED) * len(CONFIG["calibration"]["sets"]) * len(SEEDS)  # + magnitude
    assert rules.get("evaluate_perplexity") == checkpoints and rules.get("evaluate_perplexity_dense") == 1
    assert not {"prune", "calibration_shard", "toy_model", "evaluate_tasks", "evaluate_tasks_dense"} & set(rules)


def test_mtime_trigger_ignores_a_changed_setting(grown):
    """`--rerun-triggers mtime` on purpose: keep results despite a setting change."""
    assert plan_after(grown, "--rerun-triggers", "mtime", **{"evaluation.perplexity.max_tokens": 256}) == set()


def test_executed_growth_rewrites_nothing_computed(grown):
    before = wf.output_mtimes(grown)
    sets = {**CONFIG["calibration"]["sets"], "es": ["es"]}
    wf.write_config(grown, wf.with_changes(CONFIG, **{"calibration.sets": sets, "calibration.seeds": SEEDS[:1],
                                                      "quantization": None}))
    run = wf.run_locally(grown, "results/tables/toy/metrics.csv")
    assert wf.job_counts(run.stdout + run.stderr) == {"calibration_shard": 1, "prune": 1, "evaluate_perplexity": 1,
                                                       "evaluate_tasks": 1, "gather_metrics": 1, "total": 5}
    after = wf.output_mtimes(grown)
    rewritten = {path for path, mtime in before.items() if after.get(path) != mtime}
    table = "results/tables/toy/metrics.csv"
    assert rewritten == {table, str(sidecar_path(table))}  # the table and the output guard's record of it
    new = set(after) - set(before)
    assert {SHARD.format(calib="es", seed=0), METRICS.format(model="toy", variant=CALIBRATED[0], calib="es", seed=0,
                                                             benchmark="perplexity")} <= new
    assert wf.planned_jobs(grown, "results/tables/toy/metrics.csv") == set()
