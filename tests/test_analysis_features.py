"""LSAR split on synthetic embeddings whose language directions are known."""

import pytest
import torch

from langprune.analysis.features import (
    default_rank,
    feature_change,
    features_table,
    fit_language_subspace,
    observation_check,
    split_features,
)
from langprune.errors import LangpruneError

LANGS = ["ar", "de", "en", "sw"]


def synthetic(n=40, dim=24, seed=0):
    """e[k, i] = language offset u_k + shared content c_i + small noise; u and c in orthogonal subspaces."""
    gen = torch.Generator().manual_seed(seed)
    basis, _ = torch.linalg.qr(torch.randn(dim, dim, generator=gen, dtype=torch.float64))
    lang_dirs, content_dirs = basis[:, :len(LANGS)], basis[:, len(LANGS):]
    offsets = 5.0 * lang_dirs.T  # one orthogonal direction per language
    content = torch.randn(n, content_dirs.shape[1], generator=gen, dtype=torch.float64) @ content_dirs.T
    noise = lambda: 1e-3 * torch.randn(n, dim, generator=gen, dtype=torch.float64)  # noqa: E731
    return {lang: offsets[k] + content + noise() for k, lang in enumerate(LANGS)}, offsets, content


def test_default_rank_spans_the_centred_language_means():
    assert default_rank(7) == 6
    embeddings, offsets, _ = synthetic()
    basis = fit_language_subspace(embeddings)
    assert basis.shape == (24, 3)
    centred = offsets - offsets.mean(0)
    # every centred language offset lies inside the fitted subspace
    assert torch.allclose(centred @ basis @ basis.T, centred, atol=1e-2)
    # and the subspace is orthonormal
    assert torch.allclose(basis.T @ basis, torch.eye(3, dtype=basis.dtype), atol=1e-8)


def test_split_separates_language_from_content():
    embeddings, offsets, content = synthetic()
    basis = fit_language_subspace(embeddings)
    parts = {lang: split_features(e, basis) for lang, e in embeddings.items()}
    mean_offset = offsets.mean(0)
    for k, lang in enumerate(LANGS):
        specific, agnostic = parts[lang]
        assert torch.allclose(specific, (offsets[k] - mean_offset).expand_as(specific), atol=1e-2)
        assert torch.allclose(agnostic, content + mean_offset, atol=1e-2)
        assert torch.allclose(specific + agnostic, embeddings[lang])
    # parallel passages have (almost) the same language-agnostic part in every language
    assert torch.allclose(parts["ar"][1], parts["sw"][1], atol=1e-2)


def test_change_lands_in_the_component_that_was_moved():
    embeddings, offsets, content = synthetic()
    basis = fit_language_subspace(embeddings)
    centred = offsets - offsets.mean(0)
    moved_language = embeddings["de"] + 0.5 * centred[1]
    moved_content = embeddings["de"] + 0.5 * content[:1]
    lang_change = feature_change(moved_language, embeddings["de"], basis)
    content_change = feature_change(moved_content, embeddings["de"], basis)
    assert lang_change["specific"] > 1.0 and lang_change["agnostic"] < 1e-2
    assert content_change["agnostic"] > 0.1 and content_change["specific"] < 1e-2


def test_rank_out_of_range_is_a_user_error():
    embeddings, _, _ = synthetic()
    with pytest.raises(LangpruneError, match="--rank"):
        fit_language_subspace(embeddings, rank=len(LANGS))
    with pytest.raises(LangpruneError, match="two languages"):
        fit_language_subspace({"en": embeddings["en"]})


def test_observation_check_reads_the_claims_from_the_table():
    embeddings, offsets, content = synthetic()
    centred = offsets - offsets.mean(0)
    variants = []
    for k, calib in enumerate(LANGS):
        # calibrating in language k moves every language's s, except k's own, by the same amount;
        # a moves by a small calibration-independent amount
        final = {}
        for j, lang in enumerate(LANGS):
            shift = (0.0 if j == k else 0.3 * centred[j]) + 0.2 * content[0]
            final[f"final.{lang}"] = (embeddings[lang] + shift).float()
        label = {"model": "m", "method": "wanda", "structure": "unstructured", "sparsity": "0.5",
                 "calib": calib, "seed": "0"}
        variants.append((label, final))
    # a mixed calibration set that moves nothing is plotted but, as in the paper, not compared
    mix = {"model": "m", "method": "wanda", "structure": "unstructured", "sparsity": "0.5", "calib": "all4",
           "seed": "0"}
    variants.append((mix, {f"final.{lang}": embeddings[lang].float() for lang in LANGS}))
    dense = {lang: e.float() for lang, e in embeddings.items()}
    table = features_table(dense, variants)
    assert set(table["component"]) == {"agnostic", "specific"}
    assert len(table) == (len(LANGS) + 1) * len(LANGS) * 2
    check = observation_check(table).iloc[0]
    assert check["specific_target_min"] == 1.0 and check["specific_target_least"]
    assert check["specific_target_languages"] == "ar de en sw"
    assert check["agnostic_stable"]
