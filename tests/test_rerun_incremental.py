"""Growing a config reruns only what is new: checked from Snakemake's dry-run
job list against a completed run of the reduced embedded default.

Adding a calibration language, a mix, a seed or a model must plan exactly the
new shards, pruning and evaluation jobs plus the aggregates (metrics table,
report, cross-checkpoint analyses); changing an evaluation setting must plan
evaluations and aggregates but no pruning. One case is executed for real to
show nothing computed before is rewritten.
"""

from __future__ import annotations

import pytest

from slurm import workflow_runs as wf

CKPT = "results/checkpoints/{model}/wanda_unstructured_0.5/{calib}/seed{seed}"
SHARD = "results/shards/toy/{calib}/seed{seed}.safetensors"
METRICS = "results/metrics/{model}/wanda_unstructured_0.5/{calib}/seed{seed}/perplexity.json"


def point_jobs(model="toy", calib="de", seed=0, shard=True):
    """The per-grid-point jobs of one pruned variant: its shard, its pruning,
    its perplexity evaluation."""
    jobs = {("prune", CKPT.format(model=model, calib=calib, seed=seed)),
            ("evaluate_perplexity", METRICS.format(model=model, calib=calib, seed=seed))}
    if shard:
        jobs.add(("calibration_shard", SHARD.format(calib=calib, seed=seed)))
    return jobs


@pytest.fixture(scope="module")
def completed(tmp_path_factory):
    return wf.reference_run(tmp_path_factory.getbasetemp())


@pytest.fixture
def grown(completed, tmp_path):
    """A copy of the completed run whose config a test replaces."""
    return wf.copy_run(completed, tmp_path / "run")


def plan_after(workdir, *args, **changes):
    wf.write_config(workdir, wf.with_changes(wf.reduced_default(), **changes))
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
    sets = {"de": ["de"], "en": ["en"], "es": ["es"]}
    planned = plan_after(grown, **{"calibration.sets": sets})
    assert_exactly_new(planned, grown, point_jobs(calib="es"))


def test_adding_a_mix(grown):
    sets = {"de": ["de"], "en": ["en"], "de+en": ["de", "en"]}
    planned = plan_after(grown, **{"calibration.sets": sets})
    assert_exactly_new(planned, grown, point_jobs(calib="de+en"))


def test_adding_a_seed(grown):
    planned = plan_after(grown, **{"calibration.seeds": [0, 1]})
    assert_exactly_new(planned, grown, point_jobs(calib="de", seed=1) | point_jobs(calib="en", seed=1))


def test_adding_a_model_reuses_its_tokenizers_shards(grown):
    config = wf.reduced_default()
    models = {**config["models"], "toy2": dict(config["models"]["toy"])}
    planned = plan_after(grown, models=models)
    expected = (point_jobs("toy2", "de", shard=False) | point_jobs("toy2", "en", shard=False)
                | {("evaluate_perplexity_dense", "results/metrics/toy2/dense/perplexity.json")})
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
    assert rules.get("evaluate_perplexity") == 2 and rules.get("evaluate_perplexity_dense") == 1
    assert not {"prune", "calibration_shard", "toy_model"} & set(rules)


def test_mtime_trigger_ignores_a_changed_setting(grown):
    """`--rerun-triggers mtime` on purpose: keep results despite a setting change."""
    assert plan_after(grown, "--rerun-triggers", "mtime", **{"evaluation.perplexity.max_tokens": 256}) == set()


def test_executed_growth_rewrites_nothing_computed(grown):
    before = wf.output_mtimes(grown)
    sets = {"de": ["de"], "en": ["en"], "es": ["es"]}
    wf.write_config(grown, wf.with_changes(wf.reduced_default(), **{"calibration.sets": sets}))
    wf.run_locally(grown, "results/tables/toy/metrics.csv")
    after = wf.output_mtimes(grown)
    rewritten = {path for path, mtime in before.items() if after.get(path) != mtime}
    assert rewritten == {"results/tables/toy/metrics.csv"}
    new = set(after) - set(before)
    assert {SHARD.format(calib="es", seed=0), METRICS.format(model="toy", calib="es", seed=0)} <= new
    assert wf.planned_jobs(grown, "results/tables/toy/metrics.csv") == set()
