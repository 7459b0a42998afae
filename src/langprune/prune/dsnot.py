"""DSnoT: training-free prune-and-grow refinement of a mask (Zhang et al., ICLR 2024).

Starting from another method's keep-mask, each output row repeatedly swaps one pruned
weight back in ("grow") for one kept weight out ("prune"), chosen so that the row's
expected reconstruction error ``e = sum_{j pruned} W_ij * mean(x_j)`` moves towards
zero: grow candidates are ordered by ``W_ij * mean(x_j) / var(x_j) ** pow_of_var``,
prune candidates by the Wanda score, split by the sign of ``W_ij * mean(x_j)``. A row
stops for good once ``|e| <= update_threshold``; all rows stop after ``max_cycles``.
Hyperparameters, statistics and the MLP skip follow the authors' code defaults
(``--max_cycle_time 50 --update_threshold 0.1 --pow_of_var_regrowing 1
--skip_layer mlp``, the registry's; ``--without_same_sign`` is always on there, so the
sign test is not applied to unstructured masks). Only unstructured masks are refined here.

:func:`dsnot` is the registered method: it runs the initial method (looked up in the
registry, with that method's published hyperparameters) and refines its mask.
"""

from __future__ import annotations

import logging

import torch

from .. import registry
from ..errors import LangpruneError
from .stats import LinearStats
from .structure import Structure

log = logging.getLogger("langprune.prune")


def _pruning_order(wanda_scores: torch.Tensor, effect: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Per row: kept weights with negative effect by ascending Wanda score, then positive ones descending.

    Pruned weights follow (never reached: the pointers are bounded by the kept count).
    """
    cols = keep.shape[1]
    ranked = torch.sort(wanda_scores.masked_fill(~keep, float("inf")), dim=1, stable=True).indices
    rank = torch.arange(cols, device=keep.device).expand_as(ranked)
    value = effect.gather(1, ranked)
    valid = rank < keep.sum(dim=1, keepdim=True)
    key = torch.where(valid & (value < 0), rank, torch.where(valid & (value > 0), 2 * cols - rank, 3 * cols + rank))
    return ranked.gather(1, torch.sort(key, dim=1, stable=True).indices)


def refine(weight: torch.Tensor, keep: torch.Tensor, stats: LinearStats, *, max_cycles: int,
           update_threshold: float, pow_of_var_regrowing: float) -> torch.Tensor:
    """The DSnoT prune-and-grow loop over an unstructured keep-mask; returns the refined mask."""
    if stats.total is None or stats.seq_var is None or stats.sumsq is None:
        raise ValueError(f"{stats.name}: dsnot needs input sums, variances and sums of squares")
    device = weight.device
    effect = weight.detach().float() * (stats.total / max(stats.sequences, 1)).to(device).unsqueeze(0)
    wanda_scores = weight.detach().abs().float() * stats.sumsq.to(device).sqrt().unsqueeze(0)
    pruned = ~keep.to(device)
    grow_metric = effect.masked_fill(~pruned, 0.0)
    error = grow_metric.sum(dim=1, keepdim=True)
    if pow_of_var_regrowing:
        grow_metric = grow_metric / stats.seq_var.to(device).pow(pow_of_var_regrowing).unsqueeze(0)
    grow_order = torch.sort(grow_metric, dim=1, stable=True).indices
    prune_order = _pruning_order(wanda_scores, effect, ~pruned)

    rows, cols = weight.shape
    last_kept = ((~pruned).sum(dim=1, keepdim=True) - 1).clamp_min(0)
    grow_ptr = torch.tensor([0, cols - 1], device=device).repeat(rows, 1)  # [from the low end, from the high end]
    prune_ptr = torch.cat([torch.zeros_like(last_kept), last_kept], dim=1)
    step = torch.tensor([1, -1], device=device).repeat(rows, 1)
    active = torch.ones(rows, 1, dtype=torch.bool, device=device)
    cycles = 0
    while bool(active.any()) and cycles < max_cycles:
        cycles += 1
        side = (error > 0).long()  # positive error: grow the most positive effect
        at_grow = grow_ptr.gather(1, side)
        grow_idx = grow_order.gather(1, at_grow.clamp(0, cols - 1))
        grow_ptr.scatter_(1, side, at_grow + step.gather(1, side))
        side = (error < 0).long()  # negative error: prune from the positive end
        at_prune = prune_ptr.gather(1, side)
        prune_idx = prune_order.gather(1, torch.minimum(at_prune.clamp_min(0), last_kept))
        prune_ptr.scatter_(1, side, at_prune + step.gather(1, side))
        # A row whose candidates ran out stops untouched (the authors' code would index past its list there).
        live = (at_grow >= 0) & (at_grow < cols) & (at_prune >= 0) & (at_prune <= last_kept)

        active &= live & (error.abs() > update_threshold)
        pruned.scatter_(1, prune_idx, torch.where(live, active, pruned.gather(1, prune_idx)))
        pruned.scatter_(1, grow_idx, torch.where(live, ~active, pruned.gather(1, grow_idx)))
        error += torch.where(active, effect.gather(1, prune_idx), 0.0)  # two steps: the authors' rounding
        error -= torch.where(active, effect.gather(1, grow_idx), 0.0)
    return ~pruned


def dsnot(weight: torch.Tensor, stats: LinearStats, structure: Structure, *, initial: str, max_cycles: int,
          update_threshold: float, pow_of_var_regrowing: float, skip: str) -> tuple[torch.Tensor, None]:
    """``initial``'s mask refined by DSnoT; linears under a module named ``skip`` keep the initial mask."""
    if structure.is_nm:
        raise LangpruneError(f"--method dsnot refines unstructured masks only, not --structure {structure.label}")
    if initial not in registry.mask_only_methods():
        raise LangpruneError(f"--dsnot-initial '{initial}' must be a mask-only method: "
                             f"{', '.join(registry.mask_only_methods())}")
    first = registry.method(initial)
    keep, _ = first.resolve()(weight, stats, structure, **first.bind())
    if skip in stats.name.split("."):
        return keep, None
    refined = refine(weight, keep, stats, max_cycles=max_cycles, update_threshold=update_threshold,
                     pow_of_var_regrowing=pow_of_var_regrowing)
    moved = int((refined.sum(dim=1) != keep.to(refined.device).sum(dim=1)).sum())
    if moved:  # the authors' candidate pointers meet when a row has not many more candidates than cycles
        log.warning("%s: dsnot changed the pruned count of %d of %d rows (rows of %d inputs are narrow for "
                    "max_cycles=%d; the authors' code does the same)", stats.name, moved, keep.shape[0],
                    keep.shape[1], max_cycles)
    return refined, None
