"""OWL, RIA and DSnoT against their authors' code on tiny random Llama, Qwen2 and Cohere models.

OWL (MIT) runs from the unchanged copy in tests/reference/owl; the shims below make it run
on a CPU with the installed transformers and are applied here, at run time. RIA and DSnoT
publish no license, so their selection code is re-stated in this file (per row, in plain
loops, independently of the vectorised package code) and fed the engine's statistics.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from conftest import build_model, returned_locals
from langprune.models import decoder_layers
from langprune.prune.allocation import owl_sparsities
from langprune.prune.dense_pass import layer_outlier_ratios
from langprune.prune.engine import prune_model
from langprune.prune.methods import METHODS, get_method
from langprune.prune.stats import MOMENTS, SUMSQ, InputAccumulator
from langprune.prune.structure import n_of_m, unstructured
from langprune.registry import ALLOCATIONS

OWL_M, OWL_LAMBDA = (ALLOCATIONS["owl"].bind()[name] for name in ("M", "lambda"))  # the published defaults
OWL_DIR = Path(__file__).resolve().parent / "reference" / "owl" / "lib"
ARCHS = ("llama", "qwen2", "cohere")
NSAMPLES, SEQLEN = 8, 32


@pytest.fixture(scope="module")
def arch_dirs(tmp_path_factory):
    return {arch: build_model(tmp_path_factory.mktemp(arch), arch, layers=4, hidden=128, intermediate=256, seed=1)
            for arch in ARCHS}


def _load(path):
    return AutoModelForCausalLM.from_pretrained(path).eval()


def _ids():
    return torch.randint(3, 320, (NSAMPLES, SEQLEN), generator=torch.Generator().manual_seed(7))


def _agreement(ours, theirs) -> float:
    return float((ours == theirs).float().mean())


# ---------------------------------------------------------------- OWL: the authors' code, shimmed
@pytest.fixture(scope="module")
def owl_code():
    package = types.ModuleType("owl_reference")
    package.__path__ = [str(OWL_DIR)]
    sys.modules["owl_reference"] = package
    return importlib.import_module("owl_reference.prune_all")


@contextlib.contextmanager
def _shimmed(model, ids, module, monkeypatch):
    """What the 2023-era code needs that this machine lacks: CUDA calls, hub data, old layer kwargs."""
    monkeypatch.setattr(torch.Tensor, "cuda", lambda self, *a, **k: self)  # device shim
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a, **k: None)  # device shim
    monkeypatch.setattr(module, "get_loaders", lambda *a, **k: ([(ids[i:i + 1], None) for i in range(len(ids))], None))
    model.hf_device_map, model.seqlen = {}, ids.shape[1]
    rotary = model.model.rotary_emb

    def add_rotary(layer, args, kwargs):  # transformers >= 4.48 layers take cos/sin from the model
        if kwargs.get("position_embeddings") is None:
            kwargs["position_embeddings"] = rotary(args[0], kwargs["position_ids"])
        return args, kwargs

    handles = [layer.register_forward_pre_hook(add_rotary, with_kwargs=True) for layer in decoder_layers(model)[1]]
    try:
        with contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
            yield
    finally:
        for handle in handles:
            handle.remove()


def _run_owl_reference(code, function, model, ids, sparsity, monkeypatch):
    """Run one of their ``prune_*_outlier`` functions; return their final per-layer density array."""
    args = SimpleNamespace(nsamples=len(ids), seed=0, sparsity_ratio=sparsity, Hyper_m=OWL_M, Lamda=OWL_LAMBDA,
                           use_variant=False, model="tiny-llama")
    with _shimmed(model, ids, code, monkeypatch), returned_locals(function) as seen:
        getattr(code, function)(args, model, None, torch.device("cpu"))
    return np.array(seen["all_layer_ratio"], dtype=np.float64)


def _pruned_masks(model):
    return {f"{name}.weight": module.weight != 0 for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) and ".layers." in name}


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("method,function", [("wanda", "prune_wanda_outlier"), ("sparsegpt", "prune_sparsegpt_outlier"),
                                             ("magnitude", "prune_mag_outlier")])
def test_owl_matches_the_authors_code(arch_dirs, owl_code, monkeypatch, arch, method, function):
    ids, sparsity = _ids(), 0.6
    theirs = _load(arch_dirs[arch])
    densities = _run_owl_reference(owl_code, function, theirs, ids, sparsity, monkeypatch)

    ours = _load(arch_dirs[arch])
    ratios, _ = layer_outlier_ratios(ours, ids, M=OWL_M)
    layer_sparsity = owl_sparsities(ratios, sparsity, OWL_LAMBDA)
    assert max(abs(s - (1 - d)) for s, d in zip(layer_sparsity, densities)) < 1e-6
    assert abs(np.mean(layer_sparsity) - sparsity) < 1e-9 and len(set(layer_sparsity)) > 1
    result = prune_model(ours, METHODS[method], [unstructured(s) for s in layer_sparsity], ids, batch_size=1,
                         measure_error=False, progress=False)
    reference = _pruned_masks(theirs)
    assert set(reference) == set(result.masks)
    for name, keep in reference.items():
        # SparseGPT's own off-by-one (it prunes one weight more per 128-column block, see RESULTS.md) changes
        # its weight updates, so layers after the first see slightly different inputs (measured: >= 98.5%).
        floor = 0.98 if method == "sparsegpt" and ".layers.0." not in name else 0.999
        assert _agreement(result.masks[name], keep) >= floor, name


def test_owl_allocation_edge_cases():
    assert owl_sparsities([2.0, 2.0, 2.0], 0.5, OWL_LAMBDA) == [0.5, 0.5, 0.5]
    spread = owl_sparsities([1.0, 3.0, 2.0, 0.0], 0.7, 0.1)
    assert spread[1] < spread[2] < spread[0] < spread[3] and abs(max(spread) - min(spread) - 0.2) < 1e-12
    from langprune.errors import LangpruneError
    with pytest.raises(LangpruneError, match="owl-lambda"):
        owl_sparsities([0.0, 1.0], 0.97, 0.08)


# ---------------------------------------------------------------- RIA: re-statement of their prune_ria
def _ria_reference(weight, scaler_row, sparsity, prune_n=0, prune_m=0, a=0.5):
    """Their default path: RI * sqrt(scaler_row)**a; per-matrix `<= sorted[int(numel * s)]`, or N:M topk."""
    W = weight.float()
    metric = (W.abs() / W.abs().sum(dim=0) + W.abs() / W.abs().sum(dim=1).reshape(-1, 1)) \
        * torch.sqrt(scaler_row.reshape(1, -1)) ** a
    if prune_n:
        pruned = torch.zeros_like(metric, dtype=torch.bool)
        for start in range(0, metric.shape[1], prune_m):
            block = metric[:, start:start + prune_m]
            pruned.scatter_(1, start + torch.topk(block, prune_n, dim=1, largest=False)[1], True)
        return ~pruned
    thresh = torch.sort(metric.flatten())[0][int(metric.numel() * sparsity)]
    return ~(metric <= thresh)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("structure", [unstructured(0.5), n_of_m(2, 4)], ids=["unstructured", "2:4"])
def test_ria_matches_the_authors_selection(arch_dirs, arch, structure):
    model, references = _load(arch_dirs[arch]), {}

    def on_stats(index, stats):  # the dense layer's weights and inputs, as their code sees them
        for name, module in decoder_layers(model)[1][index].named_modules():
            if isinstance(module, torch.nn.Linear):
                full = next(n for n in stats if n.endswith(name))
                scaler_row = stats[full].sumsq / NSAMPLES  # their running mean over sequences
                references[f"{full}.weight"] = _ria_reference(module.weight, scaler_row, structure.sparsity,
                                                              structure.n, structure.m)

    result = prune_model(model, METHODS["ria"], structure, _ids(), batch_size=2, measure_error=False,
                         progress=False, on_stats=on_stats)
    assert set(references) == set(result.masks)
    for name, keep in references.items():
        assert _agreement(result.masks[name], keep) >= 0.999, name
        if structure.is_nm:
            assert torch.equal(result.masks[name], keep), name


# ---------------------------------------------------------------- DSnoT: re-statement of their prune_DSnoT
def _their_moments(x_per_sequence):
    """Their WrappedGPT.add_batch, one sequence per call: scaler_row, sum_metric_row, var."""
    nsamples, ntokens = 0, 0
    scaler_row = sum_row = var = None
    for x in x_per_sequence:
        inp = x.reshape(-1, x.shape[-1]).t().float()
        var_inp = torch.var(inp, dim=1, unbiased=False)
        count = inp.shape[1]
        var = var_inp if ntokens == 0 else (var * ntokens + var_inp * count) / (ntokens + count)
        ntokens += count
        if scaler_row is None:
            scaler_row, sum_row = torch.zeros(inp.shape[0]), torch.zeros(inp.shape[0])
        scaler_row *= nsamples / (nsamples + 1)
        sum_row *= nsamples / (nsamples + 1)
        nsamples += 1
        scaler_row += torch.norm(inp, p=2, dim=1) ** 2 / nsamples
        sum_row += torch.sum(inp, dim=1) / nsamples
    return scaler_row, sum_row, var


def test_dsnot_statistics_match_the_authors_running_means():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 20, 16, generator=g) * torch.rand(16, generator=g) * 3 + torch.randn(16, generator=g)
    scaler_row, sum_row, var = _their_moments(list(x))
    acc = InputAccumulator(16, frozenset({SUMSQ, MOMENTS}), x.device)
    for rows in (slice(0, 4), slice(4, 6)):  # batches of several sequences
        acc.update(x[rows])
    stats = acc.result("lin")
    torch.testing.assert_close(stats.sumsq / stats.sequences, scaler_row, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(stats.total / stats.sequences, sum_row, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(stats.seq_var, var, rtol=1e-5, atol=1e-6)


def _dsnot_reference(weight, initial_prune, scaler_row, sum_row, var, max_cycle_time=50, update_threshold=0.1,
                     pow_of_var_regrowing=1.0):
    """Their unstructured DSnoT loop (without_same_sign, as their flag's default makes it), row by row."""
    W = weight.float()
    metric = (W * sum_row.reshape(1, -1)).tolist()
    wanda = (W.abs() * torch.sqrt(scaler_row.reshape(1, -1))).tolist()
    rows, cols = W.shape
    pruned = [[False] * cols for _ in range(rows)]
    state = []
    for r in range(rows):
        prune_set = set(initial_prune[r])
        for j in prune_set:
            pruned[r][j] = True
        grow = [metric[r][j] if j in prune_set else 0.0 for j in range(cols)]
        error = torch.tensor(grow).sum().item()
        if pow_of_var_regrowing:
            grow = [g / float(var[j]) ** pow_of_var_regrowing for j, g in enumerate(grow)]
        grow_order = sorted(range(cols), key=lambda j: (grow[j], j))
        kept = sorted((j for j in range(cols) if j not in prune_set), key=lambda j: (wanda[r][j], j))
        negatives = [j for j in kept if metric[r][j] < 0]
        positives = [j for j in kept if metric[r][j] > 0]
        prune_order = negatives + positives[::-1]
        state.append({"error": np.float32(error), "grow": grow_order, "prune": prune_order,
                      "grow_ptr": [0, cols - 1], "prune_ptr": [0, len(kept) - 1], "active": True})
    cycle = 0
    while any(s["active"] for s in state) and cycle < max_cycle_time:
        cycle += 1
        for r, s in enumerate(state):
            side = int(s["error"] > 0)
            grow_idx = s["grow"][s["grow_ptr"][side]]
            s["grow_ptr"][side] += 1 if side == 0 else -1
            side = int(s["error"] < 0)
            prune_idx = s["prune"][s["prune_ptr"][side]]
            s["prune_ptr"][side] += 1 if side == 0 else -1
            s["active"] = s["active"] and abs(float(s["error"])) > update_threshold
            pruned[r][prune_idx] = s["active"]
            pruned[r][grow_idx] = not s["active"]
            if s["active"]:
                s["error"] = np.float32(s["error"] + np.float32(metric[r][prune_idx]))
                s["error"] = np.float32(s["error"] - np.float32(metric[r][grow_idx]))
    return ~torch.tensor(pruned)


@pytest.mark.parametrize("arch", ARCHS)
def test_dsnot_matches_the_authors_loop_given_the_same_initial_mask(arch_dirs, arch):
    model, references, changed = _load(arch_dirs[arch]), {}, []
    sparsity = 0.5

    def on_stats(index, stats):
        for name, module in decoder_layers(model)[1][index].named_modules():
            if isinstance(module, torch.nn.Linear):
                full = next(n for n in stats if n.endswith(name))
                st = stats[full]
                initial, _ = METHODS["wanda"].run(module.weight.data, st, unstructured(sparsity))
                if ".mlp." in full:  # their default --skip_layer mlp
                    references[f"{full}.weight"] = initial
                    continue
                initial_prune = [torch.nonzero(~row).flatten().tolist() for row in initial]
                references[f"{full}.weight"] = _dsnot_reference(
                    module.weight.data, initial_prune, st.sumsq / st.sequences, st.total / st.sequences, st.seq_var)
                changed.append(not torch.equal(references[f"{full}.weight"], initial))

    result = prune_model(model, METHODS["dsnot"], unstructured(sparsity), _ids(), batch_size=2,
                         measure_error=False, progress=False, on_stats=on_stats)
    assert any(changed)  # the refinement did something on these models
    for name, keep in references.items():
        assert torch.equal(result.masks[name], keep), name


def test_dsnot_refuses_nm_and_weight_updating_initials():
    from langprune.errors import LangpruneError

    w = torch.randn(8, 16)
    acc = InputAccumulator(16, frozenset({SUMSQ, MOMENTS}), w.device)
    acc.update(torch.randn(2, 5, 16))
    stats = acc.result("model.layers.0.self_attn.q_proj")
    with pytest.raises(LangpruneError, match="unstructured masks only"):
        METHODS["dsnot"].run(w, stats, n_of_m(2, 4))
    with pytest.raises(LangpruneError, match="--dsnot-initial 'sparsegpt'"):
        get_method("dsnot", initial="sparsegpt").run(w, stats, unstructured(0.5))
    with pytest.raises(LangpruneError, match="no hyperparameter"):
        get_method("ria", alpha=1.0)
