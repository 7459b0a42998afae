"""Metrics JSON labels and the tidy table gathered from many runs; the paper's reference tables."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from langprune.bitmasks import PackedMasks
from langprune.checkpoint import write_checkpoint
from langprune.cli import main
from langprune.errors import LangpruneError
from langprune.evaluate.results import gather, record, write_metrics
from langprune.io import write_json
from langprune.reference import load_reference
from langprune.variant import parse_tags


@pytest.fixture()
def runs(tmp_path):
    ckpt = tmp_path / "ckpt"
    masks = PackedMasks()
    masks.add("w", torch.tensor([[True, False], [False, True]]))
    write_checkpoint(ckpt, masks, None, {
        "method": "wanda", "structure": "2:4", "sparsity": 0.5, "seed": 1, "tags": {"calib": "de", "model": "m"},
        "calibration": {"path": "x", "shard": {"languages": ["ar", "de"]}}})
    pruned = write_metrics(tmp_path / "p.json", kind="tasks", model="org/m", checkpoint=ckpt, tags={"seed": "2"},
                           records=[record("arc", "de", "acc", 0.25, 100), record("arc", "sw", "acc", None, 0, False)])
    dense = write_metrics(tmp_path / "d.json", kind="perplexity", model="org/m", checkpoint=None,
                          tags={"model": "m", "run": "a"},
                          records=[record("perplexity", "de", "perplexity", 9.5, 10, fingerprint="0123456789abcdef")])
    return tmp_path, pruned, dense


def test_tags_merge_manifest_and_run_labels(runs):
    _, pruned, dense = runs
    assert pruned["tags"] == {"calib": "de", "model": "m", "seed": "2"}
    assert len(pruned["checkpoint_hash"]) == 64 and dense["checkpoint_hash"] is None
    assert pruned["pruning"] == {"method": "wanda", "structure": "2:4", "sparsity": "0.5", "seed": "1",
                                 "calib": "ar+de"}


def test_gather_gives_one_tidy_row_per_record(runs):
    root, _, _ = runs
    table = gather([root / "p.json", root / "d.json"])
    assert list(table.columns[:12]) == ["model", "method", "structure", "sparsity", "calib", "seed", "benchmark",
                                        "language", "metric", "value", "n", "available"]
    assert "run" in table.columns and len(table) == 3
    arc_de, arc_sw, ppl = table.to_dict("records")
    assert (arc_de["model"], arc_de["method"], arc_de["structure"], arc_de["calib"], arc_de["seed"]) == (
        "m", "wanda", "2:4", "de", "2")
    assert not arc_sw["available"]
    assert pd.isna(arc_sw["value"])
    assert (ppl["method"], ppl["calib"], ppl["seed"], ppl["sparsity"], ppl["value"]) == ("dense", "none", "-", "0", 9.5)
    # the evaluation data's fingerprint travels with its row; records without one leave it empty
    assert ppl["fingerprint"] == "0123456789abcdef" and pd.isna(arc_de["fingerprint"])


def test_gather_cli_writes_csv(runs):
    root, _, _ = runs
    assert main(["evaluate", "gather", str(root / "p.json"), str(root / "d.json"), "--out", str(root / "t.csv")]) == 0
    assert len(pd.read_csv(root / "t.csv")) == 3
    write_json(root / "bad.json", {"model": "x"})
    with pytest.raises(LangpruneError, match="not a langprune metrics JSON"):
        gather([root / "bad.json"])


def test_tag_parsing():
    assert parse_tags(["a=1", "b=x=y"]) == {"a": "1", "b": "x=y"}
    with pytest.raises(LangpruneError, match="KEY=VALUE"):
        parse_tags(["novalue"])


def test_reference_tables_load_raw_and_tidy():
    raw = load_reference("perplexity")
    row = raw[(raw.model == "Llama-3-8B-Instruct") & (raw.method == "dense") & (raw.eval_language == "AR")]
    assert row.perplexity.item() == 12.6
    tidy = load_reference("downstream", tidy=True)
    easy = tidy[(tidy.method == "dense") & (tidy.language == "en-e") & (tidy.model == "Llama-3-8B-Instruct")]
    assert easy.value.item() == pytest.approx(0.759) and easy.metric.item() == "acc"
    assert set(load_reference("mkqa", tidy=True).benchmark) == {"mkqa"}
    with pytest.raises(LangpruneError, match="unknown reference table"):
        load_reference("table9")
