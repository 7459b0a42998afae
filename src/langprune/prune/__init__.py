"""Pruning: structures, statistics, methods (pure functions) and the sequential engine.

:func:`prune_to_checkpoint` is what ``langprune prune`` calls: load the base model and
a calibration shard, prune layer by layer, write a sparse checkpoint, print a summary.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from tabulate import tabulate

from ..checkpoint import CHECKPOINT_KIND, base_weights_hash, build_manifest, kept_values, write_checkpoint
from ..errors import LangpruneError
from ..io import check_output, sha256_file
from ..models import load_model, model_files
from .engine import prune_model
from .methods import get_method
from .owl import OWL_LAMBDA, OWL_M, check_owl_structure, layer_outlier_ratios, owl_sparsities
from .structure import Structure, parse_structure, unstructured

ALLOCATIONS = ("uniform", "owl")  # how the target sparsity is spread over decoder layers


@dataclass
class PruneOutcome:
    """A finished run: where the checkpoint is, the pruned model in memory, the engine's report."""

    path: Path
    model: Any
    result: Any


def load_calibration(path: str | os.PathLike) -> tuple[Any, dict[str, Any]]:
    """Read ``input_ids`` (int64 [nsamples, seqlen]) from a safetensors shard, plus its identity."""
    path = Path(path)
    if not path.is_file():
        raise LangpruneError(f"--calibration '{path}' does not exist; make one with `langprune calibrate`")
    try:
        with safe_open(str(path), framework="pt") as shard:
            if "input_ids" not in shard.keys():
                raise LangpruneError(f"--calibration '{path}' has no tensor 'input_ids' "
                                     f"(found: {sorted(shard.keys())})")
            input_ids = shard.get_tensor("input_ids")
            metadata = shard.metadata() or {}
    except SafetensorError as exc:
        raise LangpruneError(f"--calibration '{path}' is not a safetensors file: {exc}") from exc
    if input_ids.dtype != torch.int64 or input_ids.dim() != 2 or input_ids.numel() == 0:
        raise LangpruneError(f"--calibration '{path}': 'input_ids' must be a non-empty int64 [nsamples, seqlen] "
                             f"tensor, got {input_ids.dtype} {list(input_ids.shape)}")
    try:
        shard_info = json.loads(metadata["langprune"]) if "langprune" in metadata else None
    except ValueError:
        shard_info = None
    return input_ids, {"path": str(path), "sha256": sha256_file(path), "nsamples": int(input_ids.shape[0]),
                       "seqlen": int(input_ids.shape[1]), "shard": shard_info}


def _check_device(device: str) -> None:
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise LangpruneError(f"--device {device} requested but no CUDA GPU is visible; use --device cpu")
    if not (device == "cpu" or device.startswith("cuda")):
        raise LangpruneError(f"--device '{device}' is not 'cpu' or 'cuda[:N]'")


def summary_table(layers: list) -> str:
    """Per-layer achieved sparsity, relative reconstruction error and seconds, as text."""
    rows = [[layer.index, f"{layer.sparsity:.4f}", "-" if layer.rel_error is None else f"{layer.rel_error:.4g}",
             f"{layer.seconds:.2f}"] for layer in layers]
    return tabulate(rows, headers=["layer", "sparsity", "rel. error ||WX-W'X||²/||WX||² (mean of linears)", "seconds"])


