"""Token perplexity and bits-per-byte per language, in one pass.

As in the paper's code (Wanda's ``eval_ppl``): the evaluation documents are joined into
one text, tokenized once, cut into non-overlapping ``seqlen`` windows, and only the first
``max_tokens`` tokens (a fixed budget per language) are used. Within a window every token
but the first is predicted. Perplexity is ``exp(NLL / predicted tokens)``; bits-per-byte
is ``NLL / (ln 2 * UTF-8 bytes of the text those predicted tokens cover)``, which does not
depend on the tokenizer and so compares models with different vocabularies.

When the tokenizer's own encoding starts text with BOS (``models.bos_prefix``: Gemma,
Llama 3), every window is BOS + ``seqlen - 1`` text tokens and all its text tokens are
predicted; calibration shards are cut the same way. The metrics record ``bos``.

The loss is computed from the final hidden states in chunks of tokens
(``LOGIT_CHUNK_BYTES`` of fp32 logits at a time), so peak memory does not grow with the
vocabulary times the batch: a 262k vocabulary would otherwise need 1 MB per token.
"""

from __future__ import annotations

import math
import sys
import weakref
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..checkpoint import checkpoint_identity
from ..data.overlap import DEFAULT_WINDOW, check_disjoint
from ..data.sources import parse_source
from ..errors import LangpruneError
from ..io import sha256_file
from ..models import bos_prefix
from .modelload import done_with_model, evaluation_tokenizer, load_evaluated_model
from .results import check_metrics_out, record, write_metrics
from .units import record_fingerprint, window_units

DOCUMENT_JOINER = "\n\n"


@dataclass(frozen=True)
class EvalWindows:
    """Token windows of one language and the UTF-8 bytes their predicted tokens cover."""

    input_ids: list[list[int]]
    scored_bytes: int
    window_bytes: list[int]  # per window; they sum to scored_bytes
    bos: bool = False


def make_windows(text: str, tokenizer, seqlen: int, max_tokens: int, lang: str = "?",
                 prefix: list[int] = ()) -> EvalWindows:
    """Cut the first ``max_tokens`` text tokens of ``text`` into non-overlapping windows of ``seqlen``.

    Without a ``prefix`` the bytes of a window run from the end of its first (context-only)
    token to the end of its last token, i.e. exactly the text whose tokens are predicted.
    With a BOS ``prefix`` every text token is predicted and the windows tile the text.
    """
    prefix = list(prefix)
    step = seqlen - len(prefix)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    nwindows = min(len(ids), max_tokens) // step if step > 0 else 0
    if nwindows == 0:
        raise LangpruneError(
            f"evaluation text for '{lang}' has {len(ids)} tokens (budget --max-tokens {max_tokens}); "
            f"one window needs --seqlen {seqlen}: add text or lower --seqlen")
    windows, window_bytes = [], []
    for k in range(nwindows):
        first, last = k * step, (k + 1) * step - 1
        windows.append(prefix + ids[first:last + 1])
        if prefix:
            start = offsets[first - 1][1] if first > 0 else 0
        else:
            start = offsets[first][1]
        window_bytes.append(len(text[start:offsets[last][1]].encode("utf-8")))
    return EvalWindows(windows, sum(window_bytes), window_bytes, bos=bool(prefix))


LOGIT_CHUNK_BYTES = 256 * 2**20


def _logits_fn(model):
    """hidden states -> logits as the model's own forward computes them (head, scaling, soft-capping)."""
    head = model.get_output_embeddings()
    config = model.config
    softcap = getattr(config, "final_logit_softcapping", None)
    scale = getattr(config, "logit_scale", None)  # Cohere multiplies
    divide = getattr(config, "logits_scaling", None)  # Granite divides

    def logits(hidden):  # in place on the fresh head output: each copy of a 262k-wide chunk costs page faults
        out = head(hidden).float()
        if scale is not None:
            out.mul_(scale)
        if divide is not None:
            out.div_(divide)
        if softcap is not None:
            out.div_(softcap).tanh_().mul_(softcap)
        return out

    return logits


_HEAD_CHECKED: "weakref.WeakSet" = weakref.WeakSet()  # models whose head was checked once, not per language


def _chunked_head_matches(model, body, logits_fn, window: list[int], device: str) -> bool:
    """Whether head(hidden) reproduces the model's own last-position logits (one short forward)."""
    ids = torch.tensor([window], dtype=torch.long, device=device)
    own = model(input_ids=ids, logits_to_keep=1).logits[0, -1].float()
    mine = logits_fn(body(input_ids=ids).last_hidden_state[0, -1:])[0]
    return bool(torch.allclose(own, mine, rtol=1e-4, atol=1e-4 * float(own.abs().max())))


