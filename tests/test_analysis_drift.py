"""Layer drift and the 'which layers benefit from target-language calibration' summary on hand-made numbers."""

import pandas as pd
import pytest
import torch

from langprune.analysis.drift import describe_benefit, layer_distance, layers_that_benefit, target_benefit
from langprune.analysis.hidden import read_probe
from langprune.analysis.probe import unique_passages
from langprune.errors import LangpruneError


def test_layer_distance_is_mean_euclidean_distance_per_layer():
    dense = torch.zeros(2, 3, 4)
    pruned = dense.clone()
    pruned[0, :, 0] = 3.0  # layer 1: every passage moved by 3
    pruned[1, 0, :2] = torch.tensor([3.0, 4.0])  # layer 2: one passage moved by 5
    assert layer_distance(pruned, dense).tolist() == pytest.approx([3.0, 5 / 3])


def drift_rows():
    """Eval de: de-calibration drifts least at layer 1 only; eval en: en-calibration least at both layers."""
    base = {"model": "m", "method": "wanda", "structure": "unstructured", "sparsity": "0.5", "dense_norm": 1.0}
    values = {("de", "de"): [1.0, 4.0], ("en", "de"): [2.0, 3.0], ("all7", "de"): [3.0, 3.0],
              ("de", "en"): [2.0, 2.0], ("en", "en"): [1.0, 1.0], ("all7", "en"): [2.0, 2.0]}
    rows = []
    for (calib, lang), drifts in values.items():
        for seed in ("0", "1"):
            for layer, drift in enumerate(drifts, start=1):
                rows.append({**base, "calib": calib, "seed": seed, "eval_language": lang, "layer": layer,
                             "drift": drift + (0.1 if seed == "1" else -0.1)})
    return pd.DataFrame(rows)


def test_target_benefit_and_layer_summary():
    benefit = target_benefit(drift_rows()).set_index(["eval_language", "layer"])
    # others = en only (the all7 mix is shown but not compared): 2.0 vs target 1.0, seeds averaged
    assert benefit.loc[("de", 1), "benefit"] == pytest.approx(1.0)
    assert benefit.loc[("de", 1), "relative_benefit"] == pytest.approx(0.5)
    assert benefit.loc[("de", 2), "target_is_best"] == False  # noqa: E712 - numpy bool
    assert benefit.loc[("en", 2), "target_is_best"] == True  # noqa: E712
    summary = layers_that_benefit(benefit.reset_index()).set_index("layer")
    assert summary.loc[1, "share_target_best"] == 1.0 and summary.loc[1, "benefits"]
    assert summary.loc[2, "share_target_best"] == 0.5 and not summary.loc[2, "benefits"]
    text = describe_benefit(summary.reset_index())
    assert "at layers 1 of 2" in text


def test_probe_passages_are_parallel_and_checked(tmp_path):
    (tmp_path / "blocks").mkdir()
    (tmp_path / "blocks" / "xx.txt").write_text("a\nb\n\nc\n", encoding="utf-8")
    (tmp_path / "blocks" / "yy.txt").write_text("one\ntwo\n", encoding="utf-8")
    # paragraphs, or lines where a language has no blank line
    assert read_probe(str(tmp_path / "blocks"), ["xx", "yy"]) == {"xx": ["a\nb", "c"], "yy": ["one", "two"]}
    (tmp_path / "de.txt").write_text("eins\n\nzwei\n\ndrei\n", encoding="utf-8")
    (tmp_path / "en.txt").write_text("one\n\ntwo\n", encoding="utf-8")
    (tmp_path / "sw").mkdir()
    (tmp_path / "sw" / "a.txt").write_text("moja\n\nmbili\n", encoding="utf-8")
    texts = read_probe(f"text:{tmp_path}", ["de", "en", "sw"])
    assert texts == {"de": ["eins", "zwei"], "en": ["one", "two"], "sw": ["moja", "mbili"]}
    assert read_probe(str(tmp_path), ["de", "en"], max_passages=1) == {"de": ["eins"], "en": ["one"]}
    with pytest.raises(LangpruneError, match="'zh'"):
        read_probe(str(tmp_path), ["zh"])
    with pytest.raises(LangpruneError, match="--probe"):
        read_probe(str(tmp_path / "missing"), ["de"])


def test_belebele_passages_are_deduplicated_in_order():
    rows = [{"link": "a", "flores_passage": "First  passage."}, {"link": "a", "flores_passage": "First passage."},
            {"link": "b", "flores_passage": "Second."}, {"link": "c", "flores_passage": "Third."}]
    assert unique_passages(rows, None) == ["First passage.", "Second.", "Third."]
    assert unique_passages(rows, 2) == ["First passage.", "Second."]
