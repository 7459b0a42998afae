"""Pruning methods: pure functions ``(weight, stats, structure) -> (keep_mask, new_weight | None)``.

``keep_mask`` is a bool tensor shaped like ``weight`` (True = the weight survives).
``new_weight`` is returned only by methods that change surviving weights (SparseGPT);
everyone else's result is ``weight * keep_mask``. No I/O, no globals: adding a method
is one function (here, or its own module for the longer ones: ``ria``, ``dsnot``) plus
one line in ``METHODS``. A method's hyperparameters are its keyword-only arguments,
whose defaults are the published ones; :meth:`Method.bind` overrides them.
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import numpy as np
import torch

from ..errors import LangpruneError
from .dsnot import dsnot
from .ria import ria
from .stats import HESSIAN, MOMENTS, SUMSQ, LinearStats
from .structure import Structure

log = logging.getLogger("langprune.prune")

MethodResult = tuple[torch.Tensor, "torch.Tensor | None"]

SPARSEGPT_BLOCK = 128
SPARSEGPT_DAMP = 0.01
CHOLESKY_RETRIES = 4  # dampening tried: 0.01, 0.1, 1, 10, 100 times mean(diag H)


def _check_groups(weight: torch.Tensor, structure: Structure, name: str) -> None:
    if structure.is_nm and weight.shape[1] % structure.m:
        raise LangpruneError(f"{name}: {weight.shape[1]} input columns are not divisible by M={structure.m} "
                             f"of --structure {structure.label}; use unstructured or another M")


def kth_smallest(scores: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k``-th smallest score (1-based) of every row, keeping the last dim (size 1).

    On the CPU numpy's introselect, several times faster than ``torch.kthvalue`` there;
    elsewhere ``torch.kthvalue``. Both give the same value.
    """
    if scores.device.type == "cpu":
        picked = np.partition(scores.detach().contiguous().numpy(), k - 1, axis=-1)[..., k - 1:k]
        return torch.from_numpy(np.ascontiguousarray(picked))
    return torch.kthvalue(scores, k, dim=-1, keepdim=True).values


def lowest_per_row(scores: torch.Tensor, count: int) -> torch.Tensor:
    """Keep-mask pruning exactly ``count`` lowest scores in every row; ties broken by column order.

    A selection, not a sort (an order of magnitude faster on real shapes): everything below
    the row's ``count``-th smallest score goes, then as many scores equal to it as are still
    needed, leftmost first, which is the set a stable sort would pick.
    """
    if count <= 0:
        return torch.ones_like(scores, dtype=torch.bool)
    threshold = kth_smallest(scores, count)
    tied = scores == threshold
    if int(tied.sum()) == tied.numel() // tied.shape[-1]:  # no ties: only the threshold itself, once per row
        return scores > threshold
    below = scores < threshold
    still_needed = count - below.sum(dim=-1, keepdim=True)
    return ~(below | (tied & (torch.cumsum(tied, dim=-1) <= still_needed)))


def lowest_overall(scores: torch.Tensor, count: int) -> torch.Tensor:
    """Keep-mask pruning the ``count`` lowest scores of the whole tensor; ties broken by flat index.

    The same mask as a stable sort of the flattened scores, found with one selection
    (``kthvalue``) instead: several times faster on large matrices.
    """
    flat = scores.reshape(-1)
    if count <= 0:
        return torch.ones_like(scores, dtype=torch.bool)
    if count >= flat.numel():
        return torch.zeros_like(scores, dtype=torch.bool)
    value = torch.kthvalue(flat, count).values
    pruned = flat < value
    ties = torch.nonzero(flat == value).flatten()[: count - int(pruned.sum())]
    pruned[ties] = True
    return (~pruned).reshape(scores.shape)


