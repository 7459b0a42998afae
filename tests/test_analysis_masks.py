"""Mask IoU on hand-made masks."""

import pytest
import torch

from langprune.analysis import masks as masks_mod
from langprune.analysis.masks import (
    iou,
    language_matrix,
    layer_curve,
    layer_index,
    linear_type,
    overlap_table,
    pair_counts,
    random_iou,
)


def label(calib, seed):
    return {"model": "m", "method": "wanda", "structure": "unstructured", "sparsity": "0.5", "calib": calib,
            "seed": str(seed)}


def test_names_give_layer_and_linear_type():
    assert layer_index("model.layers.3.self_attn.q_proj.weight") == 4
    assert linear_type("model.layers.3.self_attn.q_proj.weight") == "q"
    assert linear_type("model.layers.0.mlp.down_proj") == "down"


def test_iou_of_hand_made_masks():
    a = torch.tensor([1, 1, 0, 0], dtype=torch.bool)
    b = torch.tensor([1, 0, 1, 0], dtype=torch.bool)
    c = torch.tensor([0, 0, 1, 1], dtype=torch.bool)
    counts, inter = pair_counts(torch.stack([a, b, c]))
    assert counts.tolist() == [2, 2, 2]
    assert inter.tolist() == [[2, 1, 0], [1, 2, 1], [0, 1, 2]]
    assert iou(1, 2, 2) == pytest.approx(1 / 3)
    assert iou(0, 2, 2) == 0.0
    assert random_iou(0.5) == pytest.approx(1 / 3)


def test_pair_counts_are_exact_across_chunks(monkeypatch):
    gen = torch.Generator().manual_seed(0)
    stacked = torch.rand(3, 7, 11, generator=gen) < 0.5
    monkeypatch.setattr(masks_mod, "_CHUNK", 5)
    counts, inter = pair_counts(stacked)
    flat = stacked.reshape(3, -1)
    expected = torch.tensor([[int((flat[i] & flat[j]).sum()) for j in range(3)] for i in range(3)])
    assert torch.equal(inter, expected)
    assert torch.equal(counts, flat.sum(1))


def test_overlap_table_per_layer_and_type_with_seed_baseline():
    q = "model.layers.0.self_attn.q_proj"
    down = "model.layers.1.mlp.down_proj"
    base = torch.tensor([[1, 1, 0, 0], [1, 0, 1, 0]], dtype=torch.bool)
    checkpoints = [
        {q: base, down: base},                      # de seed 0
        {q: base, down: ~base},                     # de seed 1: same q, disjoint down
        {q: base.roll(1, dims=1), down: base},      # en seed 0
    ]
    labels = [label("de", 0), label("de", 1), label("en", 0)]
    table = overlap_table(labels, checkpoints)
    assert len(table) == 3 * 2  # 3 pairs x 2 (layer, type)
    row = table[(table.calib_a == "de") & (table.calib_b == "de") & (table.linear_type == "q")].iloc[0]
    assert row.iou == 1.0 and row.pair == "same-language"
    row = table[(table.calib_a == "de") & (table.calib_b == "de") & (table.linear_type == "down")].iloc[0]
    assert row.iou == 0.0 and row.layer == 2
    # base vs base rolled by one column: rows [1,1,0,0]/[0,1,1,0] and [1,0,1,0]/[0,1,0,1] -> 1 of 7 shared
    row = table[(table.seed_a == "0") & (table.calib_b == "en") & (table.linear_type == "q")].iloc[0]
    assert row.intersection == 1 and row.union == 7 and row.pair == "cross-language"

    matrix = language_matrix(table).set_index(["calib_a", "calib_b"])["iou"]
    assert matrix[("de", "de")] == pytest.approx(4 / 12)  # q: 4/4, down: 0/8, pooled
    assert matrix[("de", "en")] == pytest.approx(matrix[("en", "de")])
    curve = layer_curve(table).set_index(["layer", "pair"])["iou"]
    assert curve[(1, "same-language")] == 1.0 and curve[(2, "same-language")] == 0.0


def test_differently_pruned_linears_cannot_be_compared():
    from langprune.errors import LangpruneError

    a = {"model.layers.0.mlp.up_proj": torch.ones(2, 2, dtype=torch.bool)}
    b = {"model.layers.0.mlp.gate_proj": torch.ones(2, 2, dtype=torch.bool)}
    with pytest.raises(LangpruneError, match="different linears"):
        overlap_table([label("de", 0), label("en", 0)], [a, b])
