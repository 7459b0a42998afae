"""Quantized weights: integer codes with per-group scales and zero points, stored bit-packed.

A weight quantized to ``bits`` bits is ``codes`` (integers in ``[0, 2**bits - 1]``, one per
entry) plus, per output row and group of input columns, a float32 ``scale`` and an integer
``zero``; entry ``(r, j)`` dequantizes to ``scale[r, g] * (codes[r, j] - zero[r, g])`` with
``g = group_index[j]``. Groups are runs of ``group_size`` consecutive columns, unless the
columns were quantized in another order (GPTQ's act-order with groups formed on the fly),
in which case ``group_index`` says which group each column belongs to.

Codes and zero points are held packed, ``bits`` bits each, most significant bit first,
over the row-major flattened tensor (the 1-bit case is a keep-mask's packing): what the
engine keeps in memory until a checkpoint is written, and what the checkpoint stores.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import torch

CODE_BITS = range(1, 9)  # the code widths the packing (and a checkpoint) can hold


def pack_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Integers in [0, 2**bits) -> uint8 tensor of ceil(numel * bits / 8) bytes.

    Eight codes fill exactly ``bits`` bytes: they are combined into one big-endian 64-bit
    word whose low ``bits`` bytes are kept.
    """
    flat = codes.detach().to("cpu").reshape(-1).numpy().astype(np.uint64)
    count = flat.size
    flat = np.concatenate([flat, np.zeros(-count % 8, dtype=np.uint64)]).reshape(-1, 8)
    shifts = np.arange(7, -1, -1, dtype=np.uint64) * np.uint64(bits)
    words = np.bitwise_or.reduce(flat << shifts, axis=1)
    packed = words.astype(">u8").view(np.uint8).reshape(-1, 8)[:, 8 - bits:].reshape(-1)
    return torch.from_numpy(packed[:(count * bits + 7) // 8].copy())


def unpack_codes(packed: torch.Tensor, bits: int, shape) -> torch.Tensor:
    """Inverse of :func:`pack_codes`: uint8 codes shaped ``shape``."""
    count = int(np.prod(shape, dtype=np.int64))
    data = packed.detach().to("cpu").numpy()
    groups = -(-count // 8)
    data = np.concatenate([data, np.zeros(groups * bits - data.size, dtype=np.uint8)]).reshape(groups, bits)
    words = np.zeros((groups, 8), dtype=np.uint8)
    words[:, 8 - bits:] = data
    words = words.reshape(-1).view(">u8").astype(np.uint64)
    shifts = np.arange(7, -1, -1, dtype=np.uint64) * np.uint64(bits)
    codes = (words[:, None] >> shifts) & np.uint64((1 << bits) - 1)
    return torch.from_numpy(codes.reshape(-1)[:count].astype(np.uint8)).reshape(tuple(shape))


@dataclass(frozen=True)
class QuantizedWeight:
    """One weight's codes, scales and zero points (unpacked; see the module docstring)."""

    codes: torch.Tensor  # uint8 [rows, columns], the weight's own column order
    scales: torch.Tensor  # float32 [rows, groups]
    zeros: torch.Tensor  # uint8 [rows, groups]
    bits: int
    group_size: int  # columns per group; 0: one group per row (per-channel)
    symmetric: bool  # zero points all at the middle of the code range, 2**(bits - 1)
    group_index: torch.Tensor | None = None  # int32 [columns]: each column's group, when not j // group_size

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.codes.shape)

    def column_groups(self) -> torch.Tensor:
        """Each column's group (int64 [columns])."""
        columns = self.codes.shape[1]
        if self.group_index is not None:
            return self.group_index.to(torch.int64)
        if self.group_size == 0:
            return torch.zeros(columns, dtype=torch.int64)
        return torch.arange(columns) // self.group_size

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``scale * (code - zero)`` in float32 (the quantizer's own arithmetic), then cast to ``dtype``."""
        groups = self.column_groups().to(self.codes.device)
        scales = self.scales.index_select(1, groups)
        zeros = self.zeros.index_select(1, groups).float()
        return (scales * (self.codes.float() - zeros)).to(dtype)


class PackedQuantized(Mapping):
    """Parameter name -> :class:`QuantizedWeight`, held with codes and zero points bit-packed."""

    def __init__(self) -> None:
        self.codes: dict[str, torch.Tensor] = {}
        self.zeros: dict[str, torch.Tensor] = {}
        self.scales: dict[str, torch.Tensor] = {}
        self.group_index: dict[str, torch.Tensor] = {}
        self.info: dict[str, dict] = {}  # shape, bits, group_size, groups

    def add(self, name: str, weight: QuantizedWeight) -> None:
        self.codes[name] = pack_codes(weight.codes, weight.bits)
        self.zeros[name] = pack_codes(weight.zeros, weight.bits)
        self.scales[name] = weight.scales.detach().to("cpu", torch.float32).contiguous()
        if weight.group_index is not None:
            self.group_index[name] = weight.group_index.detach().to("cpu", torch.int32).contiguous()
        self.info[name] = {"shape": list(weight.shape), "bits": weight.bits, "group_size": weight.group_size,
                           "groups": int(weight.scales.shape[1]), "symmetric": weight.symmetric,
                           "group_index": weight.group_index is not None}

    def __getitem__(self, name: str) -> QuantizedWeight:
        return unpack_weight(self.info[name], self.codes[name], self.scales[name], self.zeros[name],
                             self.group_index.get(name))

    def __contains__(self, name: object) -> bool:  # without unpacking
        return name in self.codes

    def __iter__(self) -> Iterator[str]:
        return iter(self.codes)

    def __len__(self) -> int:
        return len(self.codes)


def unpack_weight(info: dict, codes: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor,
                  group_index: torch.Tensor | None = None) -> QuantizedWeight:
    """A :class:`QuantizedWeight` from its packed codes and zero points and ``info`` (see PackedQuantized.info)."""
    rows = info["shape"][0]
    return QuantizedWeight(unpack_codes(codes, info["bits"], info["shape"]), scales,
                           unpack_codes(zeros, info["bits"], (rows, info["groups"])), info["bits"],
                           info["group_size"], info["symmetric"], group_index)
