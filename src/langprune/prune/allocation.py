"""Layer-wise sparsity allocations: the pure maths of OWL (Yin et al., ICML 2024) and CWL.

An allocation is not a score: it gives each decoder layer its own sparsity, averaging to
the target. OWL counts, per layer, the Wanda scores (``|W_ij| * ||X_j||``, every linear of
the layer pooled) above ``M`` times the layer mean: layers with more outliers are pruned
less. CWL (M-Wanda's, Choenni & Titov 2025) prunes less the layers whose languages
correlate less (:func:`langprune.prune.mwanda.cross_lingual_correlation`). Both spread
their per-layer numbers the way the OWL authors' code does: min-max scaled into
``[0, 2 * lambda]``, centred on the target density, each layer getting ``1 - density``
(at least 0.01, as their code clamps). Published OWL defaults: ``M = 5``, ``lambda =
0.08`` (their README's LLaMA runs; ``main.py`` defaults M to 3); CWL takes OWL's lambda.

The numbers come from one pass over the dense model (``dense_pass``, beside the engine);
this module only computes with them.
"""

from __future__ import annotations

import torch

from ..errors import LangpruneError

OWL_MIN_SPARSITY = 0.01  # the authors' floor for a layer whose allocation reaches zero


def outlier_ratio(scores: list[torch.Tensor], m: float) -> float:
    """Percentage of one layer's pooled scores above ``m`` times their mean."""
    pooled = torch.cat([s.detach().float().reshape(-1).cpu() for s in scores])
    return float((pooled > pooled.mean() * m).sum()) / pooled.numel() * 100


def owl_sparsities(ratios: list[float], target: float, lam: float, allocation: str = "owl") -> list[float]:
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


def cwl_sparsities(correlations: list[float], target: float, lam: float) -> list[float]:
    """Per-layer sparsities: less cross-lingual correlation, less sparsity; mean = target (OWL's spreading)."""
    return owl_sparsities([1.0 - c for c in correlations], target, lam, allocation="cwl")
