"""Pruning methods: pure functions ``(weight, stats, structure, **hyperparameters) -> (keep_mask, new_weight | None)``.

``keep_mask`` is a bool tensor shaped like ``weight`` (True = the weight survives).
``new_weight`` is returned only by methods that change surviving weights (SparseGPT);
everyone else's result is ``weight * keep_mask``. No I/O, no globals. The short methods
live here, the longer ones in their own modules (``ria``, ``dsnot``, ``mwanda``); the
registry (:mod:`langprune.registry`) names each method's function and owns its traits,
hyperparameters, published defaults and allowed ranges. :class:`Method` is a registry
entry made runnable: its function resolved and its hyperparameters bound and checked.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import torch

from .. import registry
from ..errors import LangpruneError
from .quant_grid import round_to_grid, row_grid
from .selection import check_groups, lowest_overall, lowest_per_group, lowest_per_row, mask_from_scores
from .stats import LinearStats
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


def sparsegpt(weight: torch.Tensor, stats: LinearStats, structure: Structure, *, bits: int = 0) -> MethodResult:
    """Optimal-brain-surgeon pruning with weight updates (Frantar & Alistarh, 2023), in fp32.

    ``bits`` > 0 is the paper's joint mode: each column, once its pruned entries are zeroed, is
    rounded to a ``bits``-bit asymmetric grid per output row (taken from the whole weight before
    anything is pruned, as published), and the rounding error is spread like the pruning error.
    """
    check_groups(weight, structure, stats.name)
    if stats.hessian is None:
        raise ValueError(f"{stats.name}: sparsegpt needs the input Hessian")
    w = weight.detach().float().clone()
    max_code = (1 << bits) - 1
    grid = row_grid(w, max_code, symmetric=False) if bits else None
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
            if grid is not None:
                quantised = round_to_grid(quantised.unsqueeze(1), *grid, max_code).squeeze(1)
            err = (column - quantised) / h_block[i, i]
            w_block[:, i:].addr_(err, h_block[i, i:], alpha=-1.0)
            w_block[:, i] = quantised
            err_block[:, i] = err
        w[:, start:end] = w_block
        w[:, end:] -= err_block @ hinv[start:end, end:]
    return keep, w.masked_fill(~keep, 0.0).to(weight.dtype)


@dataclass(frozen=True)
class Method:
    """A registered method ready to run: its function, the statistics the engine must collect, its hyperparameters."""

    name: str
    prune: Callable[..., MethodResult]
    needs: frozenset[str]
    updates_weights: bool
    params: Mapping[str, Any] = field(default_factory=dict)

    def run(self, weight: torch.Tensor, stats: LinearStats, structure: Structure) -> MethodResult:
        return self.prune(weight, stats, structure, **self.params)

    def bind(self, **overrides: Any) -> "Method":
        """The same method with some hyperparameters changed, each checked against the registry."""
        return replace(self, params=registry.method(self.name).bind({**self.params, **overrides}))


def from_spec(spec: registry.MethodSpec) -> Method:
    """The registry entry's function with its published hyperparameters.

    The function's keyword-only arguments must be exactly the declared hyperparameters, so a
    registry entry and its function cannot drift apart.
    """
    function = spec.resolve()
    keywords = {name for name, p in inspect.signature(function).parameters.items()
                if p.kind is inspect.Parameter.KEYWORD_ONLY}
    declared = {p.name for p in spec.params}
    if keywords != declared:
        raise TypeError(f"{spec.function} takes the keyword-only arguments {sorted(keywords)}, but the registry "
                        f"declares {sorted(declared)} for --method {spec.name}")
    return Method(spec.name, function, spec.statistics, spec.updates_weights, spec.bind())


METHODS: dict[str, Method] = {name: from_spec(spec) for name, spec in registry.METHODS.items()}  # at import


def get_method(name: str, **params: Any) -> Method:
    """The registered method, with ``params`` overriding its published hyperparameters (checked).

    Built from the registry as it is now (an unknown name is one error listing the known ones).
    """
    method = from_spec(registry.method(name))
    return method.bind(**params) if params else method
