"""Shared-context scoring for lm-eval: each distinct context is run once for all its continuations.

lm-eval's ``HFLM`` runs ``context + continuation[:-1]`` once per request, so the four
HellaSwag endings or ARC answers re-run the same context four times. A causal model's
log-likelihood of a continuation depends only on the tokens before it, so
:class:`SharedContextLM` packs one context and all its continuations into a single row,
``context | cont_1[:-1] | cont_2[:-1] | ...``, with

- a block-causal attention mask: a continuation token sees the context and the earlier
  tokens of its own continuation, never another continuation's;
- position ids that restart at ``len(context)`` for each continuation, so every scored
  token has exactly the position (and the attended keys) it has in HFLM's own sequence.

The scores are therefore HFLM's up to floating-point summation order. Rows are right-padded
(pad tokens see only themselves and are never seen) and batched by a token budget
(``batch_tokens`` = rows x padded row length) instead of a fixed request count, never padding
more than HFLM's sorted fixed-size batches would; only the positions that predict continuation
tokens go through the LM head and the log-softmax.

Everything else is HFLM's: tokenization (``_encode_pair`` with its trailing-space rule),
``generate_until`` (MKQA) and ``loglikelihood_rolling``. Requests this packing cannot
reproduce exactly fall back to HFLM's own ``_loglikelihood_tokens``: a context plus
continuation longer than ``max_length + 1`` (HFLM truncates it from the left per request),
one longer than the model's sliding window, or an attention implementation without
arbitrary masks (only ``sdpa`` and ``eager`` take one).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM

from ..errors import LangpruneError
from .perplexity import LOGIT_CHUNK_BYTES

DEFAULT_BATCH_TOKENS = 4096
MASKED_ATTENTION = ("sdpa", "eager")

Request = tuple[tuple[str, str] | None, list[int], list[int]]


@dataclass
class ContextRow:
    """One distinct context and the requests (by index) whose continuations are scored from it."""

    context: list[int]
    continuations: list[list[int]] = field(default_factory=list)
    requests: list[int] = field(default_factory=list)

    @property
    def bodies(self) -> list[tuple[int, ...]]:
        """The distinct continuation bodies (all tokens but the last, which is only predicted), first
        seen first: continuations that differ only in their last token share one body, as HFLM's
        one-token lookup shares ``context + continuation[:-1]`` (e.g. " A".." D" tokenized as
        " " + letter)."""
        return list(dict.fromkeys(tuple(c[:-1]) for c in self.continuations))

    @property
    def length(self) -> int:
        return len(self.context) + sum(map(len, self.bodies))

    @property
    def causal(self) -> bool:
        """At most one body has tokens: the row is one ordinary causal sequence."""
        return sum(len(b) > 0 for b in self.bodies) <= 1


def group_by_context(requests: list[Request], fits) -> tuple[list[ContextRow], list[int]]:
    """Rows of identical context token lists (first-seen order), and the indices ``fits`` rejects."""
    rows: dict[tuple[int, ...], ContextRow] = {}
    rejected = []
    for i, (_, context, continuation) in enumerate(requests):
        if not fits(context, continuation):
            rejected.append(i)
            continue
        row = rows.setdefault(tuple(context), ContextRow(list(context)))
        row.continuations.append(list(continuation))
        row.requests.append(i)
    return list(rows.values()), rejected


def token_budget_batches(rows: list[ContextRow], batch_tokens: int, pad_like: int) -> list[list[ContextRow]]:
    """Rows, longest first, in batches whose padded size (rows x longest row) stays within the budget
    and whose padding never exceeds HFLM's.

    HFLM sorts its sequences longest first and cuts them into batches of ``pad_like``
    (its batch size), each padded to its first. A row joins the current batch only while the
    padding spent so far stays within what those fixed-size batches would spend on the same
    rows so far; for rows that are HFLM's own sequences (letter answers: one context, one-token
    continuations) the shared backend therefore never runs more tokens than HFLM, and rows of
    equal length fill the budget. Causal rows (see :attr:`ContextRow.causal`) and rows that need
    the block mask are batched apart, so that a batch of causal rows runs with the plain causal
    mask as HFLM's does. A row longer than the budget is a batch of its own.
    """
    batches: list[list[ContextRow]] = []
    for causal in (True, False):
        ordered = sorted((r for r in rows if r.causal == causal), key=lambda r: -r.length)
        allowed = spent = 0
        for i, row in enumerate(ordered):
            allowed += ordered[i - i % max(1, pad_like)].length - row.length
            head = batches[-1][0].length if i else 0
            if head and (len(batches[-1]) + 1) * head <= batch_tokens and spent + head - row.length <= allowed:
                batches[-1].append(row)
                spent += head - row.length
            else:
                batches.append([row])
    return batches


def hflm_padded_tokens(requests: list[Request], batch_size: int) -> int:
    """Tokens HFLM runs for ``requests``, padding included: its distinct sequences (context +
    continuation[:-1]) longest first in batches of ``batch_size``, each padded to its first."""
    lengths = sorted(map(len, {tuple(r[1] + r[2][:-1]) for r in requests}), reverse=True)
    return sum(lengths[i] * len(lengths[i:i + batch_size]) for i in range(0, len(lengths), max(1, batch_size)))


def pack_rows(rows: list[ContextRow], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Input ids, position ids and segment ids ([rows, width]) of right-padded packed rows.

    Segment 0 is the context, segment j + 1 body j (see :attr:`ContextRow.bodies`), -1 padding.
    """
    width = max(r.length for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    segments = torch.full((len(rows), width), -1, dtype=torch.long)
    for b, row in enumerate(rows):
        n = len(row.context)
        ids[b, :n] = torch.tensor(row.context)
        positions[b, :n] = torch.arange(n)
        segments[b, :n] = 0
        start = n
        for j, body in enumerate(row.bodies):
            ids[b, start:start + len(body)] = torch.tensor(body, dtype=torch.long)
            positions[b, start:start + len(body)] = torch.arange(n, n + len(body))
            segments[b, start:start + len(body)] = j + 1
            start += len(body)
    return ids, positions, segments


def block_causal_mask(segments: torch.Tensor) -> torch.Tensor:
    """[rows, 1, width, width] bool mask, True = may attend.

    A token attends to earlier-or-same tokens of the context and of its own segment; a pad
    token attends only to itself (so no attention row is empty) and is attended by none.
    """
    width = segments.shape[1]
    index = torch.arange(width, device=segments.device)
    causal = index[None, :] <= index[:, None]
    query, key = segments[:, :, None], segments[:, None, :]
    mask = causal & ((key == 0) | (key == query)) & (key >= 0) & (query >= 0)
    mask |= torch.eye(width, dtype=torch.bool, device=segments.device) & (query < 0)
    return mask[:, None]


def continuation_positions(row: ContextRow) -> list[list[int]]:
    """For each continuation, the row positions whose logits predict its tokens."""
    starts, start = {}, len(row.context)
    for body in row.bodies:
        starts[body] = start
        start += len(body)
    return [[len(row.context) - 1] + list(range(starts[tuple(c[:-1])], starts[tuple(c[:-1])] + len(c) - 1))
            for c in row.continuations]


@dataclass
class Targets:
    """Every scored token of a batch: the kept-logit row that predicts it, its id, and its request.

    Requests are numbered in row order, continuations in order within a row.
    """

    position: list[int] = field(default_factory=list)
    token: list[int] = field(default_factory=list)
    request: list[int] = field(default_factory=list)
    requests: int = 0


def scored_targets(rows: list[ContextRow]) -> Targets:
    """The targets of packed rows whose kept positions are ``[len(context) - 1, length)`` of each row.

    The last context position predicts each continuation's first token; continuation j's
    token k (k >= 1) is predicted by its own token k - 1 in the row.
    """
    out, offset = Targets(), 0
    for row in rows:
        for cont, where in zip(row.continuations, continuation_positions(row), strict=True):
            out.position += [offset + p - (len(row.context) - 1) for p in where]
            out.token += cont
            out.request += [out.requests] * len(cont)
            out.requests += 1
        offset += row.length - len(row.context) + 1
    return out


def score_targets(logits: torch.Tensor, targets: Targets, softmax_dtype: torch.dtype | None,
                  device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Per request: the summed log-probabilities of its tokens and whether each was the argmax.

    ``logits`` is [kept positions, vocab]; the log-softmax runs over chunks of positions, so a
    large vocabulary (Gemma's 262k) never holds a second full-size copy.
    """
    position = torch.tensor(targets.position, dtype=torch.long, device=device)
    token = torch.tensor(targets.token, dtype=torch.long, device=device)
    request = torch.tensor(targets.request, dtype=torch.long, device=device)
    logprob = torch.empty(len(targets.token), dtype=softmax_dtype or logits.dtype, device=device)
    hit = torch.empty(len(targets.token), dtype=torch.bool, device=device)
    step = max(1, LOGIT_CHUNK_BYTES // (4 * logits.shape[-1]))  # the perplexity loop's chunk: 256 MB of fp32
    for start in range(0, logits.shape[0], step):
        chunk = F.log_softmax(logits[start:start + step], dim=-1, dtype=softmax_dtype)
        inside = (position >= start) & (position < start + step)
        where, tok = position[inside] - start, token[inside]
        logprob[inside] = chunk[where, tok]
        hit[inside] = chunk.argmax(dim=-1)[where] == tok
    # Each request's sum over its own contiguous slice, in HFLM's order (a scatter-add's order
    # differs by float32 rounding, which reaches 1e-4 on sums of hundreds).
    lengths = torch.bincount(request, minlength=targets.requests).tolist()
    sums = torch.stack([part.sum() for part in logprob.split(lengths)])
    misses = torch.zeros(targets.requests, dtype=torch.long, device=device).index_add_(0, request, (~hit).long())
    return sums.cpu(), (misses == 0).cpu()


def sliding_window(config) -> int | None:
    """The smallest attention window any layer of the model may use (None: all layers attend fully)."""
    windows = [getattr(config, key, None) for key in ("sliding_window", "attention_window")]
    windows = [w for w in windows if isinstance(w, int) and w > 0]
    layer_types = getattr(config, "layer_types", None)
    if layer_types is not None and "sliding_attention" not in layer_types:
        return None  # e.g. Qwen2 with use_sliding_window false: the window is configured but unused
    return min(windows, default=None)


@register_model("langprune-shared")
class SharedContextLM(HFLM):
    """HFLM whose log-likelihood requests run each distinct context once (see module docstring)."""

    def __init__(self, *args, batch_tokens: int = DEFAULT_BATCH_TOKENS, **kwargs):
        super().__init__(*args, **kwargs)
        if batch_tokens <= 0:
            raise ValueError(f"batch_tokens must be positive, not {batch_tokens}")
        self.batch_tokens = int(batch_tokens)
        # Tokens run: rows x padded width, the rows' own lengths, and what HFLM would run
        # (context + continuation - 1 per distinct such sequence: HFLM already shares one-token
        # continuations), without and with its batch padding, so that a run can report its saving.
        self.stats = {"rows": 0, "padded_tokens": 0, "row_tokens": 0, "hflm_tokens": 0, "hflm_padded_tokens": 0}

    @property
    def _pad_like(self) -> int:
        """HFLM's batch size, whose padding the token-budget batches stay within (1 for ``auto``)."""
        return self.batch_size if isinstance(self.batch_size, int) else 1

    def _packs_exactly(self) -> bool:
        return self.backend == "causal" and self.model.config._attn_implementation in MASKED_ATTENTION

    def _fits(self, context: list[int], continuation: list[int]) -> bool:
        """True when the packed row reproduces HFLM's sequence for this request token for token."""
        length = len(context) + len(continuation)
        window = sliding_window(self.model.config)
        return length <= self.max_length + 1 and (window is None or length - 1 <= window)

    def _loglikelihood_tokens(self, requests: list[Request], disable_tqdm: bool = False,
                              override_bs: int | None = None) -> list[tuple[float, bool]]:
        if not self._packs_exactly():
            return super()._loglikelihood_tokens(requests, disable_tqdm=disable_tqdm, override_bs=override_bs)
        rows, rejected = group_by_context(requests, self._fits)
        self.stats["hflm_tokens"] += sum(map(len, {tuple(r[1] + r[2][:-1]) for r in requests}))
        self.stats["hflm_padded_tokens"] += hflm_padded_tokens(requests, self._pad_like)
        results: list[tuple[float, bool] | None] = [None] * len(requests)
        if rejected:
            plain = super()._loglikelihood_tokens([requests[i] for i in rejected], disable_tqdm=True,
                                                  override_bs=override_bs)
            for i, answer in zip(rejected, plain, strict=True):
                results[i] = answer
        for batch in token_budget_batches(rows, self.batch_tokens, self._pad_like):
            for row, answers in zip(batch, self._score_batch(batch), strict=True):
                for i, answer in zip(row.requests, answers, strict=True):
                    results[i] = answer
                    request_str = requests[i][0]
                    if request_str is not None:
                        self.cache_hook.add_partial("loglikelihood", request_str, answer)
        return results

    def _logits(self, ids: torch.Tensor, positions: torch.Tensor | None, mask: torch.Tensor | None,
                keep: torch.Tensor) -> torch.Tensor:
        """[kept positions, vocab] logits of the ``keep`` ([rows, width] bool) positions, row-major.

        The model's own forward computes them (``logits_to_keep`` as a boolean mask, which
        transformers' causal LMs apply to the decoder's hidden states before their LM head), so
        the head's own post-processing applies as in HFLM's full logits: Gemma's
        ``final_logit_softcapping``, Cohere's ``logit_scale``. A model without
        ``logits_to_keep`` computes every position, and the kept ones are selected after.
        Autocast as HFLM's; no mask means the model's causal mask.
        """
        kwargs = {"logits_to_keep": keep} if self._keeps_logits else {}
        with torch.no_grad(), torch.autocast(device_type=self.device.type, dtype=self.mixed_precision_dtype,
                                             enabled=self.mixed_precision_dtype is not None):
            logits = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False,
                                **kwargs).logits
        return logits[keep] if logits.dim() == 3 else logits

    @property
    def _keeps_logits(self) -> bool:
        return "logits_to_keep" in inspect.signature(self.model.forward).parameters

    def _score_batch(self, rows: list[ContextRow]) -> list[list[tuple[float, bool]]]:
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids, positions, segments = (t.to(self.device) for t in pack_rows(rows, pad))
        self.stats["rows"] += len(rows)
        self.stats["padded_tokens"] += ids.numel()
        self.stats["row_tokens"] += sum(r.length for r in rows)
        if all(r.causal for r in rows):  # right padding only: the model's own causal mask is exact
            positions, mask = None, None
        else:
            mask = block_causal_mask(segments)
            if self.model.config._attn_implementation == "eager":
                dtype = self.model.dtype
                mask = torch.zeros(mask.shape, dtype=dtype, device=self.device).masked_fill_(~mask,
                                                                                           torch.finfo(dtype).min)
        targets = scored_targets(rows)
        keep = torch.zeros(ids.shape, dtype=torch.bool)
        for b, row in enumerate(rows):
            keep[b, len(row.context) - 1:row.length] = True
        logits = self._logits(ids, positions, mask, keep.to(self.device))
        sums, greedy = score_targets(logits, targets, self.softmax_dtype, device=self.device)
        out, request = [], 0
        for row in rows:
            out.append([(float(sums[request + j]), bool(greedy[request + j])) for j in range(len(row.continuations))])
            request += len(row.continuations)
        return out


BACKENDS = ("shared", "hflm")


def check_backend(backend: str, batch_tokens: int) -> None:
    """Bad backend settings are one clear error, before any model is loaded."""
    if backend not in BACKENDS:
        raise LangpruneError(f"--backend '{backend}' is not one of: {', '.join(BACKENDS)}")
    if batch_tokens <= 0:
        raise LangpruneError(f"--batch-tokens must be positive, not {batch_tokens}")


def make_lm(backend: str, model, tokenizer, *, batch_size: int, max_length: int | None,
            batch_tokens: int = DEFAULT_BATCH_TOKENS) -> HFLM:
    """The lm-eval model for ``backend``: ``shared`` (this module) or ``hflm`` (lm-eval's own, for comparison).

    Log-softmax in float32 whatever the model's dtype (a bfloat16 one would round every
    log-probability to three significant digits); for a float32 model this changes nothing.
    """
    check_backend(backend, batch_tokens)
    common = {"pretrained": model, "tokenizer": tokenizer, "batch_size": batch_size, "max_length": max_length,
              "softmax_dtype": torch.float32}
    if backend == "hflm":
        return HFLM(**common)
    return SharedContextLM(**common, batch_tokens=batch_tokens)
