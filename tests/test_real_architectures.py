"""What real models bring, on a tiny random Gemma 3: tied embeddings, sliding-window plus global
attention layers, a BOS-adding tokenizer, and (Gemma 2 style) final-logit soft-capping.

Wanda's masks must be the published per-output-row rule applied to the statistics the engine
collected, and dense perplexity must equal plain transformers on the same windows."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import SAMPLE_TEXT
from langprune.evaluate.perplexity import evaluate_perplexity
from langprune.io import read_json
from langprune.models import layer_linears
from langprune.prune.engine import prune_model
from langprune.prune.methods import METHODS
from langprune.prune.structure import n_of_m, unstructured


def build_tiny_gemma3(out, tokenizer_dir, softcap=None):
    from tokenizers.processors import TemplateProcessing
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    tok.backend_tokenizer.post_processor = TemplateProcessing(single=f"{tok.bos_token} $A",
                                                              special_tokens=[(tok.bos_token, tok.bos_token_id)])
    torch.manual_seed(0)
    config = AutoConfig.for_model(
        "gemma3_text", vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=1, head_dim=16, sliding_window=8, max_position_embeddings=256,
        layer_types=["sliding_attention", "sliding_attention", "full_attention"], final_logit_softcapping=softcap,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def gemma_dirs(tmp_path_factory, tiny_tokenizer_dir):
    root = tmp_path_factory.mktemp("gemma3")
    return {softcap: build_tiny_gemma3(root / str(softcap), tiny_tokenizer_dir, softcap) for softcap in (None, 5.0)}


def published_wanda_rule(weight: torch.Tensor, sumsq: torch.Tensor, structure) -> torch.Tensor:
    """Sun et al. 2024 as their code computes it: score |W_ij| * ||X_j||_2; unstructured: sort
    each output row and prune its lowest half; N:M: prune the N lowest of every M columns."""
    scores = weight.abs() * sumsq.sqrt().reshape(1, -1)
    keep = torch.ones_like(weight, dtype=torch.bool)
    if structure.is_nm:
        for start in range(0, weight.shape[1], structure.m):
            group = scores[:, start:start + structure.m]
            lowest = torch.argsort(group, dim=1, stable=True)[:, :structure.n]
            keep.scatter_(1, start + lowest, False)
        return keep
    order = torch.argsort(scores, dim=1, stable=True)
    keep.scatter_(1, order[:, :int(weight.shape[1] * structure.sparsity)], False)
    return keep


@pytest.mark.parametrize("structure", [unstructured(0.5), n_of_m(2, 4)], ids=["unstructured", "2of4"])
def test_wanda_masks_are_the_per_row_rule_on_the_collected_statistics(gemma_dirs, structure):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(gemma_dirs[None]).eval()
    dense = {name: p.detach().clone() for name, p in model.named_parameters()}
    seen = {}
    ids = torch.randint(3, model.config.vocab_size, (6, 20), generator=torch.Generator().manual_seed(0))
    ids[:, 0] = model.config.bos_token_id
    result = prune_model(model, METHODS["wanda"], structure, ids, batch_size=4, progress=False,
                         on_stats=lambda index, stats: seen.setdefault(index, stats))
    linears = [name for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)
               and name.startswith("model.layers.")]
    assert len(linears) == 3 * 7 and set(result.masks) == {f"{n}.weight" for n in linears}
    for name in linears:
        weight = dense[f"{name}.weight"]
        sumsq = seen[int(name.split(".")[2])][name].sumsq
        expected = published_wanda_rule(weight, sumsq, structure)
        assert torch.equal(result.masks[f"{name}.weight"], expected), name


@pytest.mark.parametrize("softcap", [None, 5.0])
def test_dense_perplexity_equals_plain_transformers_on_bos_windows(tmp_path, gemma_dirs, softcap):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    text_dir = tmp_path / "text"
    text_dir.mkdir()
    text = " ".join([SAMPLE_TEXT["de"], SAMPLE_TEXT["es"], SAMPLE_TEXT["de"][::-1]])
    (text_dir / "de.txt").write_text(text + "\n")
    seqlen, budget = 12, 60
    evaluate_perplexity(str(gemma_dirs[softcap]), f"text:{text_dir}", ["de"], seqlen, budget, tmp_path / "p.json",
                        batch_size=3)
    doc = read_json(tmp_path / "p.json")
    value = {r["metric"]: r for r in doc["records"]}["perplexity"]
    assert doc["settings"]["bos"] is True

    tok = AutoTokenizer.from_pretrained(gemma_dirs[softcap])
    model = AutoModelForCausalLM.from_pretrained(gemma_dirs[softcap]).eval()
    ids = tok(text, add_special_tokens=True)["input_ids"]
    assert ids[0] == tok.bos_token_id
    body = ids[1:budget + 1]
    step = seqlen - 1
    nll, count = 0.0, 0
    for k in range(len(body) // step):
        window = torch.tensor([[tok.bos_token_id] + body[k * step:(k + 1) * step]])
        with torch.no_grad():
            logits = model(input_ids=window).logits[0, :-1].double()
        nll += float(torch.nn.functional.cross_entropy(logits, window[0, 1:], reduction="sum"))
        count += step
    assert value["n"] == count
    assert value["value"] == pytest.approx(math.exp(nll / count), rel=1e-4)


def test_gemma3_layers_and_linears_are_found(gemma_dirs):
    from transformers import AutoModelForCausalLM

    from langprune.models import decoder_layers

    model = AutoModelForCausalLM.from_pretrained(gemma_dirs[None])
    path, layers = decoder_layers(model)
    assert path == "model.layers" and len(layers) == 3
    assert sorted(n.split(".")[-1] for n in layer_linears(layers[0])) == sorted(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])


def test_reconstruction_error_is_measured_on_the_first_batches_within_the_token_budget():
    from langprune.prune.stats import ReconstructionMeter

    torch.manual_seed(0)
    linear = torch.nn.Linear(16, 8, bias=False)
    dense = linear.weight.detach().clone()
    linear.weight.data[:, ::2] = 0.0
    batches = [torch.randn(2, 5, 16) for _ in range(3)]  # 10 tokens each
    meter = ReconstructionMeter({"l": linear}, {"l": dense.clone()}, token_budget=15)
    with meter, torch.no_grad():
        for x in batches:
            linear(x)
    measured = torch.cat(batches[:2]).reshape(-1, 16)  # 10 < 15 tokens after one batch: the second one counts too
    expected = ((measured @ (dense - linear.weight).T).pow(2).sum() / (measured @ dense.T).pow(2).sum()).item()
    assert meter.tokens["l"] == 20
    assert meter.relative_errors()["l"] == pytest.approx(expected, rel=1e-5)
