"""RIA: relative importance and activations (Zhang et al., ICLR 2024).

Score ``(|W_ij| / sum_k |W_kj| + |W_ij| / sum_k |W_ik|) * ||X_j||_2 ** a``: a weight
matters relative to the other weights of its input channel and of its output row.
The default path of the authors' code (``--prune_method ria``, no channel reallocation,
no linear-sum assignment) compares scores over the whole matrix for unstructured
sparsity and within each group of M inputs for N:M; ``per_outneuron`` is their flag
for Wanda-style per-row comparison. Their optional N:M channel permutation is not
implemented (it is off by default and only reorders inputs before N:M selection).
"""

from __future__ import annotations

import torch

from .selection import check_groups, lowest_overall, mask_from_scores
from .stats import LinearStats
from .structure import Structure


def relative_importance(weight: torch.Tensor) -> torch.Tensor:
    """|W| divided by its input column's and its output row's L1 sums, added (fp32)."""
    magnitude = weight.detach().abs().float()
    tiny = torch.finfo(magnitude.dtype).tiny  # an all-zero row or column scores 0, not NaN
    column_sums = magnitude.sum(dim=0, keepdim=True).clamp_min(tiny)
    row_sums = magnitude.sum(dim=1, keepdim=True).clamp_min(tiny)
    return magnitude / column_sums + magnitude / row_sums


def ria_scores(weight: torch.Tensor, sumsq: torch.Tensor, a: float) -> torch.Tensor:
    """Relative importance times the input activation norm to the power ``a``."""
    return relative_importance(weight) * sumsq.to(weight.device).float().sqrt().pow(a).unsqueeze(0)


def ria(weight: torch.Tensor, stats: LinearStats, structure: Structure, *, a: float,
        per_outneuron: bool) -> tuple[torch.Tensor, None]:
    """RIA keep-mask: one threshold per matrix (unstructured), per row with ``per_outneuron``, or per N:M group.

    The published defaults (``--a 0.5``, per-matrix comparison) are the registry's.
    """
    check_groups(weight, structure, stats.name)
    if stats.sumsq is None:
        raise ValueError(f"{stats.name}: ria needs input sum-of-squares statistics")
    scores = ria_scores(weight, stats.sumsq, a)
    if structure.is_nm or per_outneuron:
        return mask_from_scores(scores, structure), None
    return lowest_overall(scores, structure.pruned_count(scores.numel())), None
