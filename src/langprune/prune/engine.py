"""The sequential, memory-bounded layer-by-layer pruning driver.

Calibration activations live on the CPU (one [nsamples, seqlen, hidden] buffer in the
model dtype, overwritten in place layer after layer) and visit the compute device one
batch at a time. Layer i is calibrated on the outputs of the already pruned layers < i.
The keyword arguments the model hands each layer (masks, position ids, rotary
embeddings, cache flags) are captured from a real forward of the model with its layers
bypassed, never rebuilt, so the engine follows whatever the installed transformers
release passes.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch
from torch import nn
from tqdm.auto import tqdm

from ..bitmasks import PackedMasks, zero_pruned
from ..errors import LangpruneError
from ..models import decoder_layers, layer_linears
from ..quantized import PackedQuantized, QuantizedWeight
from .methods import Method
from .stats import LayerStatsCollector, LinearStats, ReconstructionMeter
from .structure import Structure


@dataclass
class LayerReport:
    """What one decoder layer's pruning achieved; goes into the manifest and the summary table."""

    index: int
    sparsity: float
    seconds: float
    rel_error: float | None
    linears: dict[str, dict[str, float | None]] = field(default_factory=dict)
    groups: list[list[str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass
class PruneResult:
    """Keep-masks per pruned weight (packed; the pruned weights themselves are in the model), reports.

    A quantization method leaves its codes, scales and zero points in ``quantized`` instead
    (the model then holds the dequantized weights).
    """

    masks: PackedMasks
    layers: list[LayerReport]
    timings: dict[str, float]
    quantized: PackedQuantized = field(default_factory=PackedQuantized)


def _layer_output(out: Any) -> torch.Tensor:
    """Decoder layers return a tensor (transformers 5) or a tuple whose first entry is it (4.x)."""
    return out[0] if isinstance(out, (tuple, list)) else out


def _batches(n: int, batch_size: int) -> list[slice]:
    return [slice(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]


@contextlib.contextmanager
def _layers_detached(model: nn.Module, layers_path: str) -> Iterator[None]:
    """Temporarily remove the decoder stack so ``model.to`` moves only embeddings, norms and head."""
    parent_path, _, attr = layers_path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    layers = getattr(parent, attr)
    setattr(parent, attr, nn.ModuleList())
    try:
        yield
    finally:
        setattr(parent, attr, layers)


def place_model(model: nn.Module, device: torch.device, offload: bool) -> None:
    """Put the whole model on ``device``, or (offload) everything except the decoder layers."""
    if not offload:
        model.to(device)
        return
    path, _ = decoder_layers(model)
    with _layers_detached(model, path):
        model.to(device)


@contextlib.contextmanager
def _layers_as_recorders(layers: nn.ModuleList, record: Callable[..., None]) -> Iterator[None]:
    """Temporarily make every decoder layer an identity that records what the model passes it.

    The model then runs embeddings, mask and rotary set-up for real while the layers cost
    nothing (and need not be on the device), so per-layer arguments (e.g. Qwen2's sliding
    or full attention masks) are captured exactly as the installed transformers builds them.
    """
    def recorder(index: int):
        def forward(*args, **kwargs):
            hidden = args[0] if args else kwargs.pop("hidden_states")
            record(index, hidden, kwargs)
            return hidden

        return forward

    for index, layer in enumerate(layers):
        layer.forward = recorder(index)  # instance attribute shadows the class method
    try:
        yield
    finally:
        for layer in layers:
            del layer.forward


def capture_layer_inputs(model: nn.Module, input_ids: torch.Tensor, batch_size: int,
                         device: torch.device) -> tuple[torch.Tensor, dict[int, list[dict[str, Any]]]]:
    """Run the real model (decoder layers bypassed) for each batch.

    Returns the layer-0 inputs on the CPU in the model dtype, and per batch size the
    keyword arguments the model passed to each decoder layer (on ``device``).
    """
    _, layers = decoder_layers(model)
    dtype = next(layers[0].parameters()).dtype
    inputs = torch.empty(*input_ids.shape, model.config.hidden_size, dtype=dtype)
    kwargs_by_size: dict[int, list[dict[str, Any]]] = {}
    batch: dict[int, dict[str, Any]] = {}

    def record(index: int, hidden: torch.Tensor, kwargs: dict[str, Any]) -> None:
        if index == 0:
            batch["hidden"] = hidden
        batch.setdefault("kwargs", []).append(kwargs)

    body = model.base_model  # the decoder without lm_head: no logits are computed
    with _layers_as_recorders(layers, record):
        for rows in _batches(input_ids.shape[0], batch_size):
            batch.clear()
            body(input_ids=input_ids[rows].to(device), use_cache=False)
            if len(batch.get("kwargs", [])) != len(layers):
                raise RuntimeError(f"the model called {len(batch.get('kwargs', []))} of {len(layers)} decoder layers")
            inputs[rows] = batch["hidden"].to("cpu", dtype)
            kwargs_by_size.setdefault(batch["hidden"].shape[0], batch["kwargs"])
    return inputs, kwargs_by_size


def run_layer(layer: nn.Module, hidden: torch.Tensor, kwargs: dict[str, Any]) -> torch.Tensor:
    return _layer_output(layer(hidden, **kwargs))


def forward_layer_over(layer: nn.Module, inputs: torch.Tensor, kwargs_by_size: dict[int, dict[str, Any]],
                       batch_size: int, device: torch.device, *, write_back: bool,
                       before_batch: Callable[[], None] | None = None) -> None:
    """Run ``layer`` over all stored inputs, one batch on the device at a time.

    ``kwargs_by_size`` holds this layer's keyword arguments per batch size. With
    ``write_back`` the outputs overwrite the inputs in place, so the CPU holds one
    activation buffer however many layers there are.
    """
    for rows in _batches(inputs.shape[0], batch_size):
        if before_batch is not None:
            before_batch()
        hidden = inputs[rows].to(device)
        out = run_layer(layer, hidden, kwargs_by_size[hidden.shape[0]])
        if write_back:
            inputs[rows] = out.to("cpu", inputs.dtype)
        del hidden, out


def layer_kwargs(kwargs_by_size: dict[int, list[dict[str, Any]]], index: int) -> dict[int, dict[str, Any]]:
    """Layer ``index``'s keyword arguments per batch size."""
    return {size: per_layer[index] for size, per_layer in kwargs_by_size.items()}


def _mask_and_apply(name: str, linear: nn.Linear, method: Method, stats: LinearStats,
                    structure: Structure) -> torch.Tensor | QuantizedWeight:
    """Run the method on one linear, write the new weight into it, return the keep-mask (or the quantized weight)."""
    out = method.run(linear.weight.data, stats.for_linear(name), structure)
    if isinstance(out, QuantizedWeight):
        linear.weight.data.copy_(out.dequantize(linear.weight.dtype))
        return out
    keep, new_weight = out
    if new_weight is None:
        zero_pruned(linear.weight.data, keep)
    else:
        linear.weight.data.copy_(new_weight)
    return keep


def _prune_linears(linears: dict[str, nn.Linear], stats: dict[str, LinearStats], method: Method,
                   structure: Structure, result: PruneResult) -> None:
    for name, linear in linears.items():
        out = _mask_and_apply(name, linear, method, stats.get(name, LinearStats(name)), structure)
        (result.quantized if isinstance(out, QuantizedWeight) else result.masks).add(f"{name}.weight", out)


class _WarningLog(logging.Handler):
    """Collects the methods' warnings (e.g. Cholesky retries) so they reach the manifest, not just stderr."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def _method_warnings() -> Iterator[list[str]]:
    handler = _WarningLog()
    logger = logging.getLogger("langprune.prune")
    logger.addHandler(handler)
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)


def _layer_report(index: int, linears: dict[str, nn.Linear], result: PruneResult, errors: dict[str, float] | None,
                  groups: list[list[str]], seconds: float) -> LayerReport:
    masks = result.masks

    def sparsity(name: str) -> float:  # a quantized weight keeps every entry
        return masks.sparsity(f"{name}.weight") if f"{name}.weight" in masks.kept else 0.0

    total = sum(linear.weight.numel() for linear in linears.values())
    kept = sum(masks.kept.get(f"{name}.weight", linear.weight.numel()) for name, linear in linears.items())
    per_linear = {name: {"sparsity": sparsity(name), "rel_error": None if errors is None else errors[name]}
                  for name in linears}
    mean_error = None if errors is None else sum(errors.values()) / len(errors)
    return LayerReport(index, 1.0 - kept / total, seconds, mean_error, per_linear, groups)


@dataclass
class _Calibration:
    """The stored layer inputs (CPU) and how to feed them to the device."""

    inputs: torch.Tensor
    kwargs_by_size: dict[int, list[dict[str, Any]]]
    batch_size: int
    device: torch.device

    def run(self, layer: nn.Module, index: int, *, write_back: bool,
            before_batch: Callable[[], None] | None = None) -> None:
        forward_layer_over(layer, self.inputs, layer_kwargs(self.kwargs_by_size, index), self.batch_size,
                           self.device, write_back=write_back, before_batch=before_batch)


def _collect_stats(layer: nn.Module, index: int, linears: dict[str, nn.Linear], method: Method, calib: _Calibration,
                   timings: dict[str, float], row_languages: list[int] | None = None
                   ) -> tuple[dict[str, LinearStats], list[list[str]]]:
    """Forward the dense layer over all inputs with hooks; returns per-linear stats and shared-input groups."""
    with LayerStatsCollector(linears, method.needs, row_languages) as collector:
        started = time.perf_counter()
        calib.run(layer, index, write_back=False, before_batch=collector.start_batch)
        timings["forward"] += time.perf_counter() - started - collector.seconds
        timings["stats"] += collector.seconds
    return collector.results(), list(collector.groups().values())


def _propagate(layer: nn.Module, index: int, linears: dict[str, nn.Linear], dense: dict[str, torch.Tensor] | None,
               calib: _Calibration, timings: dict[str, float]) -> dict[str, float] | None:
    """Run the pruned layer over all inputs, replacing them by its outputs; measure errors if ``dense`` is given."""
    meter = ReconstructionMeter(linears, dense) if dense is not None else contextlib.nullcontext()
    with meter:
        started = time.perf_counter()
        calib.run(layer, index, write_back=True)
        error_seconds = getattr(meter, "seconds", 0.0)
        timings["forward"] += time.perf_counter() - started - error_seconds
        timings["error"] += error_seconds
    return meter.relative_errors() if dense is not None else None


def prune_model(model: nn.Module, method: Method, structure: Structure | list[Structure],
                input_ids: torch.Tensor | None = None, *,
                batch_size: int = 1, device: str | torch.device = "cpu", offload: bool = False,
                measure_error: bool = True, progress: bool = True,
                on_stats: Callable[[int, dict[str, LinearStats]], None] | None = None,
                row_languages: list[int] | None = None) -> PruneResult:
    """Prune every linear of every decoder layer of ``model`` in place, sequentially.

    ``input_ids`` ([nsamples, seqlen] int64) may be None only for methods that need no
    statistics; then no forward pass runs and no reconstruction error is measured.
    ``on_stats(layer_index, stats)`` sees each layer's statistics (used by tests).
    ``structure`` may be a list with one structure per decoder layer (layer-wise sparsity, e.g. OWL).
    ``row_languages`` gives each calibration row's language index (methods needing ``LANGUAGES``).
    """
    device = torch.device(device)
    if method.needs and input_ids is None:
        raise LangpruneError("this method needs calibration data: pass --calibration SHARD.safetensors")
    _, layers = decoder_layers(model)
    per_layer = structure if isinstance(structure, list) else [structure] * len(layers)
    if len(per_layer) != len(layers):
        raise ValueError(f"{len(per_layer)} layer structures for {len(layers)} decoder layers")
    names = {module: name for name, module in model.named_modules()}
    result = PruneResult(PackedMasks(), [], {"capture": 0.0, "stats": 0.0, "masks": 0.0, "forward": 0.0, "error": 0.0})
    timings = result.timings
    was_training = model.training
    model.eval()
    with torch.no_grad():
        calib = None
        if input_ids is not None:
            place_model(model, device, offload)
            started = time.perf_counter()
            calib = _Calibration(*capture_layer_inputs(model, input_ids, batch_size, device), batch_size, device)
            timings["capture"] = time.perf_counter() - started
        for index, layer in enumerate(tqdm(layers, desc="pruning layers", unit="layer", disable=not progress)):
            started = time.perf_counter()
            if offload and calib is not None:
                layer.to(device)
            linears = layer_linears(layer, names[layer])
            stats: dict[str, LinearStats] = {}
            groups: list[list[str]] = []
            if method.needs:
                stats, groups = _collect_stats(layer, index, linears, method, calib, timings, row_languages)
                if on_stats is not None:
                    on_stats(index, stats)
            dense = ({name: linear.weight.detach().clone() for name, linear in linears.items()}
                     if measure_error and calib is not None else None)
            t0 = time.perf_counter()
            with _method_warnings() as warnings:
                _prune_linears(linears, stats, method, per_layer[index], result)
            timings["masks"] += time.perf_counter() - t0
            del stats
            errors = _propagate(layer, index, linears, dense, calib, timings) if calib is not None else None
            del dense
            if offload and calib is not None:
                layer.to("cpu")
            report = _layer_report(index, linears, result, errors, groups, time.perf_counter() - started)
            report.warnings = warnings
            result.layers.append(report)
        if offload and calib is not None:
            model.to("cpu")
    model.train(was_training)
    return result


def dense_layer_values(model: nn.Module, input_ids: torch.Tensor, needs: frozenset[str],
                       value: Callable[[dict[str, nn.Linear], dict[str, LinearStats]], float], *,
                       batch_size: int = 1, device: str | torch.device = "cpu", offload: bool = False,
                       row_languages: list[int] | None = None) -> tuple[list[float], float]:
    """One number per decoder layer of the *dense* model, from its linears and their input statistics.

    What a layer-wise sparsity allocation (OWL, CWL) needs before layer 0 is pruned: one
    pass, each layer fed the dense outputs of the layers below. Returns (values, seconds).
    """
    started = time.perf_counter()
    device = torch.device(device)
    _, layers = decoder_layers(model)
    names = {module: name for name, module in model.named_modules()}
    values = []
    with torch.no_grad():
        place_model(model, device, offload)
        calib = _Calibration(*capture_layer_inputs(model, input_ids, batch_size, device), batch_size, device)
        for index, layer in enumerate(layers):
            if offload:
                layer.to(device)
            linears = layer_linears(layer, names[layer])
            with LayerStatsCollector(linears, needs, row_languages) as collector:  # stats and dense outputs, one pass
                calib.run(layer, index, write_back=True, before_batch=collector.start_batch)
            values.append(value(linears, collector.results()))
            if offload:
                layer.to("cpu")
        if offload:
            model.to("cpu")
    return values, time.perf_counter() - started
