"""M-Wanda (language-aware Wanda) and CWL layer-wise sparsity: the scores against their stated
definition, per-language statistics, the CLI on a two-language shard, and refusal of one language.

The authors' code could not be read (benchmarks/RESULTS.md), so there is no fidelity test against
it: these tests pin langprune's stated formulas (prune/mwanda.py) instead.
"""

from __future__ import annotations

import json
import re

import pytest
import torch
from safetensors.torch import save_file

from conftest import build_model
from langprune.checkpoint import read_manifest
from langprune.cli import main
from langprune.data.shards import row_languages
from langprune.errors import LangpruneError
from langprune.prune.allocation import cwl_sparsities
from langprune.prune.engine import prune_model
from langprune.prune.methods import METHODS, wanda
from langprune.prune.mwanda import cross_lingual_correlation, mwanda, mwanda_scores
from langprune.prune.stats import LANGUAGES, SUMSQ, InputAccumulator
from langprune.prune.structure import n_of_m, unstructured
from langprune.registry import mask_only_methods


def _language_stats(rows: list[torch.Tensor], languages: list[int], name: str = "layer.lin"):
    """Statistics of calibration rows ([tokens, features] each) labelled by language index."""
    acc = InputAccumulator(rows[0].shape[-1], frozenset({SUMSQ, LANGUAGES}), torch.device("cpu"), languages)
    for row in rows:
        acc.update(row)
    return acc.result(name)


def _rows(seed: int = 0, features: int = 32, tokens: int = 40, count: int = 4) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(tokens, features, generator=g) * (torch.rand(features, generator=g) * 3 + 0.1)
            for _ in range(count)]


def test_per_language_sums_cover_exactly_their_rows_whatever_the_batching():
    rows = _rows()
    stats = _language_stats(rows, [0, 1, 0, 1])
    assert stats.language_tokens.tolist() == [80, 80]
    torch.testing.assert_close(stats.language_sumsq[0], rows[0].pow(2).sum(0) + rows[2].pow(2).sum(0))
    torch.testing.assert_close(stats.language_positive[1], ((rows[1] > 0).sum(0) + (rows[3] > 0).sum(0)).float())
    torch.testing.assert_close(stats.language_sumsq.sum(0), stats.sumsq)
    acc = InputAccumulator(32, frozenset({SUMSQ, LANGUAGES}), torch.device("cpu"), [0, 1, 0, 1])
    acc.update(torch.stack(rows[:2]))  # a batch of two sequences, then two more
    acc.update(torch.stack(rows[2:]))
    torch.testing.assert_close(acc.result("x").language_sumsq, stats.language_sumsq)


def test_scores_follow_the_stated_definition():
    rows = _rows(1)
    stats = _language_stats(rows, [0, 0, 1, 1])
    w = torch.randn(8, 32, generator=torch.Generator().manual_seed(2))
    per_language = [torch.cat(rows[:2]), torch.cat(rows[2:])]
    rms = torch.stack([x.pow(2).mean(0).sqrt() for x in per_language])
    probability = torch.stack([(x > 0).float().mean(0) for x in per_language])
    expected = w.abs() * ((rms.mean(0) + 0.7 * rms.std(0, unbiased=False)) * (1 + 0.3 * probability.mean(0)))
    torch.testing.assert_close(mwanda_scores(w, stats, 0.7, 0.3), expected)
    keep, new = mwanda(w, stats, unstructured(0.5), spread_weight=0.7, probability_weight=0.3)
    assert new is None and ((~keep).sum(dim=1) == 16).all()  # per output row, as Wanda
    assert torch.equal(keep, expected >= expected.sort(dim=1).values[:, 16:17])


def test_without_its_terms_and_with_alike_languages_it_is_wanda():
    rows = _rows(3)
    stats = _language_stats([*rows, *rows], [0, 0, 0, 0, 1, 1, 1, 1])  # two languages with the same activations
    w = torch.randn(16, 32, generator=torch.Generator().manual_seed(4))
    for structure in (unstructured(0.6), n_of_m(2, 4)):
        keep, _ = mwanda(w, stats, structure, spread_weight=0.0, probability_weight=0.0)
        assert torch.equal(keep, wanda(w, stats, structure)[0])


