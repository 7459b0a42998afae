"""OWL: outlier-weighted layer-wise sparsity (Yin et al., ICML 2024).

A sparsity *allocation*, not a score: layers with more outliers in their Wanda scores
(``|W_ij| * ||X_j||`` above ``M`` times the layer mean) are pruned less. Outlier ratios
come from one dense pass over the calibration data (every linear of a decoder layer
pooled, inputs from the unpruned layers below), as in the authors' code. They are
min-max scaled into ``[0, 2 * lambda]``, centred on the target density, and each layer
gets ``1 - density`` (at least 0.01, as their code clamps). Published defaults:
``M = 5`` and ``lambda = 0.08`` (their README's LLaMA runs; ``main.py`` defaults M to 3).
Only unstructured sparsity: OWL's own N:M variant does not give pure N:M masks.
"""

from __future__ import annotations

import torch

from ..errors import LangpruneError
from .engine import dense_layer_values
from .stats import SUMSQ
from .structure import Structure

OWL_M = 5.0  # outlier threshold: a score is an outlier above M times its layer's mean score
OWL_LAMBDA = 0.08  # layer sparsities span [target - lambda, target + lambda]
OWL_MIN_SPARSITY = 0.01  # the authors' floor for a layer whose allocation reaches zero


def outlier_ratio(scores: list[torch.Tensor], m: float = OWL_M) -> float:
    """Percentage of one layer's pooled scores above ``m`` times their mean."""
    pooled = torch.cat([s.detach().float().reshape(-1).cpu() for s in scores])
    return float((pooled > pooled.mean() * m).sum()) / pooled.numel() * 100


def owl_sparsities(ratios: list[float], target: float, lam: float = OWL_LAMBDA, allocation: str = "owl") -> list[float]:
    """Per-layer sparsities from outlier ratios: more outliers, less sparsity; mean density = 1 - target."""
    low, high = min(ratios), max(ratios)
    if high == low:  # the authors' code divides by zero here; every layer equally outlier-rich means uniform
        return [float(target)] * len(ratios)
    scaled = [(r - low) / (high - low) * lam * 2 for r in ratios]
    mean = sum(scaled) / len(scaled)
    sparsities = [1 - (s - mean + (1 - target)) for s in scaled]
    sparsities = [OWL_MIN_SPARSITY if s <= 0 else s for s in sparsities]
    if max(sparsities) >= 1:
        raise LangpruneError(f"--allocation {allocation}: --sparsity {target} with --{allocation}-lambda {lam} "
                             f"gives a layer sparsity of {max(sparsities):.3f} >= 1; lower --{allocation}-lambda "
                             f"or --sparsity")
    return sparsities


def check_owl_structure(structure: Structure, allocation: str = "owl") -> None:
    """Layer-wise allocations (OWL, CWL) spread an unstructured sparsity; N:M is refused."""
    if structure.is_nm:
        raise LangpruneError(f"--allocation {allocation} needs unstructured sparsity, not --structure "
                             f"{structure.label}: layer-wise ratios do not give pure N:M masks "
                             f"(use --allocation uniform)")


def layer_outlier_ratios(model: torch.nn.Module, input_ids: torch.Tensor, *, m: float = OWL_M, batch_size: int = 1,
                         device: str | torch.device = "cpu", offload: bool = False) -> tuple[list[float], float]:
    """Each decoder layer's outlier ratio from one dense pass; returns (ratios, seconds)."""

    def ratio(linears, stats) -> float:
        return outlier_ratio([lin.weight.abs().float() * stats[n].sumsq.sqrt().unsqueeze(0)
                              for n, lin in linears.items()], m)

    return dense_layer_values(model, input_ids, frozenset({SUMSQ}), ratio, batch_size=batch_size, device=device,
                              offload=offload)
