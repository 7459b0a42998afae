"""The model under evaluation, and the one-load-per-variant cache of evaluation runs.

Outside :func:`shared_base` this is :func:`langprune.checkpoint.load_pruned_model` (which
owns reading checkpoints); no dense copy of a pruned model is ever written.

Inside :func:`shared_base`, every evaluation of the same base in the process reuses one
loaded model (one load per variant, or per several variants): the dense values of the
weights a checkpoint prunes are copied to host memory the first time they are touched, and
switching to another checkpoint (or back to the dense model) restores them from there and
applies the next masks, so the base is read from disk once. Its tokenizer is loaded once too
(:func:`evaluation_tokenizer`; Gemma's 262k-token one takes seconds), so every run that uses
it must leave it as it found it.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import AutoConfig

from ..checkpoint import apply_checkpoint, check_base, load_pruned_model, read_manifest
from ..models import free_memory, load_model, load_tokenizer, resolve_dtype


def load_evaluated_model(model: str, checkpoint: str | None = None, *, dtype: str | None = None,
                         device: str = "cpu", revision: str | None = None):
    """The model ``model`` with ``checkpoint``'s masks (and values) applied, in eval mode.

    ``revision`` None means the checkpoint's recorded base revision (or the default branch
    for a dense model), so a pinned base is evaluated as it was pruned.
    """
    if _SHARED is not None:
        return _SHARED.model_for(model, checkpoint, dtype=dtype, device=device, revision=revision)

    return load_pruned_model(model, checkpoint, dtype=dtype, device=device, revision=revision).eval()


def done_with_model() -> None:
    """An evaluation has dropped its model: free its memory, unless the shared base keeps it for the next
    (a full garbage collection over a loaded Gemma and its tokenizer takes about a second)."""
    if _SHARED is None:
        free_memory()


def evaluation_tokenizer(model: str, revision: str | None = None):
    """The tokenizer of ``model``: loaded once per :func:`shared_base` block, else loaded now."""
    if _SHARED is not None:
        return _SHARED.tokenizer(model, revision)
    return load_tokenizer(model, revision=revision)


@dataclass
class SharedBase:
    """One loaded base model, switched between checkpoints by restoring and re-masking weights."""

    key: tuple | None = None
    model: Any = None
    dense: dict = field(default_factory=dict)  # parameter name -> dense value on the host
    applied: str | None = None  # checkpoint whose masks the model holds now (None: dense)
    loads: int = 0
    tokenizers: dict = field(default_factory=dict)  # (model, revision) -> tokenizer

    def tokenizer(self, model: str, revision: str | None):
        if (model, revision) not in self.tokenizers:
            self.tokenizers[model, revision] = load_tokenizer(model, revision=revision)
        return self.tokenizers[model, revision]

    def model_for(self, model: str, checkpoint: str | None, *, dtype: str | None, device: str,
                  revision: str | None):
        if checkpoint is not None:
            base = read_manifest(checkpoint)["base"]
            revision = revision if revision is not None else base.get("revision")
            dtype = dtype or base.get("dtype")
        key = (model, revision, resolve_dtype(dtype) or _auto_dtype(model, revision), device)
        if key != self.key:
            self.release()
            name = None if key[2] is None else str(key[2]).removeprefix("torch.")
            self.model = load_model(model, dtype=name, device=device, revision=revision)
            self.key, self.loads = key, self.loads + 1
        elif checkpoint == self.applied:
            return self.model
        self._restore_dense()
        if checkpoint is not None:
            check_base(read_manifest(checkpoint), model, revision)
            self._keep_dense(read_manifest(checkpoint)["tensors"])
            apply_checkpoint(self.model, checkpoint)
            self.applied = checkpoint
        return self.model

    def _keep_dense(self, names) -> None:
        params = dict(self.model.named_parameters())
        for name in names:
            if name in params and name not in self.dense:
                self.dense[name] = params[name].detach().to("cpu", copy=True)

    def _restore_dense(self) -> None:
        if self.applied is None:
            return
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, value in self.dense.items():
                params[name].copy_(value.to(params[name].device))
        self.applied = None

    def release(self) -> None:
        self.key, self.model, self.dense, self.applied, self.tokenizers = None, None, {}, None, {}
        free_memory()


def _auto_dtype(model: str, revision: str | None):
    """The dtype ``from_pretrained`` picks when none is asked for (the config's), so that a dense
    request and a checkpoint pruned in that dtype share one loaded model."""
    try:
        config = AutoConfig.from_pretrained(model, revision=revision)
    except (OSError, ValueError):
        return None  # load_model reports the unloadable model
    dtype = getattr(config, "dtype", None) or torch.float32
    return getattr(torch, dtype) if isinstance(dtype, str) else dtype


_SHARED: SharedBase | None = None


@contextlib.contextmanager
def shared_base(*, join: bool = False):
    """Within the block, evaluations of one base model load it once (see the module docstring).

    ``join``: inside an outer block, use its base instead (a probe-states pass run by
    `langprune evaluate variant` shares the variant's loaded model).
    """
    global _SHARED
    if join and _SHARED is not None:
        yield _SHARED
        return
    outer, _SHARED = _SHARED, SharedBase()
    try:
        yield _SHARED
    finally:
        _SHARED.release()
        _SHARED = outer