def lowest_per_group(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep-mask pruning the ``n`` lowest scores of every ``m`` consecutive columns of each row."""
    rows, cols = scores.shape
    return lowest_per_row(scores.reshape(rows, cols // m, m), n).reshape(rows, cols)


def mask_from_scores(scores: torch.Tensor, structure: Structure) -> torch.Tensor:
    """Per-row comparison (unstructured) or per-group (N:M), as Wanda defines it."""
    if structure.is_nm:
        return lowest_per_group(scores, structure.n, structure.m)
    return lowest_per_row(scores, structure.pruned_count(scores.shape[1]))


def magnitude(weight: torch.Tensor, stats: LinearStats, structure: Structure) -> MethodResult:
    """|W| with one threshold per matrix (unstructured) or per group of M inputs (N:M)."""
    _check_groups(weight, structure, stats.name)
    scores = weight.detach().abs().float()
    if structure.is_nm:
        return lowest_per_group(scores, structure.n, structure.m), None
    return lowest_overall(scores, structure.pruned_count(scores.numel())), None


def wanda(weight: torch.Tensor, stats: LinearStats, structure: Structure) -> MethodResult:
    """|W_ij| * ||X_j||_2 compared within each output row (Sun et al., 2024)."""
    _check_groups(weight, structure, stats.name)
    if stats.sumsq is None:
        raise ValueError(f"{stats.name}: wanda needs input sum-of-squares statistics")
    scores = weight.detach().abs().float() * stats.sumsq.to(weight.device).sqrt().unsqueeze(0)
    return mask_from_scores(scores, structure), None


def _damped_inverse_cholesky(hessian: torch.Tensor, name: str) -> torch.Tensor:
    """Upper Cholesky factor of H^-1 after dampening; retry with 10x dampening before giving up."""
    mean_diag = torch.mean(torch.diag(hessian))
    eye = torch.eye(hessian.shape[0], dtype=hessian.dtype, device=hessian.device)
    damp = SPARSEGPT_DAMP
    for attempt in range(CHOLESKY_RETRIES + 1):
        lower, info = torch.linalg.cholesky_ex(hessian + damp * mean_diag * eye)
        if int(info) == 0:
            inverse = torch.cholesky_inverse(lower)
            upper, info = torch.linalg.cholesky_ex(inverse, upper=True)
            if int(info) == 0:
                if attempt:
                    log.warning("%s: Cholesky succeeded only with dampening %g * mean(diag H)", name, damp)
                return upper
        if attempt < CHOLESKY_RETRIES:
            log.warning("%s: Cholesky failed with dampening %g * mean(diag H); retrying with %g",
                        name, damp, damp * 10)
        damp *= 10
    raise LangpruneError(f"{name}: the Hessian is not positive definite even with dampening "
                         f"{damp / 10:g} * mean(diag H); the calibration inputs of this layer are degenerate "
                         f"(check the shard for repeated or padding-only sequences, or use more samples)")


def sparsegpt(weight: torch.Tensor, stats: LinearStats, structure: Structure) -> MethodResult:
    """Optimal-brain-surgeon pruning with weight updates (Frantar & Alistarh, 2023), in fp32."""
    _check_groups(weight, structure, stats.name)
    if stats.hessian is None:
        raise ValueError(f"{stats.name}: sparsegpt needs the input Hessian")
    w = weight.detach().float().clone()
    hessian = stats.hessian.to(w.device, torch.float32).clone()
    dead = torch.diag(hessian) == 0
    hessian[dead, dead] = 1.0
    w[:, dead] = 0.0
    hinv = _damped_inverse_cholesky(hessian, stats.name)
    del hessian

    rows, cols = w.shape
    keep = torch.ones_like(w, dtype=torch.bool)
    block = max(structure.m, SPARSEGPT_BLOCK // structure.m * structure.m) if structure.is_nm else SPARSEGPT_BLOCK
    for start in range(0, cols, block):
        end = min(start + block, cols)
        w_block = w[:, start:end].clone()
        h_block = hinv[start:end, start:end]
        h_diag = torch.diag(h_block)
        err_block = torch.zeros_like(w_block)
        keep_block = keep[:, start:end]
        if not structure.is_nm:
            scores = w_block.pow(2) / h_diag.pow(2).unsqueeze(0)
            keep_block.copy_(lowest_overall(scores, structure.pruned_count(scores.numel())))
        for i in range(end - start):
            if structure.is_nm and i % structure.m == 0:
                group = slice(i, i + structure.m)
                scores = w_block[:, group].pow(2) / h_diag[group].pow(2).unsqueeze(0)
                keep_block[:, group] = lowest_per_row(scores, structure.n)
            column = w_block[:, i]
            quantised = column * keep_block[:, i]
            err = (column - quantised) / h_block[i, i]
            w_block[:, i:].addr_(err, h_block[i, i:], alpha=-1.0)
            w_block[:, i] = quantised
            err_block[:, i] = err
        w[:, start:end] = w_block
        w[:, end:] -= err_block @ hinv[start:end, end:]
    return keep, w.masked_fill(~keep, 0.0).to(weight.dtype)


def published_defaults(function: Callable[..., MethodResult]) -> dict[str, Any]:
    """A method's hyperparameters: its keyword-only arguments and their (published) defaults."""
    return {name: p.default for name, p in inspect.signature(function).parameters.items()
            if p.kind is inspect.Parameter.KEYWORD_ONLY}


@dataclass(frozen=True)
class Method:
    """A registered method: the function, which statistics the engine must collect, its hyperparameters."""

    prune: Callable[..., MethodResult]
    needs: frozenset[str]
    updates_weights: bool
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.params:
            object.__setattr__(self, "params", published_defaults(self.prune))

    def run(self, weight: torch.Tensor, stats: LinearStats, structure: Structure) -> MethodResult:
        return self.prune(weight, stats, structure, **self.params)

    def bind(self, name: str, **overrides: Any) -> "Method":
        """The same method with some hyperparameters changed (unknown names are a clear error)."""
        unknown = sorted(set(overrides) - set(self.params))
        if unknown:
            known = ", ".join(sorted(self.params)) or "none"
            raise LangpruneError(f"--method {name} has no hyperparameter {', '.join(unknown)} (it has: {known})")
        return replace(self, params={**self.params, **overrides})


METHODS: dict[str, Method] = {
    "magnitude": Method(magnitude, frozenset(), updates_weights=False),
    "wanda": Method(wanda, frozenset({SUMSQ}), updates_weights=False),
    "sparsegpt": Method(sparsegpt, frozenset({SUMSQ, HESSIAN}), updates_weights=True),
    "ria": Method(ria, frozenset({SUMSQ}), updates_weights=False),
    "dsnot": Method(dsnot, frozenset({SUMSQ, MOMENTS}), updates_weights=False),
}
MASK_ONLY = tuple(name for name, method in METHODS.items() if not method.updates_weights and name != "dsnot")


def get_method(name: str, **params: Any) -> Method:
    """The registered method, with ``params`` overriding its published hyperparameters."""
    if name not in METHODS:
        raise LangpruneError(f"--method '{name}' is not one of: {', '.join(sorted(METHODS))}")
    return METHODS[name].bind(name, **params) if params else METHODS[name]
