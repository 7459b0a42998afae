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

import torch

from ..errors import LangpruneError
from .dsnot import refine as refine_mask
from .mwanda import mwanda
from .ria import ria
from .selection import check_groups, lowest_overall, lowest_per_group, lowest_per_row, mask_from_scores
from .stats import HESSIAN, LANGUAGES, MOMENTS, SUMSQ, LinearStats
from .structure import Structure

log = logging.getLogger("langprune.prune")

MethodResult = tuple[torch.Tensor, "torch.Tensor | None"]

SPARSEGPT_BLOCK = 128
SPARSEGPT_DAMP = 0.01
CHOLESKY_RETRIES = 4  # dampening tried: 0.01, 0.1, 1, 10, 100 times mean(diag H)


def magnitude(weight: torch.Tensor, stats: LinearStats, structure: Structure) -> MethodResult:
    """|W| with one threshold per matrix (unstructured) or per group of M inputs (N:M)."""
    check_groups(weight, structure, stats.name)
    scores = weight.detach().abs().float()
    if structure.is_nm:
        return lowest_per_group(scores, structure.n, structure.m), None
    return lowest_overall(scores, structure.pruned_count(scores.numel())), None


def wanda(weight: torch.Tensor, stats: LinearStats, structure: Structure) -> MethodResult:
    """|W_ij| * ||X_j||_2 compared within each output row (Sun et al., 2024)."""
    check_groups(weight, structure, stats.name)
    if stats.sumsq is None:
        raise ValueError(f"{stats.name}: wanda needs input sum-of-squares statistics")
    scores = weight.detach().abs().float().mul_(stats.sumsq.to(weight.device).sqrt().unsqueeze(0))
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
    check_groups(weight, structure, stats.name)
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


def dsnot(weight: torch.Tensor, stats: LinearStats, structure: Structure, *, initial: str = "wanda",
          max_cycles: int = 50, update_threshold: float = 0.1, pow_of_var_regrowing: float = 1.0,
          skip: str = "mlp") -> tuple[torch.Tensor, None]:
    """``initial``'s mask refined by DSnoT; linears under a module named ``skip`` keep the initial mask.

    Beside the registry because it runs another registered method first; the refinement
    itself is :func:`.dsnot.refine`.
    """
    if structure.is_nm:
        raise LangpruneError(f"--method dsnot refines unstructured masks only, not --structure {structure.label}")
    if initial not in MASK_ONLY:
        raise LangpruneError(f"--dsnot-initial '{initial}' must be a mask-only method: {', '.join(MASK_ONLY)}")
    keep, _ = METHODS[initial].run(weight, stats, structure)
    if skip in stats.name.split("."):
        return keep, None
    refined = refine_mask(weight, keep, stats, max_cycles=max_cycles, update_threshold=update_threshold,
                          pow_of_var_regrowing=pow_of_var_regrowing)
    moved = int((refined.sum(dim=1) != keep.to(refined.device).sum(dim=1)).sum())
    if moved:  # the authors' candidate pointers meet when a row has not many more candidates than cycles
        log.warning("%s: dsnot changed the pruned count of %d of %d rows (rows of %d inputs are narrow for "
                    "max_cycles=%d; the authors' code does the same)", stats.name, moved, keep.shape[0],
                    keep.shape[1], max_cycles)
    return refined, None


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
    "mwanda": Method(mwanda, frozenset({SUMSQ, LANGUAGES}), updates_weights=False),
}
# DSnoT's possible initial masks: methods that change no weights and need no statistics beyond DSnoT's own.
MASK_ONLY = tuple(name for name, method in METHODS.items()
                  if not method.updates_weights and name != "dsnot" and method.needs <= METHODS["dsnot"].needs)


def get_method(name: str, **params: Any) -> Method:
    """The registered method, with ``params`` overriding its published hyperparameters."""
    if name not in METHODS:
        raise LangpruneError(f"--method '{name}' is not one of: {', '.join(sorted(METHODS))}")
    return METHODS[name].bind(name, **params) if params else METHODS[name]
