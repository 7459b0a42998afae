"""LAPE neuron selection on synthetic activation probabilities, and pruned shares on hand-made masks."""

import math

import pytest
import torch

from langprune.analysis.neurons import (
    activation_probability,
    lape,
    neuron_pruned_counts,
    protection_check,
    pruned_share_rows,
    select_language_neurons,
)

LANGS = ["de", "en", "sw"]


def test_lape_is_zero_for_one_language_and_log_k_for_all():
    prob = torch.tensor([[[0.9, 0.0, 0.0], [0.4, 0.4, 0.4], [0.0, 0.0, 0.0]]], dtype=torch.float64)
    entropy = lape(prob)
    assert entropy[0, 0] == pytest.approx(0.0)
    assert entropy[0, 1] == pytest.approx(math.log(3))
    assert entropy[0, 2] == pytest.approx(0.0)  # never fires: no distribution, filtered out by the selection


def test_activation_probability_divides_by_tokens_per_language():
    active = {"de": torch.tensor([[2, 0]]), "en": torch.tensor([[1, 4]])}
    tokens = {"de": torch.tensor(4), "en": torch.tensor(8)}
    prob = activation_probability(active, tokens, ["de", "en"])
    assert prob.shape == (1, 2, 2)
    assert prob[0, 0].tolist() == [0.5, 0.125] and prob[0, 1].tolist() == [0.0, 0.5]


def test_selection_finds_the_planted_language_neurons():
    gen = torch.Generator().manual_seed(0)
    prob = 0.3 + 0.05 * torch.rand(2, 100, 3, generator=gen, dtype=torch.float64)  # unspecific neurons
    prob[0, 7] = torch.tensor([0.97, 0.02, 0.01])   # a German neuron
    prob[1, 42] = torch.tensor([0.01, 0.03, 0.95])  # a Swahili neuron
    prob[1, 3] = torch.tensor([0.9, 0.92, 0.01])    # fires for de and en: both languages own it
    prob[0, 9] = torch.tensor([0.02, 0.01, 0.0])    # specific but rare: filtered out
    selected = select_language_neurons(prob, LANGS, top_rate=0.015, filter_rate=0.95, activation_bar=0.95)
    assert selected["de"].nonzero().tolist() == [[0, 7], [1, 3]]
    assert selected["en"].nonzero().tolist() == [[1, 3]]
    assert selected["sw"].nonzero().tolist() == [[1, 42]]


def test_pruned_share_counts_gate_up_rows_and_down_columns():
    inter, hidden = 4, 3
    gate = torch.zeros(inter, hidden, dtype=torch.bool)
    up = torch.zeros(inter, hidden, dtype=torch.bool)
    down = torch.zeros(hidden, inter, dtype=torch.bool)
    gate[1] = True  # neuron 1 loses its whole gate row
    down[:, 2] = True  # neuron 2 loses its whole down column
    masks = {"model.layers.0.mlp.gate_proj": gate, "model.layers.0.mlp.up_proj": up,
             "model.layers.0.mlp.down_proj": down, "model.layers.0.self_attn.q_proj": torch.ones(3, 3).bool()}
    counts = neuron_pruned_counts(masks)
    assert set(counts) == {(1, "gate"), (1, "up"), (1, "down")}
    selection = {"de": torch.tensor([[False, True, False, False]]), "en": torch.tensor([[False, False, True, True]])}
    rows = {(r["neuron_language"], r["linear_type"]): r for r in pruned_share_rows({"calib": "de"}, counts, selection)}
    assert rows[("de", "gate")]["pruned_share"] == 1.0
    assert rows[("de", "mlp")]["pruned_share"] == pytest.approx(1 / 3)
    assert rows[("en", "down")]["pruned_share"] == pytest.approx(0.5)
    assert rows[("all", "mlp")]["pruned_share"] == pytest.approx(6 / 36)
    assert rows[("all", "mlp")]["n_neurons"] == 4 and rows[("en", "mlp")]["n_neurons"] == 2


def test_protection_compares_own_calibration_with_the_others():
    import pandas as pd

    base = {"model": "m", "method": "wanda", "structure": "unstructured", "sparsity": "0.5", "seed": "0",
            "linear_type": "mlp"}
    rows = [{**base, "calib": c, "neuron_language": n, "pruned_share": s, "n_neurons": k}
            for c, n, s, k in [("de", "de", 0.40, 3), ("en", "de", 0.50, 3), ("de", "en", 0.55, 2),
                               ("en", "en", 0.60, 2), ("de", "sw", float("nan"), 0), ("sw", "sw", float("nan"), 0)]]
    check = protection_check(pd.DataFrame(rows)).set_index("neuron_language")
    assert "sw" not in check.index  # no Swahili neurons: nothing to protect
    assert check.loc["de", "protection"] == pytest.approx(0.10) and check.loc["de", "own_is_lowest"]
    assert check.loc["en", "protection"] == pytest.approx(-0.05) and not check.loc["en", "own_is_lowest"]
