"""M-Wanda: language-aware Wanda for multilingual LLMs (Choenni & Titov, EMNLP 2025).

Built from the paper's description only: neither the authors' code (github.com/RochelleChoenni/
M-Wanda) nor the paper's method section could be read here (benchmarks/RESULTS.md), so the
formulas below are langprune's reading of what the paper says M-Wanda combines, and every
detail not stated there is a choice, named here and in RESULTS.md:

- *Language-aware activation statistics.* For input feature ``j`` and calibration language
  ``l``, ``rms[l, j] = sqrt(sum x_j**2 / tokens)`` over that language's rows only (chosen:
  per-token RMS, so every language counts equally whatever its token count). Wanda's norm
  ``||X_j||`` is replaced by ``mean_l rms[l, j] + spread_weight * std_l rms[l, j]`` (chosen:
  population std; a feature important to some languages only keeps a high score).
- *Activation probability.* ``p[l, j]`` is the share of language ``l``'s tokens with
  ``x_j > 0``; scores are multiplied by ``1 + probability_weight * mean_l p[l, j]`` (chosen:
  the linear input's sign as "active", a multiplicative term), favouring features used across
  languages. Comparison is per output row, as in Wanda.
- *Cross-lingual layer-wise sparsity (CWL)*, ``--allocation cwl``: a decoder layer's
  cross-lingual correlation is the mean Pearson correlation, over language pairs, of the
  ``rms`` profiles of its distinct linear inputs (dense model, one pass). Layers whose
  languages correlate less are pruned less: ``1 - correlation`` is spread into per-layer
  sparsities exactly like OWL's outlier ratios (:mod:`.allocation`; chosen: OWL's lambda
  0.08). It is usable with any method; the paper's M-Wanda is ``mwanda+cwl``.

With ``spread_weight = probability_weight = 0`` and one language the scores are Wanda's up
to a constant per matrix, hence Wanda's mask. Both terms need a shard mixing at least two
languages; one language is refused (its spread would be zero and CWL undefined).
"""

from __future__ import annotations

import torch

from ..errors import LangpruneError
from .selection import check_groups, mask_from_scores
from .stats import LinearStats
from .structure import Structure


def language_profiles(stats: LinearStats) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-language RMS ``[L, F]`` and activation probability ``[L, F]`` of one linear's inputs."""
    if stats.language_sumsq is None or stats.language_tokens is None or stats.language_positive is None:
        raise ValueError(f"{stats.name}: M-Wanda needs per-language input statistics")
    present = stats.language_tokens > 0
    if int(present.sum()) < 2:
        raise LangpruneError(f"{stats.name}: M-Wanda needs calibration tokens in at least two languages")
    tokens = stats.language_tokens[present].unsqueeze(1)
    return (stats.language_sumsq[present] / tokens).sqrt(), stats.language_positive[present] / tokens


def mwanda_scores(weight: torch.Tensor, stats: LinearStats, spread_weight: float,
                  probability_weight: float) -> torch.Tensor:
    """``|W_ij| * (mean_l rms + spread_weight * std_l rms)_j * (1 + probability_weight * mean_l p)_j``."""
    rms, probability = language_profiles(stats)
    activation = rms.mean(dim=0) + spread_weight * rms.std(dim=0, unbiased=False)
    activation = activation * (1 + probability_weight * probability.mean(dim=0))
    return weight.detach().abs().float() * activation.to(weight.device).unsqueeze(0)


def mwanda(weight: torch.Tensor, stats: LinearStats, structure: Structure, *, spread_weight: float,
           probability_weight: float) -> tuple[torch.Tensor, None]:
    """M-Wanda keep-mask: language-aware scores compared within each output row (or N:M group), as Wanda.

    The weights' defaults (1 and 1, chosen, see above) are the registry's.
    """
    check_groups(weight, structure, stats.name)
    return mask_from_scores(mwanda_scores(weight, stats, spread_weight, probability_weight), structure), None


def cross_lingual_correlation(stats: dict[str, LinearStats]) -> float:
    """Mean pairwise Pearson correlation between languages of a layer's concatenated input RMS profiles."""
    distinct = {id(s.language_sumsq): s for s in stats.values()}  # shared inputs counted once
    profiles = torch.cat([language_profiles(s)[0].cpu() for s in distinct.values()], dim=1)
    correlation = torch.corrcoef(profiles.double())
    pairs = torch.triu_indices(*correlation.shape, offset=1)
    return float(correlation[pairs[0], pairs[1]].nan_to_num(1.0).mean())
