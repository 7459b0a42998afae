"""Quantized variants in the grid: `quantization.methods` lists each quantization method's settings,
spelled into variant names by variant.py from the registry's declarations, planned like pruned
variants (shards, seeds, evaluations, hidden-state analyses; no mask analyses), passed to
`langprune prune` as the registry's flags, and checked at parse time naming the key."""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import pytest

from helpers import workflow as wf
from langprune import registry, variant
from langprune.cli import main
from langprune.config import check_config, check_config_files
from langprune.errors import LangpruneError
from langprune.grid import Grid
from langprune.plan import PRUNE_COSTS, disk, gpu_hours, jobs_per_rule, pruned_weights
from langprune.ranges import Range

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
REAL_GPTQ = [REPO / "config" / "real.yaml", REPO / "config" / "real_gptq.yaml"]
# The reference run's toy (GPTQ 4-bit g128 on linears of 128 and 256 input columns), cut to two sets and one seed.
QUANTIZED_TOY = wf.with_changes(wf.reduced_default(), **{"calibration.sets": {"de": ["de"], "en": ["en"]},
                                                          "calibration.seeds": [0]})
QUANTIZER = registry.quantization_methods()[0]
KEY = "config key "


def checked(config: dict, **quantization) -> dict:
    """A checked copy of ``config`` with its `quantization` keys replaced."""
    config = copy.deepcopy(config)
    config["quantization"] = {**config.get("quantization", {}), **quantization}
    return check_config(config, SCHEMA, root=REPO)


def test_the_gemma_overlay_plans_two_settings_of_eight_calibration_sets_and_two_seeds():
    grid = Grid(check_config_files(REAL_GPTQ))
    quantized = grid.quantized_checkpoints("gemma3-270m")
    assert {c.structure for c in quantized} == {"w4g128-sym", "w3g128-sym"}
    assert len(quantized) == 2 * 8 * 2 and {c.seed for c in quantized} == {0, 1}
    assert {c.calib for c in quantized} == {"ar", "de", "en", "es", "ru", "sw", "zh", "all7"}
    assert grid.quantized_checkpoints("smollm2-135m") == []  # quantization.models: Gemma only
    first = quantized[0]
    assert first.path == "gptq_w4g128-sym_0/ar/seed0" and first.label == "gptq" and first.sparsity == 0
    assert first.labels == {"model": "gemma3-270m", "method": "gptq", "structure": "w4g128-sym", "sparsity": "0",
                            "calib": "ar", "seed": "0"}
    assert first.prune_flags == ["--gptq-bits", "4", "--gptq-group-size", "128", "--gptq-symmetric"]
    assert first.shard == grid.shard("gemma3-270m", "ar", 0) and first.owl_ratios is None
    # calibrated on the pruned variants' shards: no shard of its own
    pruned_shards = {c.shard for c in grid.pruned_checkpoints("gemma3-270m") if c.shard}
    assert {c.shard for c in quantized} <= pruned_shards
    # the workflow asks for a variant by its path's wildcards and gets the same checkpoint back
    parsed = variant.parse_variant_path(quantized[-1].path)
    assert grid.checkpoint("gemma3-270m", parsed["method"], parsed["structure"], parsed["sparsity"],
                           parsed["calib"], parsed["seed"]) == quantized[-1]
    # wildcard alternatives: pruned and quantized spellings
    assert grid.variant_method_labels == ["magnitude", "wanda", "sparsegpt", "gptq"]
    assert grid.structure_slugs == ["unstructured", "2of4", "w4g128-sym", "w3g128-sym"]
    assert grid.sparsity_labels == [0.5, variant.QUANTIZED_SPARSITY]
    evaluated = [e.checkpoint for e in grid.evaluations("gemma3-270m") if e.checkpoint and e.checkpoint.quantizes]
    assert len(evaluated) == len(quantized) * len(grid.benchmarks)


def test_hidden_state_analyses_include_quantized_checkpoints_and_mask_analyses_leave_them_out():
    grid = Grid(check_config_files(REAL_GPTQ))
    analysed = grid.analysis_checkpoints("gemma3-270m")
    masks = grid.mask_checkpoints("gemma3-270m")
    assert "gptq" in grid.analysis.methods  # default: pruning.methods and quantization.methods
    assert {c.method for c in analysed} == {"magnitude", "wanda", "sparsegpt", "gptq"}
    assert masks == [c for c in analysed if not c.quantizes] and all(registry.method(c.method).writes_masks
                                                                     for c in masks)
    assert [p for _, paths in grid.analysis_groups() for p in paths if p.startswith("gptq_")] == [
        c.path for c in grid.quantized_checkpoints("gemma3-270m")]