def prune_to_checkpoint(model: str, out: str | os.PathLike, method: str, *, sparsity: float | None = None,
                        structure: str | None = "unstructured", calibration: str | os.PathLike | None = None,
                        device: str = "cpu", batch_size: int = 1, dtype: str | None = None, offload: bool = False,
                        seed: int = 0, revision: str | None = None, trust_remote_code: bool = False,
                        tags: dict[str, str] | None = None, progress: bool = True,
                        measure_error: bool = True, method_params: dict[str, Any] | None = None,
                        allocation: str = "uniform", owl_m: float | None = None,
                        owl_lambda: float | None = None, force: bool = False) -> PruneOutcome:
    """Prune ``model`` and write a sparse checkpoint to ``out``; prints the per-layer summary.

    ``out`` is checked before any work: it may replace only an existing checkpoint (or,
    with ``force``, anything but the base model and the shard), and must be writable with
    room for the masks and values.

    ``measure_error=False`` skips the reconstruction-error matmuls (one per linear and
    batch in the propagation pass) for the largest runs. ``method_params`` override the
    method's published hyperparameters; ``allocation="owl"`` gives each decoder layer its
    own sparsity (OWL, threshold ``owl_m``, spread ``owl_lambda``) averaging to the target.
    """
    chosen = get_method(method, **(method_params or {}))
    parsed = parse_structure(structure, sparsity)
    if allocation not in ALLOCATIONS:
        raise LangpruneError(f"--allocation '{allocation}' is not one of: {', '.join(ALLOCATIONS)}")
    if allocation == "owl":
        check_owl_structure(parsed)
        if calibration is None:
            raise LangpruneError("--allocation owl needs --calibration SHARD.safetensors (outliers are Wanda scores)")
    owl_m = OWL_M if owl_m is None else owl_m
    owl_lambda = OWL_LAMBDA if owl_lambda is None else owl_lambda
    if batch_size < 1:
        raise LangpruneError(f"--batch-size {batch_size} must be at least 1")
    _check_device(device)
    if chosen.needs and calibration is None:
        raise LangpruneError(f"--method {method} needs --calibration SHARD.safetensors (only magnitude runs without)")
    weights = model_files(model, revision=revision)
    base_dirs = sorted({str(path.parent) for path in weights} | ({model} if os.path.isdir(model) else set()))
    # Masks take a bit per weight (at most 1/8 of the weight bytes); kept values at most the weights' bytes.
    weight_bytes = sum(path.stat().st_size for path in weights)
    check_output(out, CHECKPOINT_KIND, force=force, inputs=[*base_dirs, calibration],
                 need_bytes=weight_bytes if chosen.updates_weights else weight_bytes // 8)
    input_ids, calib_info = load_calibration(calibration) if calibration is not None else (None, None)
    torch.manual_seed(seed)
    started = time.perf_counter()
    base_hash = base_weights_hash(model, revision)
    loaded = load_model(model, dtype=dtype, device="cpu", revision=revision, trust_remote_code=trust_remote_code)
    vocab = loaded.get_input_embeddings().num_embeddings
    if input_ids is not None and (int(input_ids.min()) < 0 or int(input_ids.max()) >= vocab):
        raise LangpruneError(f"--calibration '{calibration}' holds token ids outside [0, {vocab}) of '{model}': "
                             f"it was tokenized for another model; rebuild it with this model's tokenizer")
    positions = getattr(loaded.config, "max_position_embeddings", None)
    if input_ids is not None and isinstance(positions, int) and input_ids.shape[1] > positions:
        raise LangpruneError(f"--calibration '{calibration}' has windows of {input_ids.shape[1]} tokens but '{model}' "
                             f"has only {positions} positions; rebuild the shard with --seqlen {positions} or less")
    allocation_info: dict[str, Any] = {"name": allocation}
    layer_structures: Structure | list[Structure] = parsed
    if allocation == "owl":
        ratios, seconds = layer_outlier_ratios(loaded, input_ids, m=owl_m, batch_size=batch_size, device=device,
                                               offload=offload)
        layer_sparsity = owl_sparsities(ratios, parsed.sparsity, owl_lambda)
        layer_structures = [unstructured(s) for s in layer_sparsity]
        allocation_info.update(M=owl_m, **{"lambda": owl_lambda}, outlier_ratios=ratios,
                               layer_sparsity=layer_sparsity, seconds=seconds)
    result = prune_model(loaded, chosen, layer_structures, input_ids, batch_size=batch_size, device=device,
                         offload=offload, progress=progress, measure_error=measure_error)
    run = {"device": device, "batch_size": batch_size, "offload": offload, "seconds": time.perf_counter() - started,
           "timings": result.timings}
    manifest = build_manifest(model, revision, base_hash, loaded, method=method, structure=parsed, seed=seed,
                              calibration=calib_info, tags=tags, run=run, layers=result.layers,
                              method_params=dict(chosen.params), allocation=allocation_info)
    values = kept_values(loaded, result.masks) if chosen.updates_weights else None
    path = write_checkpoint(out, result.masks, values, manifest, force=force)
    print(summary_table(result.layers))
    return PruneOutcome(path, loaded, result)
