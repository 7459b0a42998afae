"""Token perplexity and bits-per-byte per language, in one pass.

As in the paper's code (Wanda's ``eval_ppl``): the evaluation documents are joined into
one text, tokenized once, cut into non-overlapping ``seqlen`` windows, and only the first
``max_tokens`` tokens (a fixed budget per language) are used. Within a window every token
but the first is predicted. Perplexity is ``exp(NLL / predicted tokens)``; bits-per-byte
is ``NLL / (ln 2 * UTF-8 bytes of the text those predicted tokens cover)``, which does not
depend on the tokenizer and so compares models with different vocabularies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from ..errors import LangpruneError

DOCUMENT_JOINER = "\n\n"


@dataclass(frozen=True)
class EvalWindows:
    """Token windows of one language and the UTF-8 bytes their predicted tokens cover."""

    input_ids: list[list[int]]
    scored_bytes: int
    window_bytes: list[int]  # per window; they sum to scored_bytes


def make_windows(text: str, tokenizer, seqlen: int, max_tokens: int, lang: str = "?") -> EvalWindows:
    """Cut the first ``max_tokens`` tokens of ``text`` into non-overlapping ``seqlen`` windows.

    The bytes of a window run from the end of its first (context-only) token to the end
    of its last token, i.e. exactly the text whose tokens are predicted.
    """
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    nwindows = min(len(ids), max_tokens) // seqlen
    if nwindows == 0:
        raise LangpruneError(
            f"evaluation text for '{lang}' has {len(ids)} tokens (budget --max-tokens {max_tokens}); "
            f"one window needs --seqlen {seqlen}: add text or lower --seqlen")
    windows, window_bytes = [], []
    for k in range(nwindows):
        first, last = k * seqlen, (k + 1) * seqlen - 1
        windows.append(ids[first:last + 1])
        window_bytes.append(len(text[offsets[first][1]:offsets[last][1]].encode("utf-8")))
    return EvalWindows(windows, sum(window_bytes), window_bytes)


def window_nll(model, windows: list[list[int]], batch_size: int = 1, device: str = "cpu") -> list[float]:
    """Summed next-token negative log-likelihood (nats, float64) of each window, in window order."""
    import torch
    import torch.nn.functional as F

    sums = []
    with torch.no_grad():
        for start in range(0, len(windows), batch_size):
            batch = torch.tensor(windows[start:start + batch_size], dtype=torch.long, device=device)
            logits = model(input_ids=batch).logits[:, :-1].float()
            targets = batch[:, 1:]
            nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none")
            sums += nll.view(targets.shape).double().sum(dim=1).tolist()
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
    import sys

    from ..io import sha256_file
    from ..checkpoint import checkpoint_identity

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
    from ..data.overlap import DEFAULT_WINDOW, check_disjoint
    from ..data.sources import parse_source
    from ..models import free_memory, load_tokenizer
    from .modelload import load_evaluated_model
    from .results import check_metrics_out, record, write_metrics
    from .units import window_units

    if seqlen < 2 or max_tokens < seqlen:
        raise LangpruneError(f"need --seqlen >= 2 and --max-tokens >= --seqlen (got {seqlen}, {max_tokens})")
    if batch_size < 1:
        raise LangpruneError(f"--batch-size must be positive, not {batch_size}")
    src = parse_source(source)
    check_metrics_out(out, force=force, inputs=[model, checkpoint, getattr(src, "root", None), *calibration])
    src.check_languages(languages)
    tokenizer = load_tokenizer(model, revision=revision)
    texts = {lang: eval_text(src, lang, tokenizer, max_tokens) for lang in languages}
    shards = calibration_shards(list(calibration), checkpoint)
    check_disjoint(texts, shards, overlap_window or DEFAULT_WINDOW)
    windows = {lang: make_windows(texts[lang], tokenizer, seqlen, max_tokens, lang) for lang in languages}
    lm = load_evaluated_model(model, checkpoint, dtype=dtype, device=device, revision=revision)
    records = []
    for lang in languages:
        nlls = window_nll(lm, windows[lang].input_ids, batch_size, device)
        counts = [len(w) - 1 for w in windows[lang].input_ids]
        nll, tokens = math.fsum(nlls), sum(counts)
        units = {"units": window_units(nlls, counts, windows[lang].window_bytes)}
        for metric, value in language_metrics(nll, tokens, windows[lang].scored_bytes).items():
            records.append(record("perplexity", lang, metric, value, tokens, nll=nll,
                                  scored_bytes=windows[lang].scored_bytes, **(units if metric == "perplexity" else {})))
    del lm
    free_memory()
    settings = {"source": src.spec, "languages": languages, "seqlen": seqlen, "max_tokens": max_tokens,
                "revision": revision,
                "calibration": shards, "dtype": dtype, "batch_size": batch_size}
    return write_metrics(out, kind="perplexity", model=model, checkpoint=checkpoint, records=records, tags=tags,
                         settings=settings, force=force)