@pytest.mark.parametrize("settings,slug", [
    ({}, "w4g128"),
    ({"bits": 3, "symmetric": True}, "w3g128-sym"),
    ({"bits": 8, "group_size": 0}, "w8g0"),
    ({"bits": 2, "group_size": 64, "act_order": True, "static_groups": True}, "w2g64-act-static"),
    ({"symmetric": True, "act_order": True}, "w4g128-sym-act"),
])
def test_setting_slugs_are_spelled_from_the_registry_and_invert(settings, slug):
    spec = registry.method(QUANTIZER)
    assert variant.setting_slug(QUANTIZER, settings) == slug
    assert variant.setting_values(QUANTIZER, slug) == spec.bind(settings)
    path = variant.variant_path(QUANTIZER, slug, variant.QUANTIZED_SPARSITY, "de+en", 3)
    assert variant.parse_variant_path(path) == {"method": QUANTIZER, "structure": slug, "sparsity": "0",
                                                "calib": "de+en", "seed": "3"}


@pytest.mark.parametrize("slug", ["w4", "g128w4", "w4g128-act-sym", "w4g0128", "w4g128-", "unstructured"])
def test_a_slug_the_method_does_not_spell_is_an_error(slug):
    with pytest.raises(LangpruneError, match=f"'{slug}' is not a setting of {QUANTIZER} .*e.g. w4g128"):
        variant.setting_values(QUANTIZER, slug)


def test_an_untagged_quantized_checkpoint_is_labelled_by_its_setting():
    """A checkpoint quantized from the command line without --tag gets the grid's labels from its manifest."""
    manifest = {"method": QUANTIZER, "method_params": {"bits": 3, "group_size": 128, "symmetric": True,
                                                       "act_order": False, "static_groups": False},
                "seed": 1, "calibration": {"shard": {"languages": ["de"]}}, "allocation": {"name": "uniform"}}
    assert variant.checkpoint_labels(manifest) == {"method": QUANTIZER, "structure": "w3g128-sym", "sparsity": "0",
                                                   "seed": "1", "calib": "de"}


def test_a_quantization_method_needs_only_its_registry_entry(monkeypatch):
    """A second quantization method, registered with its own settings and spellings, is planned with its
    own flags and names; nothing else lists it."""
    spec = replace(registry.METHODS[QUANTIZER], name="rtn", function="nowhere:rtn", check_layers=None, params=(
        registry.Param("bits", "--rtn-bits", 8, "bits", range=Range(int, minimum=2, maximum=8), spelling="b"),
        registry.Param("zero", "--rtn-zero", False, "zero point", spelling="z")))
    monkeypatch.setattr(registry, "METHODS", {**registry.METHODS, "rtn": spec})
    grid = Grid(checked(QUANTIZED_TOY, methods={"rtn": [{"bits": 4, "zero": True}, {}]}))
    built = grid.quantized_checkpoints("toy")
    assert [c.path for c in built] == ["rtn_b4-z_0/de/seed0", "rtn_b4-z_0/en/seed0", "rtn_b8_0/de/seed0",
                                       "rtn_b8_0/en/seed0"]
    assert built[0].prune_flags == ["--rtn-bits", "4", "--rtn-zero"] and built[2].prune_flags == ["--rtn-bits", "8"]
    with pytest.raises(ValueError, match="needs its own spelling"):
        replace(spec, params=(registry.Param("bits", "--rtn-bits", 8, "bits", range=Range(int, minimum=2)),))


def test_plan_costs_quantization_as_sparsegpt_and_sizes_its_checkpoints(tmp_path):
    overlay = tmp_path / "gptq.yaml"
    overlay.write_text("quantization:\n  methods:\n    gptq: [{bits: 4, group_size: 128}, {bits: 3, group_size: 0}]\n")
    grid = Grid(check_config_files([REPO / "config" / "paper.yaml", overlay]))
    assert jobs_per_rule(grid)["prune"] == sum(len(grid.checkpoints(m)) for m in grid.models) == 456 + 2 * 114
    line = next(line for line in gpu_hours(grid) if line.what == "prune gptq")
    sparsegpt = next(line for line in gpu_hours(grid) if line.what == "prune sparsegpt")
    assert line.jobs == 228 and line.basis.startswith("sparsegpt's cost (the same Hessian pass; not its own)")
    assert (line.hours, line.bound) == pytest.approx((sparsegpt.hours, sparsegpt.bound))  # as many jobs
    assert (line.hours, line.bound) == pytest.approx((228 * PRUNE_COSTS["sparsegpt"].minutes / 60,
                                                      228 * PRUNE_COSTS["sparsegpt"].bound / 60))
    sizes = {line.what: line for line in disk(grid)}
    weights = pruned_weights(grid, "aya23-8b")
    assert sizes["gptq w4g128 checkpoints"].each == pytest.approx(weights * (4 + 36 / 128) / 8)
    assert sizes["gptq w3g0 checkpoints"].each == pytest.approx(weights * 3 / 8)
    assert sizes["gptq w4g128 checkpoints"].count == sizes["gptq w3g0 checkpoints"].count == 114


# ------------------------------------------------------------------------------------- bad input

