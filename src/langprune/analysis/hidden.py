"""Probe text in, hidden states out: one hooked forward pass per (model, probe set).

The dense model's file keeps every layer's mean-pooled state per passage (the reference the
pruned models are compared with) and its MLP activation probabilities (for LAPE). A pruned
model's file keeps only its final embedding and its per-layer distance to that reference, so
a paper-sized grid does not store a full set of hidden states per checkpoint.

Pooling: mean over the passage's real tokens (special tokens such as BOS excluded, because
the first-token "attention sink" state is huge and would dominate every distance).

Only the decoder runs: no state here depends on the LM head, which for a large vocabulary
(Gemma's 262k tokens) costs more than the decoder itself. The model comes from the evaluation's
shared base (:func:`langprune.evaluate.modelload.shared_base`), so a pass inside
`langprune evaluate variant` uses the variant's loaded model and tokenizer.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..data.sources import TextDirSource, split_paragraphs
from ..errors import LangpruneError
from ..evaluate.modelload import evaluation_tokenizer, load_evaluated_model, shared_base
from ..io import check_output, sha256_bytes
from ..models import decoder_layers
from ..variant import variant_labels
from .common import checkpoint_tags, limit_threads
from .drift import layer_distance
from .states import STATES_KIND, read_states, write_states


def probe_source(source: str) -> TextDirSource:
    """Accept the project's ``text:DIR`` source syntax or a plain directory."""
    path = Path(source[len("text:"):] if source.startswith("text:") else source)
    if not path.is_dir():
        raise LangpruneError(f"--probe '{source}' is not a directory of <lang>.txt files (text:DIR)")
    return TextDirSource(path)


def probe_passages(documents: list) -> list[str]:
    """Passages of one language: its blank-line separated paragraphs, or its lines if it has only one."""
    passages = [p for doc in documents for p in split_paragraphs(doc.text)]
    if len(passages) == 1:
        passages = [line.strip() for line in passages[0].splitlines() if line.strip()]
    return passages


def read_probe(source: str, languages: list[str], max_passages: int | None = None) -> dict[str, list[str]]:
    """Parallel probe passages per language, cut to the same count so passage i means the same in all."""
    src = probe_source(source)
    texts: dict[str, list[str]] = {}
    for lang in languages:
        try:
            texts[lang] = probe_passages(src.documents(lang))
        except LangpruneError as exc:
            raise LangpruneError(f"probe text for language '{lang}': {exc}") from exc
    count = min(len(p) for p in texts.values())
    if max_passages:
        count = min(count, max_passages)
    return {lang: passages[:count] for lang, passages in texts.items()}


def probe_fingerprint(texts: dict[str, list[str]], max_length: int) -> str:
    """Hash of exactly what was fed to the model, so a pruned run can check it used the dense run's probe."""
    return sha256_bytes(json.dumps([texts, max_length], ensure_ascii=False, sort_keys=True).encode())


def decoder_parts(model) -> tuple[list[Any], Any]:
    """The decoder layers (found like the pruning engine finds them) and the final norm before the LM head."""
    _, layers = decoder_layers(model)
    base = model.get_decoder() if hasattr(model, "get_decoder") else getattr(model, "model", model)
    norm = getattr(base, "norm", None)
    if norm is None:
        raise LangpruneError(f"cannot find the final norm of {type(model).__name__} (expected model.norm); "
                             "the final-embedding analysis supports llama-style decoders")
    return list(layers), norm


@dataclass
class _Capture:
    """Hook state for one batch: which tokens count, and what the hooks saw."""

    valid: Any = None  # [batch, seq] 0/1 mask of pooled tokens
    layer_means: list = field(default_factory=list)
    final_mean: Any = None
    active: list = field(default_factory=list)

    def pool(self, hidden):
        """Mean over pooled tokens, summed in float32 (bf16 sums over hundreds of tokens lose digits)."""
        weights = self.valid.float().unsqueeze(-1)
        return (hidden.float() * weights).sum(1) / weights.sum(1).clamp_min(1)

    def layer_hook(self, index: int):
        def hook(_module, _inputs, output):
            self.layer_means[index] = self.pool(_first(output))
        return hook

    def final_hook(self, _module, _inputs, output):
        self.final_mean = self.pool(_first(output))

    def gate_hook(self, index: int):
        """Count, per neuron, the pooled tokens on which the gate pre-activation is positive.

        act(x) > 0 exactly when x > 0 for SiLU, GELU and ReLU, so the gate projection's sign is
        the "activated" test of Tang et al. (2024) without relying on how the activation module
        is shared between layers.
        """
        def hook(_module, _inputs, output):
            fired = (output > 0) & self.valid.bool().unsqueeze(-1)
            self.active[index] = fired.sum((0, 1)).to("cpu", torch.int64)
        return hook