def test_a_feature_one_language_needs_is_kept_by_the_spread_term():
    g = torch.Generator().manual_seed(5)
    rows = [torch.randn(64, 8, generator=g) for _ in range(4)]
    for row in rows[:2]:
        row[:, 0] *= 6  # feature 0 is large in language 0 only (RMS about 6 and 1: mean 3.5, spread 2.5) ...
    for row in rows:
        row[:, 1] *= 4  # ... feature 1 large in both (RMS about 4: mean 4, no spread)
    stats = _language_stats(rows, [0, 0, 1, 1])
    w = torch.ones(1, 8)
    plain = mwanda_scores(w, stats, 0.0, 0.0)[0]
    aware = mwanda_scores(w, stats, 1.0, 0.0)[0]
    assert plain[0] < plain[1] and aware[0] > aware[1]  # the spread favours the language-specific feature


def test_one_language_is_refused():
    rows = _rows()
    stats = _language_stats(rows, [0, 0, 0, 0])
    with pytest.raises(LangpruneError, match="at least two languages"):
        METHODS["mwanda"].run(torch.randn(4, 32), stats, unstructured(0.5))


def test_cross_lingual_correlation_and_cwl_allocation():
    rows = _rows(6)
    same = _language_stats([*rows, *rows], [0, 0, 0, 0, 1, 1, 1, 1])
    assert cross_lingual_correlation({"a": same, "b": same.for_linear("b")}) == pytest.approx(1.0)
    different = _language_stats([rows[0], _rows(7)[0]], [0, 1])
    assert cross_lingual_correlation({"a": different}) < 0.9
    sparsities = cwl_sparsities([0.99, 0.5, 0.9, 0.7], 0.6, 0.1)
    assert sum(sparsities) / 4 == pytest.approx(0.6)
    # less correlated, less pruned
    assert sorted(sparsities) == [sparsities[1], sparsities[3], sparsities[2], sparsities[0]]
    assert max(sparsities) - min(sparsities) == pytest.approx(0.2)  # spread over 2 * lambda
    assert cwl_sparsities([0.8, 0.8], 0.5, 0.08) == [0.5, 0.5]


def test_mwanda_is_not_an_initial_mask_for_dsnot():
    assert "mwanda" in METHODS and "mwanda" not in mask_only_methods()  # DSnoT collects no per-language statistics


def test_row_languages_follow_the_shards_order():
    meta = {"languages": ["de", "en", "sw"], "counts": {"de": 2, "en": 1, "sw": 0}}
    assert row_languages(meta) == ["de", "de", "en"]
    assert row_languages({}) == []


@pytest.mark.parametrize("arch", ["llama", "qwen2", "cohere"])
def test_engine_prunes_tiny_models_with_language_statistics(tmp_path, arch):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(build_model(tmp_path / arch, arch)).eval()
    ids = torch.randint(3, 320, (4, 16), generator=torch.Generator().manual_seed(0))
    seen = {}
    result = prune_model(model, METHODS["mwanda"], unstructured(0.5), ids, batch_size=3, progress=False,
                         row_languages=[0, 0, 1, 1], on_stats=lambda i, stats: seen.setdefault(i, stats))
    assert all(abs(layer.sparsity - 0.5) < 1e-3 for layer in result.layers)
    assert all(s.language_tokens.tolist() == [32, 32] for s in seen[1].values())


def _shard(path, languages: list[str], counts: dict[str, int]):
    rows = []
    for offset, lang in enumerate(languages):  # each language its own token range: different activations
        rows.append(torch.randint(3 + 150 * offset, 160 + 150 * offset, (counts[lang], 32),
                                  generator=torch.Generator().manual_seed(offset)))
    meta = {"languages": languages, "counts": counts, "nsamples": sum(counts.values())}
    save_file({"input_ids": torch.cat(rows)}, str(path), metadata={"langprune": json.dumps(meta)})
    return path


