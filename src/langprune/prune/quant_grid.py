"""The uniform quantization grid GPTQ and SparseGPT's joint mode round weights to.

One grid per output row (of a block of columns): a scale and a zero point spanning the row's
range and 0, as the authors' ``Quantizer`` finds it per channel without its MSE search; a
value ``x`` rounds to ``scale * (clamp(round(x / scale) + zero, 0, max_code) - zero)``.
"""

from __future__ import annotations

import torch


def row_grid(block: torch.Tensor, max_code: int, symmetric: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row scale and zero point ([rows, 1] float32) spanning the row's range of ``block`` and 0."""
    low = torch.minimum(block.min(dim=1).values, torch.zeros(block.shape[0], device=block.device))
    high = torch.maximum(block.max(dim=1).values, torch.zeros(block.shape[0], device=block.device))
    if symmetric:
        high = torch.maximum(low.abs(), high)
        negative = low < 0
        low[negative] = -high[negative]
    flat = (low == 0) & (high == 0)
    low[flat], high[flat] = -1.0, 1.0
    scale = (high - low) / max_code
    zero = (torch.full_like(scale, (max_code + 1) / 2) if symmetric else torch.round(-low / scale))
    return scale.unsqueeze(1), zero.unsqueeze(1)


def round_to_grid(values: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, max_code: int) -> torch.Tensor:
    """``values`` [rows, k] rounded to their rows' grids and dequantized (0 stays exactly 0)."""
    return scale * (torch.clamp(torch.round(values / scale) + zero, 0, max_code) - zero)