def _first(output):
    return output[0] if isinstance(output, (tuple, list)) else output


def _install_hooks(model, capture: _Capture, activations: bool) -> list[Any]:
    """Hooks that pool each layer's output and the final norm's, and (optionally) count MLP activations."""
    layers, norm = decoder_parts(model)
    gates = [getattr(getattr(layer, "mlp", None), "gate_proj", None) for layer in layers]
    if activations and any(gate is None for gate in gates):
        raise LangpruneError("a decoder layer has no mlp.gate_proj; the neuron analysis needs a gated MLP")
    handles = [layer.register_forward_hook(capture.layer_hook(i)) for i, layer in enumerate(layers)]
    handles.append(norm.register_forward_hook(capture.final_hook))
    if activations:
        handles += [gate.register_forward_hook(capture.gate_hook(i)) for i, gate in enumerate(gates)]
    return handles


@contextlib.contextmanager
def _right_padding(tokenizer):
    """The tokenizer pads on the right (with EOS if it has no pad token) inside the block, and is as
    it was after it (the evaluation's runs share one tokenizer)."""
    side, pad = tokenizer.padding_side, tokenizer.pad_token
    if pad is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    try:
        yield tokenizer
    finally:
        tokenizer.padding_side = side
        if pad is None:
            tokenizer.pad_token = None


def collect_states(model, tokenizer, passages: list[str], *, max_length: int = 256, batch_size: int = 8,
                   activations: bool = False) -> dict[str, Any]:
    """Run the passages through the model's decoder once; return pooled states (and activation counts).

    Returns ``layers`` [n_layers, n_passages, hidden], ``final`` [n_passages, hidden] and, with
    ``activations``, ``active`` [n_layers, intermediate] (tokens on which each neuron fired) and
    ``tokens`` (pooled token count).
    """
    layers, _ = decoder_parts(model)
    device = next(model.parameters()).device
    capture = _Capture()
    handles = _install_hooks(model, capture, activations)
    per_layer, finals, active, tokens = [[] for _ in layers], [], None, 0
    try:
        with torch.inference_mode(), _right_padding(tokenizer):
            for start in range(0, len(passages), batch_size):
                batch = tokenizer(passages[start:start + batch_size], return_tensors="pt", padding=True,
                                  truncation=True, max_length=max_length, return_special_tokens_mask=True)
                special = batch.pop("special_tokens_mask")
                valid = batch["attention_mask"] * (1 - special)
                capture.valid = valid.to(device)
                capture.layer_means = [None] * len(layers)
                capture.active = [None] * len(layers)
                model.base_model(input_ids=batch["input_ids"].to(device),
                                 attention_mask=batch["attention_mask"].to(device), use_cache=False)
                for index, pooled in enumerate(capture.layer_means):
                    per_layer[index].append(pooled.cpu())
                finals.append(capture.final_mean.cpu())
                if activations:
                    counts = torch.stack(capture.active)
                    active = counts if active is None else active + counts
                    tokens += int(valid.sum())
    finally:
        for handle in handles:
            handle.remove()
    states = {"layers": torch.stack([torch.cat(chunks) for chunks in per_layer]), "final": torch.cat(finals)}
    if activations:
        states["active"] = active
        states["tokens"] = torch.tensor(tokens, dtype=torch.int64)
    return states


def analysis_models(model: str, checkpoints: list[str] | None, dtype: str | None, device: str,
                    revision: str | None = None):
    """Yield (checkpoint, model in memory): the base is loaded once and each checkpoint applied to it.

    The shared base (:mod:`langprune.evaluate.modelload`, the one an enclosing `evaluate variant`
    holds, if any) restores the base weights between checkpoints, so a job over many checkpoints
    pays one model load. Each checkpoint's manifest must name these base weights.
    """
    with shared_base(join=True):
        for checkpoint in checkpoints or [None]:
            yield checkpoint, load_evaluated_model(model, checkpoint, dtype=dtype, device=device, revision=revision)


