"""The layer-by-layer engine on tiny random Llama-family and Cohere models."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from conftest import build_model
from langprune import registry
from langprune.errors import LangpruneError
from langprune.models import decoder_layers, layer_linears
from langprune.prune.engine import capture_layer_inputs, prune_model, run_layer
from langprune.prune.methods import METHODS
from langprune.prune.stats import SUMSQ, LayerStatsCollector
from langprune.prune.structure import n_of_m, unstructured

EXPECTED_SHARED = {
    "llama": [{"q_proj", "k_proj", "v_proj"}, {"o_proj"}, {"gate_proj", "up_proj"}, {"down_proj"}],
    "mistral": [{"q_proj", "k_proj", "v_proj"}, {"o_proj"}, {"gate_proj", "up_proj"}, {"down_proj"}],
    "qwen2": [{"q_proj", "k_proj", "v_proj"}, {"o_proj"}, {"gate_proj", "up_proj"}, {"down_proj"}],
    "cohere": [{"q_proj", "k_proj", "v_proj", "gate_proj", "up_proj"}, {"o_proj"}, {"down_proj"}],
}


@pytest.fixture(scope="module")
def arch_dirs(tmp_path_factory):
    return {arch: build_model(tmp_path_factory.mktemp(arch), arch) for arch in EXPECTED_SHARED}


def _load(path):
    return AutoModelForCausalLM.from_pretrained(path).eval()


def _ids(n=6, seqlen=24, seed=0):
    return torch.randint(3, 320, (n, seqlen), generator=torch.Generator().manual_seed(seed))


def _assert_replay_matches_forward(model, ids):
    with torch.no_grad():
        hidden = model(ids, output_hidden_states=True).hidden_states
        inputs, kwargs = capture_layer_inputs(model, ids, batch_size=4, device=torch.device("cpu"))
        _, layers = decoder_layers(model)
        assert set(kwargs) == {4, ids.shape[0] - 4}  # one set of kwargs per batch size seen
        assert all(len(per_layer) == len(layers) for per_layer in kwargs.values())
        torch.testing.assert_close(inputs, hidden[0])
        x = inputs[:4]
        for index, layer in enumerate(layers):
            x = run_layer(layer, x, kwargs[4][index])
            if index < len(layers) - 1:  # the last entry of hidden_states is after the final norm
                torch.testing.assert_close(x, hidden[index + 1][:4], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("arch", sorted(EXPECTED_SHARED))
def test_captured_kwargs_replay_the_real_forward(arch_dirs, arch):
    model = _load(arch_dirs[arch])
    _assert_replay_matches_forward(model, _ids())
    for layer in decoder_layers(model)[1]:
        assert "forward" not in vars(layer)  # the recorders are gone


def test_per_layer_kwargs_follow_mixed_attention_types():
    """Qwen2 with sliding-window layers passes each layer its own mask; replay must too."""
    from transformers import AutoConfig

    config = AutoConfig.for_model("qwen2", vocab_size=320, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                                  num_key_value_heads=2, intermediate_size=64, use_sliding_window=True,
                                  sliding_window=4, max_window_layers=1, attn_implementation="eager")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    assert len(set(model.config.layer_types)) == 2
    _assert_replay_matches_forward(model, _ids(n=6, seqlen=16))


@pytest.mark.parametrize("arch", sorted(EXPECTED_SHARED))
def test_shared_input_groups_are_discovered(arch_dirs, arch):
    model = _load(arch_dirs[arch])
    inputs, kwargs = capture_layer_inputs(model, _ids(n=2), 2, torch.device("cpu"))
    _, layers = decoder_layers(model)
    linears = layer_linears(layers[0], "model.layers.0")
    with torch.no_grad(), LayerStatsCollector(linears, frozenset({SUMSQ})) as collector:
        collector.start_batch()
        run_layer(layers[0], inputs, kwargs[2][0])
    groups = [{name.rsplit(".", 1)[-1] for name in members} for members in collector.groups().values()]
    assert sorted(map(sorted, groups)) == sorted(map(sorted, EXPECTED_SHARED[arch]))
    stats = collector.results()
    assert stats["model.layers.0.self_attn.q_proj"].sumsq is stats["model.layers.0.self_attn.k_proj"].sumsq
    assert stats["model.layers.0.self_attn.q_proj"].sumsq.dtype == torch.float32


@pytest.mark.parametrize("arch,method", [(arch, method) for arch in ("llama", "cohere")
                                         for method in sorted(set(METHODS) - {"dsnot"})
                                         if not registry.METHODS[method].quantizes]  # dsnot: unstructured only
                         + [("qwen2", "sparsegpt"), ("mistral", "wanda")])
def test_prunes_only_decoder_linears(arch_dirs, arch, method):
    model = _load(arch_dirs[arch])
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    result = prune_model(model, METHODS[method], n_of_m(2, 4), _ids(), batch_size=4, progress=False,
                         row_languages=[0, 1, 0, 1, 0, 1])  # read by mwanda only
    pruned = set(result.masks)
    assert pruned == {f"{n}.weight" for n, _ in model.named_modules() if isinstance(_, torch.nn.Linear)
                      and ".layers." in n}
    for name, param in model.named_parameters():
        if name in pruned:
            assert float((param == 0).float().mean()) >= 0.5
        else:  # embeddings, norms, lm_head, biases
            assert torch.equal(param, before[name]), name
    assert all(report.sparsity == 0.5 and report.rel_error is not None and report.rel_error > 0
               for report in result.layers)


def test_propagation_is_sequential(arch_dirs):
    """Layer 1's statistics must equal those of the *pruned* layer 0's outputs, not the dense ones."""
    ids = _ids(n=4)
    seen = {}
    model = _load(arch_dirs["llama"])
    prune_model(model, METHODS["wanda"], unstructured(0.5), ids, batch_size=2, progress=False,
                on_stats=lambda index, stats: seen.setdefault(index, stats))

    def q_proj_sumsq(m):
        captured = []
        _, layers = decoder_layers(m)
        hook = layers[1].self_attn.q_proj.register_forward_pre_hook(lambda mod, args: captured.append(args[0]))
        with torch.no_grad():
            m(ids)
        hook.remove()
        return torch.cat([c.reshape(-1, c.shape[-1]) for c in captured]).pow(2).sum(0)

    recorded = seen[1]["model.layers.1.self_attn.q_proj"].sumsq
    torch.testing.assert_close(recorded, q_proj_sumsq(model), rtol=1e-4, atol=1e-4)  # pruned model: same
    dense = q_proj_sumsq(_load(arch_dirs["llama"]))
    assert not torch.allclose(recorded, dense, rtol=1e-3, atol=1e-3)


def test_offload_and_batch_size_give_the_same_masks(arch_dirs):
    ids = _ids()
    runs = []
    for offload, batch_size in [(False, 6), (True, 6), (True, 1)]:
        model = _load(arch_dirs["cohere"])
        runs.append(prune_model(model, METHODS["wanda"], unstructured(0.5), ids, batch_size=batch_size,
                                offload=offload, progress=False))
    for other in runs[1:]:  # bit-identical: statistics are summed per sequence in a fixed order
        assert all(torch.equal(runs[0].masks[n], other.masks[n]) for n in runs[0].masks)


def test_magnitude_runs_without_calibration_and_others_refuse(arch_dirs):
    model = _load(arch_dirs["llama"])
    result = prune_model(model, METHODS["magnitude"], unstructured(0.5), None, progress=False)
    assert all(r.rel_error is None and r.sparsity == 0.5 for r in result.layers)
    with pytest.raises(LangpruneError, match="--calibration"):
        prune_model(model, METHODS["wanda"], unstructured(0.5), None, progress=False)


def test_method_warnings_reach_the_layer_report(arch_dirs, monkeypatch):
    """A Cholesky retry is reported per layer (and so in the manifest), not only on stderr."""
    real_cholesky = torch.linalg.cholesky_ex
    state = {"fail_next": True}

    def first_attempt_fails(matrix, upper=False):
        """Every linear's first factorisation reports failure; the retry and the inverse succeed."""
        if upper:
            state["fail_next"] = True
        elif state["fail_next"]:
            state["fail_next"] = False
            return matrix, torch.tensor(1)
        return real_cholesky(matrix, upper=upper)

    monkeypatch.setattr(torch.linalg, "cholesky_ex", first_attempt_fails)
    model = _load(arch_dirs["llama"])
    result = prune_model(model, METHODS["sparsegpt"], unstructured(0.5), _ids(n=2), batch_size=2, progress=False)
    assert all(any("retrying" in w for w in layer.warnings) for layer in result.layers)


@pytest.mark.parametrize("arch", ["llama", "cohere"])
def test_batch_size_does_not_change_sparsegpt_values(arch_dirs, arch):
    """Statistics are summed one sequence at a time in a fixed order, so with the same thread count
    the pruned weights (masks and SparseGPT's updated values) are bit-identical for any --batch-size."""
    ids = _ids()
    weights = []
    for batch_size in (1, 4, 6):
        model = _load(arch_dirs[arch])
        result = prune_model(model, METHODS["sparsegpt"], unstructured(0.5), ids, batch_size=batch_size,
                             progress=False)
        params = dict(model.named_parameters())
        weights.append({name: params[name].detach().clone() for name in result.masks})
    for other in weights[1:]:
        for name, value in weights[0].items():
            assert torch.equal(value, other[name]), name