def window_nll(model, windows: list[list[int]], batch_size: int = 1, device: str = "cpu") -> list[float]:
    """Summed next-token negative log-likelihood (nats, float64) of each window, in window order.

    The decoder runs once per batch; the head and the loss run over chunks of
    predicted tokens, so no [batch, seqlen, vocab] logits tensor is ever built.
    """
    body = model.base_model
    logits_fn = _logits_fn(model)
    vocab = model.get_output_embeddings().weight.shape[0]
    chunk = max(1, LOGIT_CHUNK_BYTES // (4 * vocab))
    sums: list[float] = []
    with torch.no_grad():
        if windows and model not in _HEAD_CHECKED:
            if _chunked_head_matches(model, body, logits_fn, windows[0], device):
                _HEAD_CHECKED.add(model)
            else:
                raise LangpruneError(f"{type(model).__name__}: the output head applied to the final hidden states "
                                     f"does not reproduce the model's logits (an unknown logit transform); "
                                     f"perplexity for this architecture needs support in evaluate/perplexity.py")
        for start in range(0, len(windows), batch_size):
            batch = torch.tensor(windows[start:start + batch_size], dtype=torch.long, device=device)
            hidden = body(input_ids=batch).last_hidden_state[:, :-1].reshape(-1, model.config.hidden_size)
            targets = batch[:, 1:].reshape(-1)
            per_token = torch.empty(targets.numel(), dtype=torch.float64)
            for t0 in range(0, targets.numel(), chunk):
                logits = logits_fn(hidden[t0:t0 + chunk])
                nll = F.cross_entropy(logits, targets[t0:t0 + chunk], reduction="none")
                per_token[t0:t0 + chunk] = nll.double().cpu()
                del logits
            sums += per_token.view(batch.shape[0], -1).sum(dim=1).tolist()
    return sums


def language_metrics(nll: float, tokens: int, scored_bytes: int) -> dict[str, float]:
    return {"perplexity": math.exp(nll / tokens), "bits_per_byte": nll / (math.log(2) * scored_bytes)}


def eval_text(source, lang: str, tokenizer, max_tokens: int) -> str:
    """Held-out text of one language (mC4 validation, or a text:DIR, which is its own split).

    Documents are read in order until they hold ``max_tokens`` tokens, plus one more
    document as a margin for tokens merging across joins, so streaming mC4 stops early
    and the overlap check covers exactly the text that can be scored.
    """
    parts, tokens = [], 0
    for doc in source.iter_documents(lang, split="validation"):
        parts.append(doc.text)
        if tokens >= max_tokens:
            break
        tokens += len(tokenizer(doc.text, add_special_tokens=False)["input_ids"])
    return DOCUMENT_JOINER.join(parts)


def calibration_shards(explicit: list[str], checkpoint: str | None) -> list[str]:
    """Shards the evaluation text must not overlap: those given, plus the checkpoint's own.

    The checkpoint's manifest records the shard it was calibrated on; it is checked when the
    file is still there with the recorded hash, and a missing one is reported, not ignored.
    """
    shards = list(explicit)
    recorded = (checkpoint_identity(checkpoint)[1].get("calibration") or {})
    path = recorded.get("path")
    if path and str(path) not in map(str, shards):
        if Path(path).is_file() and sha256_file(path) == recorded.get("sha256"):
            shards.append(str(path))
        else:
            print(f"warning: the calibration shard recorded in {checkpoint} ({path}) is missing or changed; "
                  f"pass --calibration SHARD to check the evaluation text against it", file=sys.stderr)
    return shards


def evaluate_perplexity(model: str, source: str, languages: list[str], seqlen: int, max_tokens: int, out: str,
                        *, checkpoint: str | None = None, calibration: list[str] = (), dtype: str | None = None,
                        device: str = "cpu", batch_size: int = 1, tags: dict | None = None,
                        overlap_window: int | None = None, revision: str | None = None,
                        force: bool = False) -> dict:
    """Perplexity and bits-per-byte of ``model`` (+ ``checkpoint``) per language; writes the metrics JSON.

    Evaluation text is first checked to be disjoint from every ``calibration`` shard and
    from the shard recorded in the checkpoint's manifest.
    """
    if seqlen < 2 or max_tokens < seqlen:
        raise LangpruneError(f"need --seqlen >= 2 and --max-tokens >= --seqlen (got {seqlen}, {max_tokens})")
    if batch_size < 1:
        raise LangpruneError(f"--batch-size must be positive, not {batch_size}")
    src = parse_source(source)
    check_metrics_out(out, force=force, inputs=[model, checkpoint, getattr(src, "root", None), *calibration])
    src.check_languages(languages)
    tokenizer = evaluation_tokenizer(model, revision)
    texts = {lang: eval_text(src, lang, tokenizer, max_tokens) for lang in languages}
    shards = calibration_shards(list(calibration), checkpoint)
    check_disjoint(texts, shards, overlap_window or DEFAULT_WINDOW,
                   loaded={model: tokenizer} if revision is None else None)
    prefix = bos_prefix(tokenizer)
    windows = {lang: make_windows(texts[lang], tokenizer, seqlen, max_tokens, lang, prefix) for lang in languages}
    lm = load_evaluated_model(model, checkpoint, dtype=dtype, device=device, revision=revision)
    records = []
    for lang in languages:
        nlls = window_nll(lm, windows[lang].input_ids, batch_size, device)
        counts = [len(w) - 1 for w in windows[lang].input_ids]
        nll, tokens = math.fsum(nlls), sum(counts)
        units = window_units(nlls, counts, windows[lang].window_bytes, windows[lang].input_ids)
        for metric, value in language_metrics(nll, tokens, windows[lang].scored_bytes).items():
            records.append(record("perplexity", lang, metric, value, tokens, nll=nll,
                                  scored_bytes=windows[lang].scored_bytes, fingerprint=record_fingerprint(units),
                                  **({"units": units} if metric == "perplexity" else {})))
    del lm
    done_with_model()
    settings = {"source": src.spec, "languages": languages, "seqlen": seqlen, "max_tokens": max_tokens,
                "revision": revision, "bos": bool(prefix),
                "calibration": shards, "dtype": dtype, "batch_size": batch_size}
    return write_metrics(out, kind="perplexity", model=model, checkpoint=checkpoint, records=records, tags=tags,
                         settings=settings, force=force)