def run_hidden(*, model: str, probe: str, languages: list[str], outs: list[str],
               checkpoints: list[str] | None = None, reference: str | None = None,
               tags: dict[str, str] | None = None, max_passages: int | None = 200, max_length: int = 256,
               batch_size: int = 8, dtype: str | None = None, device: str = "cpu", revision: str | None = None,
               seed: int = 0, threads: int | None = None, force: bool = False) -> list[Path]:
    """`langprune analyze hidden`: probe states of the dense model, or of pruned checkpoints against it.

    Without checkpoints: one file with every layer's pooled states and the activation counts
    (the dense reference). With checkpoints (and ``reference``, the dense file): one file per
    checkpoint with its final embedding and per-layer drift. Several checkpoints in one call
    share the tokenizer, the probe text and one process start.
    """
    limit_threads(threads)
    if (checkpoints and len(checkpoints) != len(outs)) or (not checkpoints and len(outs) != 1):
        raise LangpruneError("give one --out per --checkpoint (or one --out for the dense model)")
    if checkpoints and reference is None:
        raise LangpruneError("pruned checkpoints need --reference, the dense model's probe states")
    if batch_size < 1:
        raise LangpruneError(f"--batch-size must be positive, not {batch_size}")
    for out in outs:
        check_output(out, STATES_KIND, force=force, inputs=[model, reference, *(checkpoints or [])])
    texts = read_probe(probe, languages, max_passages)
    fingerprint = probe_fingerprint(texts, max_length)
    ref_tensors = None
    if reference is not None:
        ref_tensors, ref_meta = read_states(reference)
        if ref_meta.get("probe_sha256") != fingerprint:
            raise LangpruneError(f"--reference '{reference}' was computed on other probe text, languages or "
                                 "--max-length; rerun `langprune analyze hidden` for the dense model "
                                 "with the same flags")
    tokenizer = evaluation_tokenizer(model, revision)
    written = []
    for out, (checkpoint, net) in zip(outs, analysis_models(model, checkpoints, dtype, device, revision)):
        torch.manual_seed(seed)
        tensors = probe_tensors(net, tokenizer, texts, ref_tensors, max_length=max_length, batch_size=batch_size)
        meta = {"tags": _labels(model, checkpoint, tags), "languages": languages,
                "n_passages": len(texts[languages[0]]), "max_length": max_length, "probe_sha256": fingerprint,
                "checkpoint": checkpoint, "reference": reference}
        written.append(write_states(out, tensors, meta, force=force))
    return written


def _labels(model: str, checkpoint: str | None, tags: dict[str, str] | None) -> dict[str, str]:
    return variant_labels({"model": model, **checkpoint_tags(checkpoint), **(tags or {})})


def probe_tensors(net, tokenizer, texts: dict[str, list[str]], reference: dict | None, *, max_length: int,
                  batch_size: int) -> dict[str, Any]:
    """Tensors to store for one model: full reference states (dense) or final embedding + drift (pruned).

    The dense pass runs language by language (activation counts are per language); a pruned
    pass batches all languages together, since pooled states do not depend on batch company.
    """
    tensors: dict[str, Any] = {}
    if reference is None:
        for lang, passages in texts.items():
            states = collect_states(net, tokenizer, passages, max_length=max_length, batch_size=batch_size,
                                    activations=True)
            for kind in ("final", "layers", "active", "tokens"):
                tensors[f"{kind}.{lang}"] = states[kind]
        return tensors
    states = collect_states(net, tokenizer, [p for passages in texts.values() for p in passages],
                            max_length=max_length, batch_size=batch_size)
    start = 0
    for lang, passages in texts.items():
        span = slice(start, start + len(passages))
        start += len(passages)
        dense_layers = reference[f"layers.{lang}"]
        tensors[f"final.{lang}"] = states["final"][span].contiguous()
        tensors[f"drift.{lang}"] = layer_distance(states["layers"][:, span], dense_layers)
        tensors[f"dense_norm.{lang}"] = dense_layers.norm(dim=-1).mean(-1)
    return tensors