BAD = [
    ("bits_outside_the_set", {"methods": {QUANTIZER: [{"bits": 5}]}},
     f"quantization.methods.{QUANTIZER}[0].bits:", "5 is not allowed; it must be one of 2, 3, 4, 8"),
    ("bits_a_float", {"methods": {QUANTIZER: [{"bits": 4.0}]}},
     f"quantization.methods.{QUANTIZER}[0].bits:", "4.0 is not allowed"),
    ("group_size_not_dividing_the_toy", {"methods": {QUANTIZER: [{"group_size": 48}]}},
     f"quantization.methods.{QUANTIZER}[0]:", "--gptq-group-size 48 does not divide the 128 input columns of "
                                              "the toy's q/k/v/gate/up_proj (toy.model.hidden)"),
    ("static_groups_without_groups", {"methods": {QUANTIZER: [{"group_size": 0, "static_groups": True}]}},
     f"quantization.methods.{QUANTIZER}[0]:", "--gptq-static-groups needs groups"),
    ("unknown_setting", {"methods": {QUANTIZER: [{"bitz": 4}]}},
     f"quantization.methods.{QUANTIZER}[0].bitz:", f"{QUANTIZER} has no setting bitz (it has: bits, group_size"),
    ("switch_given_a_string", {"methods": {QUANTIZER: [{"symmetric": "yes"}]}},
     f"quantization.methods.{QUANTIZER}[0].symmetric:", "'yes' is not allowed; it must be true or false"),
    ("same_setting_twice", {"methods": {QUANTIZER: [{"bits": 4}, {"bits": 4, "group_size": 128}]}},
     f"quantization.methods.{QUANTIZER}[1]:", f"the same setting as {QUANTIZER}[0] (w4g128, defaults filled in)"),
    ("a_pruning_method", {"methods": {"wanda": [{}]}},
     "quantization.methods.wanda:", f"the name 'wanda' is not one of ['{QUANTIZER}']"),
    ("no_settings", {"methods": {QUANTIZER: []}}, f"quantization.methods.{QUANTIZER}:", "should be non-empty"),
    ("unknown_model", {"models": ["gemma"]}, "quantization.models:", "gemma not a key of models (toy)"),
]


@pytest.mark.parametrize("quantization,start,fragment", [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_quantization_config_is_one_line_naming_the_key(quantization, start, fragment):
    with pytest.raises(LangpruneError) as error:
        checked(QUANTIZED_TOY, **quantization)
    message = str(error.value)
    assert message.startswith(KEY + start) and fragment in message and "\n" not in message, message


def test_a_group_size_the_toy_takes_and_act_order_with_static_groups_are_accepted():
    """Act-order with static groups is supported (groups stay runs of columns), and g64 divides 128 and 256."""
    grid = Grid(checked(QUANTIZED_TOY, methods={QUANTIZER: [{"group_size": 64, "act_order": True,
                                                             "static_groups": True}]}))
    assert [c.structure for c in grid.quantized_checkpoints("toy")] == ["w4g64-act-static"] * 2


def test_a_quantization_method_under_pruning_methods_says_where_it_goes():
    config = copy.deepcopy(QUANTIZED_TOY)
    config["pruning"]["methods"] = ["wanda", QUANTIZER]
    with pytest.raises(LangpruneError, match=rf"^{KEY}pruning.methods: {QUANTIZER} builds no checkpoint: {QUANTIZER} "
                                             r"is a quantization method .*list it under quantization.methods"):
        check_config(config, SCHEMA, root=REPO)


def test_analysing_only_a_quantization_method_leaves_the_mask_overlap_nothing_to_compare():
    config = copy.deepcopy(QUANTIZED_TOY)
    config["analysis"] = {**config["analysis"], "methods": [QUANTIZER]}
    with pytest.raises(LangpruneError, match=rf"^{KEY}analysis.calibrations: the mask-overlap analysis .*"
                                             r"a quantization method writes no masks"):
        check_config(config, SCHEMA, root=REPO)
    config["analysis"]["methods"] = ["wanda", QUANTIZER]
    check_config(config, SCHEMA, root=REPO)


@pytest.mark.workflow
def test_snakemake_stops_a_bad_setting_before_planning_any_job(tmp_path):
    config = copy.deepcopy(QUANTIZED_TOY)
    config["quantization"]["methods"][QUANTIZER][0]["bits"] = 5
    wf.make_workdir(tmp_path, config)
    proc = wf.snakemake(tmp_path, "--dry-run", "--cores", "1", check=False, timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Job stats" not in output
    assert f"{KEY}quantization.methods.{QUANTIZER}[0].bits: 5 is not allowed; it must be one of 2, 3, 4, 8" in output


def test_the_check_command_counts_the_quantization_settings(capsys):
    assert main(["config", "check", *map(str, REAL_GPTQ)]) == 0
    assert capsys.readouterr().out.strip().endswith(f"methods magnitude, wanda, sparsegpt, {QUANTIZER} x 2 setting(s))")
