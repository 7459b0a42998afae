"""Selecting the weights to prune from scores: per row, per N:M group, or over a whole matrix.

Shared by every scoring method (``methods``, ``ria``, ``mwanda``): each computes scores and
leaves the choice of which ones go to these functions. Ties are broken by position, as a
stable sort would, so masks do not depend on the selection algorithm or thread count.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import LangpruneError
from .structure import Structure


def check_groups(weight: torch.Tensor, structure: Structure, name: str) -> None:
    """N:M needs the input columns to split into whole groups of M; a clear error names the linear."""
    if structure.is_nm and weight.shape[1] % structure.m:
        raise LangpruneError(f"{name}: {weight.shape[1]} input columns are not divisible by M={structure.m} "
                             f"of --structure {structure.label}; use unstructured or another M")


def kth_smallest(scores: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k``-th smallest score (1-based) of every row, keeping the last dim (size 1).

    On the CPU numpy's introselect, several times faster than ``torch.kthvalue`` there;
    elsewhere ``torch.kthvalue``. Both give the same value.
    """
    if scores.device.type != "cpu":
        return torch.kthvalue(scores, k, dim=-1, keepdim=True).values
    picked = np.partition(scores.detach().contiguous().numpy(), k - 1, axis=-1)[..., k - 1:k]
    return torch.from_numpy(np.ascontiguousarray(picked))


def lowest_per_row(scores: torch.Tensor, count: int) -> torch.Tensor:
    """Keep-mask pruning exactly ``count`` lowest scores in every row; ties broken by column order.

    A selection, not a sort (an order of magnitude faster on real shapes): everything below
    the row's ``count``-th smallest score goes, then as many scores equal to it as are still
    needed, leftmost first, which is the set a stable sort would pick.
    """
    if count <= 0:
        return torch.ones_like(scores, dtype=torch.bool)
    threshold = kth_smallest(scores, count)
    keep = scores > threshold
    # Every row keeps at most (columns - count); the total says whether all keep exactly that,
    # i.e. no row has ties at its threshold. One count, ~10x cheaper than per-row sums of bools.
    if int(torch.count_nonzero(keep)) == keep.numel() // keep.shape[-1] * (keep.shape[-1] - count):
        return keep
    tied = scores == threshold
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


SMALL_GROUP = 8  # up to this M, groups are ranked by pairwise comparisons (M^2 passes)


def lowest_per_group(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep-mask pruning the ``n`` lowest scores of every ``m`` consecutive columns of each row.

    For small M (2:4, 4:8) each group position's rank is counted by comparing it with the
    others, one contiguous column of groups at a time: 3x faster on the CPU than a selection
    over millions of 4-element rows. A position ranks after an equal score on its left, so
    ties go as a stable sort orders them, the same set as :func:`lowest_per_row` picks.
    """
    rows, cols = scores.shape
    if m > SMALL_GROUP:
        return lowest_per_row(scores.reshape(rows, cols // m, m), n).reshape(rows, cols)
    groups = scores.reshape(-1, m)
    columns = [groups[:, j].contiguous() for j in range(m)]
    keeps = []
    for i, here in enumerate(columns):
        rank = torch.zeros(here.shape, dtype=torch.uint8, device=here.device)
        for j, other in enumerate(columns):
            if j != i:
                rank += (other <= here) if j < i else (other < here)
        keeps.append(rank >= n)
    return torch.stack(keeps, dim=-1).reshape(rows, cols)


def mask_from_scores(scores: torch.Tensor, structure: Structure) -> torch.Tensor:
    """Per-row comparison (unstructured) or per-group (N:M), as Wanda defines it."""
    if structure.is_nm:
        return lowest_per_group(scores, structure.n, structure.m)
    return lowest_per_row(scores, structure.pruned_count(scores.shape[1]))
