"""A variant's identity survives config -> path -> manifest -> metrics -> table row, in every spelling."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from langprune import variant
from langprune.analysis.common import checkpoint_tags
from langprune.bitmasks import PackedMasks
from langprune.checkpoint import write_checkpoint
from langprune.errors import LangpruneError
from langprune.evaluate.results import gather, record, write_metrics
from langprune.prune.structure import parse_structure
from langprune.report import tables
from langprune.variant import parse_tags

LANGUAGES = ["ar", "de", "en"]
# Calibration sets as a config names them: a single language, a mix named by its languages,
# a named mix, and no calibration at all (magnitude).
CALIBRATIONS = {"de": ["de"], "ar+de": ["ar", "de"], "all3": LANGUAGES, variant.UNCALIBRATED: []}
STRUCTURES = ["unstructured", "2:4", "4:8"]


def workflow_tags(labels: dict) -> dict:
    """The `--tag` flags a workflow rule writes, read back as the CLI reads them."""
    return parse_tags(variant.tag_flags(labels).replace("--tag ", "").split())


def prune_manifest(structure: str, languages: list[str], tags: dict) -> dict:
    """The identity part of a manifest as `langprune prune` writes it."""
    parsed = parse_structure(structure, None if ":" in structure else 0.5)
    shard = {"path": "shard.safetensors", "shard": {"languages": languages}} if languages else None
    return {"method": "wanda" if languages else "magnitude", "structure": parsed.label, "sparsity": parsed.sparsity,
            "seed": 1, "calibration": shard, "tags": tags}


@pytest.mark.parametrize("structure", STRUCTURES)
@pytest.mark.parametrize("calib", list(CALIBRATIONS))
@pytest.mark.parametrize("tagged", [True, False], ids=["workflow", "cli-without-tags"])
def test_identity_round_trip(tmp_path, structure, calib, tagged):
    languages = CALIBRATIONS[calib]
    method = "wanda" if languages else "magnitude"
    sparsity = parse_structure(structure, None if ":" in structure else 0.5).sparsity
    seed = 1
    # config -> path (and back)
    path = variant.variant_path(method, structure, sparsity, calib, seed)
    assert ":" not in path and "+" not in path.split("/")[0]
    labels = {"model": "toy", "method": method, "structure": structure, "sparsity": str(sparsity), "calib": calib,
              "seed": str(seed)}
    assert {"model": "toy", **variant.parse_variant_path(path)} == labels
    # path -> manifest (tags from the workflow, or none from a bare command line)
    ckpt = tmp_path / variant.CHECKPOINT_DIR.format(model="toy", variant=path)
    manifest = prune_manifest(structure, languages, workflow_tags(labels) if tagged else {})
    masks = PackedMasks()
    masks.add("w", torch.tensor([[True, False], [False, True]]))
    write_checkpoint(ckpt, masks, None, manifest)
    # manifest -> metrics JSON -> tidy row
    out = tmp_path / variant.METRICS_FILE.format(model="toy", variant=path, benchmark="perplexity")
    records = [record("perplexity", lang, "perplexity", 10.0 + i, 5) for i, lang in enumerate(LANGUAGES)]
    write_metrics(out, kind="perplexity", model="toy", checkpoint=ckpt, records=records)
    dense_out = tmp_path / variant.METRICS_FILE.format(model="toy", variant=variant.DENSE, benchmark="perplexity")
    write_metrics(dense_out, kind="perplexity", model="toy", checkpoint=None, records=records,
                  tags=workflow_tags({"model": "toy", **variant.DENSE_LABELS}))
    tidy = gather([out, dense_out])
    expected = labels if tagged else {**labels, "calib": variant.mix_name(languages)}
    row = tidy[tidy["method"] == method].iloc[0]
    assert {key: str(row[key]) for key in variant.LABEL_KEYS} == expected
    # checkpoint -> the analyses' labels: the same as the metrics rows' (the model comes from the run)
    analysed = variant.variant_labels({"model": "toy", **checkpoint_tags(ckpt)})
    assert analysed == expected
    assert variant.variant_labels({"model": "toy", **checkpoint_tags(None)}) == {
        "model": "toy", **variant.DENSE_LABELS}
    # tidy table -> paper-layout table row; the heatmap folder is the checkpoint's setting part
    csv = tmp_path / "metrics.csv"
    tidy.to_csv(csv, index=False)
    agg = tables.aggregate_seeds(tables.read_metrics(csv))
    is_mix = len(languages) > 1
    spec = next(s for s in tables.TABLES if s.name == ("table4_mixes_perplexity" if is_mix else "table1_perplexity"))
    table = tables.flat_columns(tables.layout_table(agg, spec), spec.per_benchmark)
    shown = table[table["method"] == method]
    assert len(shown) == 1
    assert shown.iloc[0][["structure", "sparsity", "calib"]].tolist() == [
        structure, str(sparsity), expected["calib"].upper()]
    assert variant.setting_name(shown.iloc[0]) == path.split("/")[0]
    assert list(table["method"])[0] == variant.DENSE


def test_mixes_sort_after_singles_however_they_were_named():
    singles = {"de", "en"}
    names = ["all7", "ar+de+en", variant.UNCALIBRATED, "en+de", "de"]
    assert sorted(names, key=lambda c: tables.calib_sort_key(c, singles)) == [
        variant.UNCALIBRATED, "de", "en+de", "ar+de+en", "all7"]
    assert variant.mix_name(["ar", "de"]) == "ar+de" and variant.mix_parts("ar+de") == ["ar", "de"]


def test_older_results_keep_loading_with_one_spelling(tmp_path):
    """Dense rows written before one spelling existed carry calib '-'; they read as uncalibrated."""
    old = pd.DataFrame([dict(model="toy", method="dense", structure="-", sparsity="0", calib="-", seed="-",
                             benchmark="perplexity", language="de", metric="perplexity", value=9.0, n=5,
                             available=True)])
    old.to_csv(tmp_path / "old.csv", index=False)
    assert tables.read_metrics(tmp_path / "old.csv")["calib"].tolist() == [variant.UNCALIBRATED]
    assert variant.canonical_calib("-") == variant.UNCALIBRATED == variant.canonical_calib("NONE")


@pytest.mark.parametrize("structure, slug", [("unstructured", "unstructured"), ("2:4", "2of4"), ("4:8", "4of8")])
def test_structure_slug_is_invertible(structure, slug):
    assert variant.structure_slug(structure) == slug and variant.structure_from_slug(slug) == structure


def test_bad_variant_path_and_tag_say_what_is_expected():
    with pytest.raises(LangpruneError, match="variant path like wanda_2of4_0.5/de/seed0"):
        variant.parse_variant_path("wanda/de")
    with pytest.raises(LangpruneError, match="KEY=VALUE"):
        parse_tags(["novalue"])
