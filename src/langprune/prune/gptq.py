"""GPTQ (Frantar et al., 2023): quantize a weight column by column, correcting the rest via H^-1.

:func:`gptq_quantize` is a pure function of a weight and its calibration Hessian
``H = 2/N * sum x x^T`` (the statistic SparseGPT uses, collected by the same engine pass).
Columns are quantized in blocks of 128; each column's rounding error is spread over the
not yet quantized columns through the upper Cholesky factor of ``H^-1``, exactly as the
authors' ``GPTQ.fasterquant`` with its ``Quantizer`` (per output row grids, no MSE search),
so the codes are bit-identical to theirs given the same Hessian (tests/test_gptq_reference.py).

Settings: ``bits`` (2, 3, 4 or 8), ``group_size`` (columns sharing one scale and zero point;
0 = one per row), ``symmetric`` (zero point fixed at the middle of the code range),
``act_order`` (columns in order of decreasing Hessian diagonal) and ``static_groups``
(group grids fixed from the weight before any update, so that with act-order each group is
still a run of consecutive columns and no per-column group index is needed); they and their
checks are torch-free, in :mod:`langprune.gptq_settings`.
"""

from __future__ import annotations

import torch

from ..gptq_settings import GptqSettings
from ..quantized import QuantizedWeight
from .methods import _damped_inverse_cholesky
from .quant_grid import row_grid
from .stats import LinearStats
from .structure import Structure

GPTQ_BLOCK = 128  # columns updated together (the authors' default blocksize)


def gptq_quantize(weight: torch.Tensor, hessian: torch.Tensor, settings: GptqSettings,
                  name: str = "weight") -> QuantizedWeight:
    """Quantize ``weight`` [rows, columns] given its input Hessian [columns, columns] (fp32 arithmetic)."""
    settings.check(weight.shape[1], name)
    w = weight.detach().float().clone()
    hessian = hessian.to(w.device, torch.float32).clone()
    rows, columns = w.shape
    size = settings.group_size or columns
    max_code = settings.max_code
    scale, zero = row_grid(w, max_code, settings.symmetric)  # per row, before dead inputs are zeroed (as published)
    dead = torch.diag(hessian) == 0
    hessian[dead, dead] = 1.0
    w[:, dead] = 0.0
    static = ([row_grid(w[:, start:start + size], max_code, settings.symmetric) for start in range(0, columns, size)]
              if settings.static_groups else [])
    order = None
    if settings.act_order:
        order = torch.argsort(torch.diag(hessian), descending=True)
        w = w[:, order]
        hessian = hessian[order][:, order]
    hinv = _damped_inverse_cholesky(hessian, name)
    del hessian

    codes = torch.empty(rows, columns, dtype=torch.uint8, device=w.device)
    scales, zeros = [], []
    for start in range(0, columns, GPTQ_BLOCK):
        end = min(start + GPTQ_BLOCK, columns)
        w_block = w[:, start:end].clone()
        h_block = hinv[start:end, start:end]
        err_block = torch.zeros_like(w_block)
        code_block = torch.empty_like(w_block)
        for i in range(end - start):
            column = start + i
            if settings.static_groups:
                scale, zero = static[int(order[column] if order is not None else column) // size]
            elif column % size == 0:
                if settings.group_size:  # a group starting inside a block sees the weights as of the block's start
                    scale, zero = row_grid(w[:, column:column + size], max_code, settings.symmetric)
                scales.append(scale)
                zeros.append(zero)
            current, code, err = w_block[:, i:i + 1], code_block[:, i:i + 1], err_block[:, i:i + 1]
            torch.div(current, scale, out=code).round_().add_(zero).clamp_(0, max_code)
            torch.sub(current, (code - zero).mul_(scale), out=err).div_(h_block[i, i])  # (w - dequantized) / d
            w_block[:, i:] -= err.matmul(h_block[i:i + 1, i:])
        codes[:, start:end] = code_block.to(torch.uint8)
        w[:, end:] -= err_block.matmul(hinv[start:end, end:])

    if settings.static_groups:
        scales, zeros = [s for s, _ in static], [z for _, z in static]
    group_index = None
    if order is not None:
        inverse = torch.argsort(order)
        codes = codes[:, inverse]
        if settings.group_size and not settings.static_groups:  # groups were runs of the permuted columns
            group_index = (inverse // size).to(torch.int32)
    return QuantizedWeight(codes.contiguous(), torch.cat(scales, dim=1).contiguous(),
                           torch.cat(zeros, dim=1).to(torch.uint8).contiguous(), settings.bits,
                           settings.group_size, settings.symmetric, group_index)


def gptq(weight: torch.Tensor, stats: LinearStats, structure: Structure | None = None, *, bits: int = 4,
         group_size: int = 128, symmetric: bool = False, act_order: bool = False,
         static_groups: bool = False) -> QuantizedWeight:
    """The engine's entry: GPTQ from the linear's collected Hessian (``structure`` does not apply)."""
    if stats.hessian is None:
        raise ValueError(f"{stats.name}: gptq needs the input Hessian")
    return gptq_quantize(weight, stats.hessian, GptqSettings(bits, group_size, symmetric, act_order, static_groups),
                         stats.name)
