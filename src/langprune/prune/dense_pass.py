"""The dense passes of the layer-wise allocations: one number per decoder layer of the unpruned model.

Each runs the engine's :func:`~langprune.prune.engine.dense_layer_values` once over the
calibration shard (every layer fed the dense outputs of the layers below, as the OWL
authors' code does) and reduces each layer's linears and input statistics with the pure
functions of :mod:`.allocation` and :mod:`.mwanda`. The registry names these functions
(``AllocationSpec.layer_values``); their keyword arguments beyond the run settings are the
allocation's declared parameters.
"""

from __future__ import annotations

import torch

from .allocation import outlier_ratio
from .engine import dense_layer_values
from .mwanda import cross_lingual_correlation
from .stats import LANGUAGES, SUMSQ


def layer_outlier_ratios(model: torch.nn.Module, input_ids: torch.Tensor, *, M: float,  # M: the registry's (OWL's) name
                         batch_size: int = 1, device: str | torch.device = "cpu",
                         offload: bool = False) -> tuple[list[float], float]:
    """OWL: each decoder layer's outlier ratio (percent of Wanda scores above ``M`` times their mean); (ratios, s)."""

    def ratio(linears, stats) -> float:
        return outlier_ratio([lin.weight.abs().float() * stats[n].sumsq.sqrt().unsqueeze(0)
                              for n, lin in linears.items()], M)

    return dense_layer_values(model, input_ids, frozenset({SUMSQ}), ratio, batch_size=batch_size, device=device,
                              offload=offload)


def layer_correlations(model: torch.nn.Module, input_ids: torch.Tensor, *, row_languages: list[int],
                       batch_size: int = 1, device: str | torch.device = "cpu",
                       offload: bool = False) -> tuple[list[float], float]:
    """CWL: each decoder layer's mean cross-lingual correlation of its input profiles; (correlations, seconds)."""
    return dense_layer_values(model, input_ids, frozenset({LANGUAGES}),
                              lambda linears, stats: cross_lingual_correlation(stats), batch_size=batch_size,
                              device=device, offload=offload, row_languages=row_languages)