pytestmark = pytest.mark.usefixtures("private_hash_cache")


def test_cli_mwanda_with_cwl_on_a_two_language_mix(tmp_path, tiny_llama_dir):
    shard = _shard(tmp_path / "mix.safetensors", ["de", "en"], {"de": 2, "en": 2})
    ckpt = tmp_path / "mwanda"
    assert main(["prune", "--model", str(tiny_llama_dir), "--calibration", str(shard), "--method", "mwanda",
                 "--sparsity", "0.6", "--allocation", "cwl", "--cwl-lambda", "0.05",
                 "--mwanda-spread-weight", "0.5", "--out", str(ckpt), "--batch-size", "3"]) == 0
    manifest = read_manifest(ckpt)
    assert manifest["method"] == "mwanda"
    assert manifest["method_params"] == {"spread_weight": 0.5, "probability_weight": 1.0}
    cwl = manifest["allocation"]
    assert cwl["name"] == "cwl" and cwl["lambda"] == 0.05 and len(cwl["correlations"]) == 2
    assert all(-1 <= c <= 1 for c in cwl["correlations"])
    assert sum(cwl["layer_sparsity"]) / 2 == pytest.approx(0.6)
    for layer, target in zip(manifest["layers"], cwl["layer_sparsity"]):  # per-row counts round down (64 inputs)
        assert target - 1 / 64 <= layer["sparsity"] <= target


@pytest.mark.parametrize("args,languages,message", [
    (["--method", "mwanda", "--sparsity", "0.5"], ["de"], "--method mwanda needs a calibration shard mixing at "
                                                          "least two languages .this one has: de."),
    (["--method", "wanda", "--sparsity", "0.5", "--allocation", "cwl"], ["de"], "--allocation cwl needs a "
                                                                                "calibration shard mixing"),
    (["--method", "mwanda", "--sparsity", "0.5"], None, "needs the language of every calibration row"),
    (["--method", "wanda", "--structure", "2:4", "--allocation", "cwl"], ["de", "en"], "needs unstructured"),
])
def test_refusals_are_one_line_errors(tmp_path, tiny_llama_dir, capsys, args, languages, message):
    path = tmp_path / "calib.safetensors"
    if languages is None:  # a hand-made shard without `langprune calibrate` metadata
        save_file({"input_ids": torch.randint(3, 320, (4, 32))}, str(path))
    else:
        _shard(path, languages, {lang: 4 // len(languages) for lang in languages})
    rc = main(["prune", "--model", str(tiny_llama_dir), "--calibration", str(path), "--out", str(tmp_path / "c"),
               *args])
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert rc == 2 and len(errors) == 1 and errors[0].startswith("langprune prune: error: ")
    assert re.search(message, errors[0]), errors
    assert not (tmp_path / "c").exists()


def test_a_calibrated_mix_labels_its_rows_and_prunes(tmp_path, tiny_tokenizer_dir, tiny_llama_dir, text_splits):
    """`langprune calibrate`'s metadata is what M-Wanda reads each row's language from."""
    from langprune.data.shards import ShardSpec, build_shard, read_shard

    spec = ShardSpec(tokenizer=str(tiny_tokenizer_dir), source=f"text:{text_splits['calib']}",
                     languages=["sw", "de", "es"], nsamples=5, seqlen=16, seed=0, packing="concat")
    meta = build_shard(spec, tmp_path / "mix.safetensors")
    ids, _ = read_shard(tmp_path / "mix.safetensors")
    assert row_languages(meta) == ["sw", "sw", "de", "de", "es"] and len(row_languages(meta)) == ids.shape[0]
    ckpt = tmp_path / "ckpt"
    assert main(["prune", "--model", str(tiny_llama_dir), "--calibration", str(tmp_path / "mix.safetensors"),
                 "--method", "mwanda", "--sparsity", "0.5", "--out", str(ckpt)]) == 0
    manifest = read_manifest(ckpt)
    assert manifest["allocation"] == {"name": "uniform"} and manifest["method"] == "mwanda"
