"""The pruning methods and structures as pure functions, against their published definitions."""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest
import torch

from langprune import registry
from langprune.errors import LangpruneError
from langprune.prune.methods import METHODS, get_method
from langprune.prune.stats import HESSIAN, LANGUAGES, MOMENTS, SUMSQ, InputAccumulator
from langprune.prune.structure import n_of_m, parse_structure, unstructured

# The methods that prune (a quantization method keeps every weight: tests/test_gptq_*.py).
PRUNING = sorted(name for name in METHODS if not registry.METHODS[name].quantizes)


def _stats(x: torch.Tensor, name: str = "layer.lin"):
    acc = InputAccumulator(x.shape[-1], frozenset({SUMSQ, HESSIAN, MOMENTS}), x.device)
    acc.update(x)
    # M-Wanda's per-language sums: the first half of the tokens as one language, the rest as another
    halves = InputAccumulator(x.shape[-1], frozenset({SUMSQ, LANGUAGES}), x.device, row_languages=[0, 1])
    halves.update(x[: x.shape[0] // 2])
    halves.update(x[x.shape[0] // 2:])
    langs = halves.result(name)
    return replace(acc.result(name), language_tokens=langs.language_tokens, language_sumsq=langs.language_sumsq,
                   language_positive=langs.language_positive)


def _correlated_inputs(tokens: int, features: int, seed: int = 0) -> torch.Tensor:
    """Inputs with strongly correlated, unequally scaled features (where OBS updates pay off)."""
    g = torch.Generator().manual_seed(seed)
    latent = torch.randn(tokens, features // 4, generator=g)
    mixing = torch.randn(features // 4, features, generator=g)
    scale = torch.rand(features, generator=g) * 3 + 0.1
    return (latent @ mixing + 0.1 * torch.randn(tokens, features, generator=g)) * scale


def _recon_error(w: torch.Tensor, w_new: torch.Tensor, x: torch.Tensor) -> float:
    return float(((x @ w.T - x @ w_new.T) ** 2).sum() / ((x @ w.T) ** 2).sum())


def _pruned_weight(method: str, w, stats, structure):
    keep, new = METHODS[method].run(w, stats, structure)
    return keep, (w * keep if new is None else new)


@pytest.fixture(scope="module")
def layer():
    torch.manual_seed(0)
    w = torch.randn(24, 64)
    x = _correlated_inputs(512, 64)
    return w, x, _stats(x)


@pytest.mark.parametrize("method", PRUNING)
@pytest.mark.parametrize("sparsity", [0.3, 0.5, 0.77])
def test_unstructured_sparsity_is_exact(layer, method, sparsity):
    w, _, stats = layer
    # DSnoT's 50 cycles need rows well over 2 x 50 wide (see test_dsnot_keeps_row_counts_on_wide_rows)
    keep, _ = METHODS[method].run(w, stats, unstructured(sparsity)) if method != "dsnot" else \
        METHODS[method].bind(max_cycles=8).run(w, stats, unstructured(sparsity))
    if method in ("wanda", "dsnot", "mwanda"):  # per output row (DSnoT swaps one weight for another within a row)
        assert (keep.shape[1] - keep.sum(dim=1) == int(64 * sparsity)).all()
    elif method in ("magnitude", "ria"):  # one threshold per matrix
        assert keep.numel() - int(keep.sum()) == int(keep.numel() * sparsity)
    else:  # sparsegpt: per block of 128 columns over the whole block (one block here)
        assert keep.numel() - int(keep.sum()) == int(keep.numel() * sparsity)


@pytest.mark.parametrize("method", sorted(set(PRUNING) - {"dsnot"}))  # DSnoT refines unstructured masks only
@pytest.mark.parametrize("n,m", [(2, 4), (4, 8), (1, 4)])
def test_nm_sparsity_is_exact_per_group(layer, method, n, m):
    w, _, stats = layer
    keep, new = METHODS[method].run(w, stats, n_of_m(n, m))
    pruned_per_group = (~keep).reshape(w.shape[0], -1, m).sum(dim=-1)
    assert (pruned_per_group == n).all()
    if new is not None:
        assert (new[~keep] == 0).all()


def test_wanda_matches_brute_force_definition():
    # Weights on a coarse grid and repeated input norms force ties; ties go to the lower column.
    g = torch.Generator().manual_seed(3)
    w = torch.randint(-3, 4, (16, 40), generator=g).float()
    x = torch.randint(0, 3, (50, 40), generator=g).float()
    stats = _stats(x)
    for structure in (unstructured(0.5), unstructured(0.35), n_of_m(2, 4)):
        keep, new = METHODS["wanda"].run(w, stats, structure)
        assert new is None
        norms = [float(x[:, j].pow(2).sum().sqrt()) for j in range(40)]
        expected = torch.ones_like(keep)
        for i in range(16):
            width = structure.m if structure.is_nm else 40
            count = structure.n if structure.is_nm else int(40 * structure.sparsity)
            for start in range(0, 40, width):
                cols = range(start, start + width)
                ranked = sorted(cols, key=lambda j: (abs(float(w[i, j])) * norms[j], j))
                for j in ranked[:count]:
                    expected[i, j] = False
        assert torch.equal(keep, expected), structure


@pytest.mark.parametrize("structure", [unstructured(0.5), n_of_m(2, 4)])
def test_sparsegpt_beats_wanda_and_magnitude_on_correlated_inputs(layer, structure):
    w, x, stats = layer
    errors = {m: _recon_error(w, _pruned_weight(m, w, stats, structure)[1], x)
              for m in ("magnitude", "wanda", "sparsegpt")}
    assert errors["sparsegpt"] < errors["wanda"]
    assert errors["sparsegpt"] < errors["magnitude"]


def test_sparsegpt_at_zero_sparsity_keeps_weights(layer):
    w, _, stats = layer
    keep, new = METHODS["sparsegpt"].run(w, stats, unstructured(0.0))
    assert keep.all()
    torch.testing.assert_close(new, w, rtol=1e-5, atol=1e-5)


def test_sparsegpt_handles_dead_inputs_and_multiple_blocks():
    torch.manual_seed(1)
    w = torch.randn(8, 300)  # three blocks of 128, the last one partial
    x = _correlated_inputs(400, 300)
    x[:, [5, 200]] = 0.0
    keep, new = METHODS["sparsegpt"].run(w, _stats(x), unstructured(0.5))
    assert torch.isfinite(new).all()
    assert (new[:, [5, 200]] == 0).all()
    for start in (0, 128, 256):  # per block over the whole block
        block = keep[:, start:start + 128]
        assert block.numel() - int(block.sum()) == int(block.numel() * 0.5)


def test_masks_are_deterministic(layer):
    w, _, stats = layer
    for method in PRUNING:
        first = METHODS[method].run(w, stats, unstructured(0.5))
        second = METHODS[method].run(w.clone(), stats, unstructured(0.5))
        assert torch.equal(first[0], second[0])
        if first[1] is not None:
            assert torch.equal(first[1], second[1])


def test_cholesky_retries_with_more_dampening_then_names_the_layer(caplog):
    from langprune.prune.stats import LinearStats

    w = torch.randn(4, 3)
    barely_indefinite = LinearStats("model.layers.7.mlp.down_proj", 10,
                                    hessian=torch.diag(torch.tensor([1.0, 1.0, -0.05])))
    with caplog.at_level(logging.WARNING, logger="langprune.prune"):
        keep, new = METHODS["sparsegpt"].run(w, barely_indefinite, unstructured(0.34))
    assert torch.isfinite(new).all()
    assert any("retrying" in r.message and "down_proj" in r.message for r in caplog.records)

    hopeless = LinearStats("model.layers.7.mlp.down_proj", 10, hessian=torch.diag(torch.tensor([1.0, 1.0, -100.0])))
    with pytest.raises(LangpruneError, match=r"model\.layers\.7\.mlp\.down_proj.*not positive definite"):
        METHODS["sparsegpt"].run(w, hopeless, unstructured(0.5))


def test_nm_needs_divisible_columns(layer):
    _, _, stats = layer
    with pytest.raises(LangpruneError, match="not divisible by M=8"):
        METHODS["wanda"].run(torch.randn(4, 12), stats, n_of_m(4, 8))


@pytest.mark.parametrize("text,sparsity,message", [
    ("unstructured", 0.0, r"\(0, 1\)"), ("unstructured", 1.0, r"\(0, 1\)"), ("unstructured", -0.2, r"\(0, 1\)"),
    ("unstructured", None, "--sparsity is required"), ("4:2", None, "0 < N < M"), ("0:4", None, "0 < N < M"),
    ("2-4", None, "not 'unstructured' or N:M"), ("2:4", 0.7, "contradicts"),
])
def test_bad_structures_are_clear_errors(text, sparsity, message):
    with pytest.raises(LangpruneError, match=message):
        parse_structure(text, sparsity)


def test_structures_parse():
    assert parse_structure("2:4", None) == n_of_m(2, 4)
    assert parse_structure(" 4:8 ", 0.5).label == "4:8"
    assert parse_structure("unstructured", 0.5).sparsity == 0.5
    with pytest.raises(LangpruneError, match="--method 'obs'"):
        get_method("obs")


def test_dsnot_keeps_row_counts_on_wide_rows_and_warns_on_narrow_ones(caplog):
    torch.manual_seed(2)
    x = _correlated_inputs(256, 512) + 0.5  # nonzero means: the expected error DSnoT corrects
    w, stats = torch.randn(16, 512), _stats(x)
    initial, _ = METHODS["wanda"].run(w, stats, unstructured(0.6))
    keep, _ = METHODS["dsnot"].run(w, stats, unstructured(0.6))
    assert not torch.equal(keep, initial)
    assert torch.equal(keep.sum(dim=1), initial.sum(dim=1))
    effect = w * (stats.total / stats.sequences)
    error = lambda k: (effect * ~k).sum(dim=1).abs()  # noqa: E731
    assert float(error(keep).mean()) < float(error(initial).mean())
    with caplog.at_level(logging.WARNING, logger="langprune.prune"):
        METHODS["dsnot"].run(w[:, :48], _stats(x[:, :48]), unstructured(0.5))
    assert any("narrow" in r.message for r in caplog.records)


@pytest.mark.parametrize("shape,count", [((16, 40), 300), ((1, 7), 3), ((5, 5), 0), ((5, 5), 25), ((64, 64), 2048)])
def test_lowest_overall_equals_a_stable_sort(shape, count):
    from langprune.prune.selection import lowest_overall, lowest_per_row

    g = torch.Generator().manual_seed(count)
    for scores in (torch.rand(shape, generator=g), torch.randint(0, 4, shape, generator=g).float()):  # ties
        expected = lowest_per_row(scores.reshape(1, -1), count).reshape(shape)
        assert torch.equal(lowest_overall(scores, count), expected)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_lowest_per_row_equals_a_stable_sort_at_any_thread_count(threads):
    """On a large matrix, with ties, the selection equals a stable sort whatever torch's thread count."""
    from langprune.prune.selection import kth_smallest, lowest_per_row

    g = torch.Generator().manual_seed(threads)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for scores in (torch.rand(1031, 640, generator=g), torch.randint(0, 5, (1031, 640), generator=g).float()):
            count = 320
            order = torch.sort(scores, dim=-1, stable=True).indices[:, :count]
            expected = torch.ones_like(scores, dtype=torch.bool).scatter_(1, order, False)
            assert torch.equal(lowest_per_row(scores, count), expected)
            assert torch.equal(kth_smallest(scores, count), torch.kthvalue(scores, count, dim=-1, keepdim=True).values)
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("n,m", [(2, 4), (1, 4), (3, 4), (4, 8), (8, 16)])
def test_lowest_per_group_equals_a_stable_sort_within_each_group(n, m):
    """Both paths (pairwise ranks for small M, a selection for large M) prune what a stable sort would."""
    from langprune.prune.selection import lowest_per_group

    g = torch.Generator().manual_seed(m * 10 + n)
    for scores in (torch.rand(37, 8 * m, generator=g), torch.randint(0, 3, (37, 8 * m), generator=g).float()):
        groups = scores.reshape(-1, m)
        order = torch.sort(groups, dim=-1, stable=True).indices[:, :n]
        expected = torch.ones_like(groups, dtype=torch.bool).scatter_(1, order, False).reshape(scores.shape)
        assert torch.equal(lowest_per_group(scores, n, m), expected)


def test_lowest_per_row_finds_a_tie_in_a_single_row():
    """The no-ties shortcut counts kept entries over the whole matrix; one tied row must still be resolved."""
    from langprune.prune.selection import lowest_per_row

    scores = torch.rand(50, 64, generator=torch.Generator().manual_seed(0))
    scores[17, :] = 0.5  # every score of row 17 ties at its threshold
    keep = lowest_per_row(scores, 32)
    assert keep.sum(dim=-1).tolist() == [32] * 50
    assert keep[17].tolist() == [False] * 32 + [True] * 32
