"""The experiment grid (langprune.grid) read directly: what each config builds, from the registry's
traits, with its paths; and a method added to the registry alone reaches the grid, the config
check and the command line."""

from __future__ import annotations

import copy
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from langprune import registry, variant
from langprune.config import check_config, check_config_files
from langprune.errors import LangpruneError
from langprune.grid import Grid

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
PAPER = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
TOY = yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def grid_of(config: dict, **pruning) -> Grid:
    """The grid of a checked copy of ``config`` with ``pruning`` keys replaced."""
    config = copy.deepcopy(config)
    config["pruning"].update(pruning)
    return Grid(check_config(config, SCHEMA, root=REPO))


def test_paper_grid_counts_and_paths():
    grid = grid_of(PAPER)
    checkpoints = grid.checkpoints("aya23-8b")
    assert len(checkpoints) == 2 * 2 * 19 * 3  # methods x structures x calibration sets x seeds
    assert len(grid.shards()) == 2 * 19 * 3  # one tokenizer per model
    assert grid.owl_ratios() == []
    assert len(grid.evaluations("aya23-8b")) == (1 + len(checkpoints)) * 6  # dense + variants, 6 benchmarks
    first = checkpoints[0]
    assert first.path == "wanda_unstructured_0.5/ar/seed0"
    assert first.directory == "results/checkpoints/aya23-8b/wanda_unstructured_0.5/ar/seed0"
    assert first.shard.path == "results/shards/aya23/ar/seed0.safetensors" and first.shard.languages == ("ar",)
    assert first.hidden_states == "results/analysis/aya23-8b/hidden/wanda_unstructured_0.5/ar/seed0.safetensors"
    nm = next(c for c in checkpoints if c.structure == "2:4")
    assert nm.path.startswith("wanda_2of4_0.5/") and nm.labels["structure"] == "2:4"
    dense = grid.evaluations("aya23-8b")[0]
    assert dense.checkpoint is None and dense.path == "results/metrics/aya23-8b/dense/perplexity.json"


def test_traits_decide_structures_calibration_and_inputs():
    """Unstructured-only (dsnot, layer-wise allocations), language mix (mwanda, cwl), no calibration
    (magnitude; not under OWL, whose dense pass reads the shard), the OWL ratios of a dense pass."""
    grid = grid_of(TOY, methods=["magnitude", "dsnot", "mwanda"], allocation=["uniform", "owl", "cwl"],
                   structures=["unstructured", "2:4"])
    built = Counter((c.label, c.structure) for c in grid.checkpoints("toy"))
    seeds, sets, mixes = 2, 8, 1  # the toy's seven languages + all7
    assert built[("magnitude", "unstructured")] == built[("magnitude", "2:4")] == 1
    assert built[("magnitude+owl", "unstructured")] == sets * seeds and ("magnitude+owl", "2:4") not in built
    assert built[("dsnot", "unstructured")] == sets * seeds and ("dsnot", "2:4") not in built
    assert built[("mwanda", "unstructured")] == built[("mwanda", "2:4")] == mixes * seeds
    assert built[("magnitude+cwl", "unstructured")] == mixes * seeds and ("mwanda+cwl", "2:4") not in built
    magnitude = next(c for c in grid.checkpoints("toy") if c.label == "magnitude")
    assert magnitude.shard is None and (magnitude.calib, magnitude.seed) == (variant.UNCALIBRATED, 0)
    for c in grid.checkpoints("toy"):
        assert (c.owl_ratios is not None) == (c.allocation == "owl")
        if c.owl_ratios:
            assert c.owl_ratios == f"results/owl_ratios/toy/{c.calib}/seed{c.seed}.json" and c.shard is not None
    assert len(grid.owl_ratios()) == sets * seeds  # one dense pass per shard, shared by the +owl variants


def test_analyses_include_every_allocation_of_the_analysed_methods():
    """Analysis methods are base names: their +owl and +cwl variants are analysed too."""
    grid = grid_of(TOY, methods=["wanda", "sparsegpt"], allocation=["uniform", "owl", "cwl"])
    config = copy.deepcopy(grid.config)
    config["analysis"] = {"methods": ["wanda"]}
    analysed = Grid(check_config(config, SCHEMA, root=REPO)).analysis_checkpoints("toy")
    assert {c.label for c in analysed} == {"wanda", "wanda+owl", "wanda+cwl"}
    assert len(analysed) == len([c for c in grid.checkpoints("toy") if c.method == "wanda"])


