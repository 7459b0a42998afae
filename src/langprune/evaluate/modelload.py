"""The model under evaluation: base weights plus an optional sparse checkpoint, built in memory.

No dense copy of a pruned model is ever written; the dense model (no checkpoint) loads
directly so evaluation does not depend on the checkpoint module.
"""

from __future__ import annotations

import gc


def load_evaluated_model(model: str, checkpoint: str | None = None, *, dtype: str | None = None,
                         device: str = "cpu", revision: str | None = None):
    """The model ``model`` with ``checkpoint``'s masks (and values) applied, in eval mode.

    ``revision`` None means the checkpoint's recorded base revision (or the default branch
    for a dense model), so a pinned base is evaluated as it was pruned.
    """
    if checkpoint is None:
        from ..models import load_model

        return load_model(model, dtype=dtype, device=device, revision=revision)
    from ..checkpoint import load_pruned_model

    return load_pruned_model(model, checkpoint, dtype=dtype, device=device, revision=revision).eval()


def free_memory() -> None:
    """Return the memory of models the caller has just deleted before the next one is loaded."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
