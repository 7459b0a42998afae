"""Pruning: structures, statistics, methods (pure functions), allocations and the sequential engine.

:func:`prune_to_checkpoint` (in :mod:`.run`) is what ``langprune prune`` calls: check a
:class:`PruneRequest` whole, load the base model and a calibration shard, prune layer by
layer, write a sparse checkpoint. This module only re-exports.
"""

from .run import PruneOutcome, PruneRequest, check_request, prune_to_checkpoint, summary_table, write_owl_ratios

__all__ = ["PruneOutcome", "PruneRequest", "check_request", "prune_to_checkpoint", "summary_table",
           "write_owl_ratios"]