def test_each_model_has_its_own_checkpoints_and_analyses():
    grid = grid_of(PAPER)
    for model in grid.models:
        assert {c.model for c in grid.checkpoints(model)} == {model}
        assert {c.model for c in grid.analysis_checkpoints(model)} == {model}
        assert all(e.path.startswith(f"results/metrics/{model}/") for e in grid.evaluations(model))
    assert grid.analysis_groups() == [(list(grid.models), [c.path for c in grid.checkpoints("aya23-8b")])]
    with pytest.raises(LangpruneError, match="'gpt2' is not a key of models"):
        grid.checkpoints("gpt2")


def test_mask_overlap_is_built_only_where_two_checkpoints_share_a_setting():
    """One calibration set and one seed leave the mask overlap nothing to compare: the grid leaves it out
    (the other analyses stay); a second seed or set brings it back; magnitude (no calibration) never pairs."""
    one = copy.deepcopy(TOY)
    one["calibration"].update(seeds=[0], sets={"de": ["de"]})
    assert grid_of(one, methods=["wanda"]).analyses("toy") == ["features", "drift", "neurons"]
    assert grid_of(one, methods=["wanda", "magnitude"]).mask_pairs("toy") == 1
    one["calibration"]["seeds"] = [0, 1]
    assert grid_of(one, methods=["wanda"]).analyses("toy") == ["features", "drift", "masks", "neurons"]
    assert grid_of(TOY).analyses("toy") == ["features", "drift", "masks", "neurons"]


def test_analysis_defaults_that_depend_on_other_keys():
    toy, paper = grid_of(TOY).analysis, grid_of(PAPER).analysis
    assert toy.probe == "text:results/toy/text/probe" and paper.probe == "belebele"
    assert toy.one_job_per_model and not paper.one_job_per_model  # paper models need a GPU
    assert paper.methods == ["wanda", "sparsegpt"] and paper.calibrations[-1] == variant.UNCALIBRATED
    assert grid_of(TOY).tasks["udhr_mc"]["languages"] == TOY["languages"]


def dummy_method(tmp_path, monkeypatch) -> registry.MethodSpec:
    """A method 'dummy' in a temporary module, registered in a temporary copy of the registry."""
    (tmp_path / "dummy_method.py").write_text("def dummy(weight, stats, structure):\n    return weight != 0, None\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = replace(registry.METHODS["wanda"], name="dummy", function="dummy_method:dummy", summary="a test method")
    monkeypatch.setattr(registry, "METHODS", {**registry.METHODS, "dummy": spec})
    return spec


def test_a_method_needs_only_its_registry_entry_and_module(tmp_path, monkeypatch):
    """One MethodSpec plus one module: the grid builds it, the config check accepts it (and lists it
    when a name is wrong), and the report orders it."""
    spec = dummy_method(tmp_path, monkeypatch)
    assert spec.resolve()(1, None, None) == (True, None)

    grid = grid_of(TOY, methods=["wanda", "dummy"], allocation=["uniform", "owl"])
    assert {c.label for c in grid.checkpoints("toy")} >= {"dummy", "dummy+owl"}
    config = copy.deepcopy(TOY)
    config["pruning"]["methods"] = ["dummy"]
    config["analysis"] = {"methods": ["dummy"]}
    check_config(config, SCHEMA, root=REPO)
    config["pruning"]["methods"] = ["dummyy"]
    with pytest.raises(LangpruneError, match=r"pruning.methods\[0\]: 'dummyy' is not one of \[.*'dummy'\]"):
        check_config(config, SCHEMA, root=REPO)

    from langprune.report.tables import method_order

    assert method_order().index("dummy") < method_order().index("wanda+owl")


def test_a_registered_method_is_a_choice_of_langprune_prune(tmp_path, monkeypatch):
    """`langprune prune --method` offers every registered method, the dummy one included."""
    dummy_method(tmp_path, monkeypatch)
    from langprune.cli import build_parser

    prune = build_parser()._subparsers._group_actions[0].choices["prune"]
    method = next(action for action in prune._actions if "--method" in action.option_strings)
    assert method.choices is not None and "dummy" in method.choices


def test_config_check_and_grid_agree_on_shipped_configs():
    for files in (["config/paper.yaml"], ["config/config.yaml"], ["config/real.yaml", "config/real_trimmed.yaml"]):
        config = check_config_files([REPO / f for f in files], SCHEMA, REPO)
        grid = Grid(config)
        assert all(grid.checkpoints(m) for m in grid.models)
