"""Keep-masks stored at one bit per weight, in memory as on disk.

A bool mask costs a byte per weight (7 GB for an 8B model); packed it costs 1/8 of
that, which is what lets the engine hold every layer's mask until the checkpoint is
written. Bits are packed big-endian per byte over the row-major flattened weight.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np
import torch


def pack_mask(keep: torch.Tensor) -> torch.Tensor:
    """Bool tensor -> uint8 tensor of ceil(numel / 8) bytes."""
    return torch.from_numpy(np.packbits(keep.detach().to("cpu").reshape(-1).numpy()))


def unpack_mask(packed: torch.Tensor, shape) -> torch.Tensor:
    """Inverse of :func:`pack_mask` for a weight of ``shape``."""
    count = int(np.prod(shape, dtype=np.int64))
    return torch.from_numpy(np.unpackbits(packed.numpy(), count=count).astype(bool)).reshape(tuple(shape))


class PackedMasks(Mapping):
    """Parameter name -> bool keep-mask (True = kept), stored packed; unpacked on access."""

    def __init__(self) -> None:
        self.packed: dict[str, torch.Tensor] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.kept: dict[str, int] = {}

    def add(self, name: str, keep: torch.Tensor) -> None:
        self.packed[name] = pack_mask(keep)
        self.shapes[name] = tuple(keep.shape)
        self.kept[name] = int(torch.count_nonzero(keep))  # ~10x faster than sum() on bools

    def sparsity(self, name: str) -> float:
        return 1.0 - self.kept[name] / int(np.prod(self.shapes[name], dtype=np.int64))

    def __getitem__(self, name: str) -> torch.Tensor:
        return unpack_mask(self.packed[name], self.shapes[name])

    def __iter__(self) -> Iterator[str]:
        return iter(self.packed)

    def __len__(self) -> int:
        return len(self.packed)


def zero_pruned(weight: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Zero, in place, the entries of ``weight`` that ``keep`` prunes; returns ``weight``.

    A multiplication by the bool mask: about 4x faster than ``masked_fill_`` on the CPU
    (Gemma 3 270M: 0.56 s of a 14 s Wanda run). A pruned entry becomes +0 or -0, which
    compare equal and contribute nothing to any product.
    """
    return weight.mul_(keep.to(weight.device))
