"""Export to compressed-tensors: a quantized checkpoint as packed integer weights (W4A16 and kin).

Written through the compressed-tensors library, the format transformers and vLLM read: its
``pack-quantized`` compressor packs each quantized linear (it re-quantizes the dequantized
weight with our scales and zero points, which gives back exactly our codes), and
``ModelCompressor.update_config`` writes the model's ``quantization_config``. Scales stay
float32, as GPTQ computed them; readers cast them to the model dtype if they compute in it.

What the pinned library cannot hold is refused before the model is loaded, one line each:
act-order with groups formed during quantization (a per-column group index, which
compressed-tensors no longer stores since 0.15) and sparse checkpoints (its sparse-bitmask
and 2:4 formats were removed in 0.15 too; they export as dense models).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from compressed_tensors.compressors import ModelCompressor, PackedQuantizationCompressor
from compressed_tensors.quantization import QuantizationArgs, QuantizationConfig, QuantizationScheme
from torch import nn

from .errors import LangpruneError
from .quantized import QuantizedWeight

FORMAT = "pack-quantized"


def scheme_for(ckpt_dir: Any, manifest: dict[str, Any], quantized: bool) -> QuantizationScheme:
    """The one compressed-tensors scheme of a checkpoint's quantized weights, or a one-line error saying why not."""
    if not quantized:
        raise LangpruneError(
            f"--format compressed-tensors: '{ckpt_dir}' is a sparse checkpoint ({manifest.get('method')}, "
            f"{manifest.get('structure')}), and the pinned compressed-tensors holds quantized weights only (its "
            f"sparse-bitmask and 2:4 formats were removed in 0.15, and current vLLM no longer reads them); "
            f"export it with --format dense")
    settings = {(info["bits"], info["group_size"], info["symmetric"], info["group_index"])
                for info in manifest["tensors"].values()}
    if len(settings) != 1:
        raise LangpruneError(f"--format compressed-tensors: '{ckpt_dir}' mixes quantization settings "
                             f"{sorted(settings)}; one export holds one scheme")
    bits, group_size, symmetric, indexed = settings.pop()
    if indexed:
        raise LangpruneError(f"--format compressed-tensors: '{ckpt_dir}' used act-order with groups formed during "
                             f"quantization, whose per-column group index compressed-tensors no longer stores; "
                             f"quantize with --gptq-static-groups (or without --gptq-act-order) to export it")
    weights = QuantizationArgs(num_bits=bits, type="int", symmetric=symmetric, dynamic=False,
                               strategy="group" if group_size else "channel", group_size=group_size or None)
    return QuantizationScheme(targets=["Linear"], weights=weights, format=FORMAT)


def compressed_state(weight: QuantizedWeight, scheme: QuantizationScheme) -> dict[str, torch.Tensor]:
    """One linear's compressed tensors (``weight_packed``, ``weight_scale``, ``weight_shape``, zero points if
    asymmetric). compressed-tensors keeps signed codes: ours minus 2**(bits - 1), for codes and zero points alike."""
    offset = 1 << (weight.bits - 1)
    local = {"weight": weight.dequantize(torch.float32), "weight_scale": weight.scales,
             "weight_zero_point": (weight.zeros.to(torch.int16) - offset).to(torch.int8)}
    return PackedQuantizationCompressor.compress(local, scheme)


def save_compressed(model: nn.Module, weights: Iterable[tuple[str, QuantizedWeight]], scheme: QuantizationScheme,
                    out: Path) -> None:
    """Save ``model`` (the dequantized checkpoint in memory) with ``weights`` compressed, plus its config block."""
    state = dict(model.state_dict())
    quantized = set()
    for name, weight in weights:
        module = name.removesuffix(".weight")
        del state[name]
        state.update({f"{module}.{key}": value for key, value in compressed_state(weight, scheme).items()})
        quantized.add(module)
    ignore = sorted(name for name, m in model.named_modules() if isinstance(m, nn.Linear) and name not in quantized)
    config = QuantizationConfig(config_groups={"group_0": scheme}, format=FORMAT, quantization_status="compressed",
                                ignore=ignore)
    model.save_pretrained(out, state_dict=state)
    ModelCompressor(quantization_config=config).update_config(str(out))
