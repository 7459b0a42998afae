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
from ..data.shards import row_languages
from ..errors import LangpruneError
from ..io import ArtifactKind, check_output, sha256_file, write_json
from ..models import decoder_layers, load_model, model_files
from .engine import dense_layer_values, prune_model
from .methods import get_method
from .mwanda import CWL_LAMBDA, check_languages, cross_lingual_correlation, cwl_sparsities
from .owl import OWL_LAMBDA, OWL_M, check_owl_structure, layer_outlier_ratios, owl_sparsities
from .stats import LANGUAGES
from .structure import Structure, parse_structure, unstructured

ALLOCATIONS = ("uniform", "owl", "cwl")  # how the target sparsity is spread over decoder layers


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


def calibration_row_languages(calib_info: dict[str, Any], what: str) -> list[int]:
    """Each calibration row's language index (M-Wanda, CWL), from the shard's metadata; at least two languages."""

    shard = calib_info.get("shard") or {}
    languages = row_languages(shard)
    if len(languages) != calib_info["nsamples"]:
        raise LangpruneError(f"{what} needs the language of every calibration row, but --calibration "
                             f"'{calib_info['path']}' records {len(languages)} for {calib_info['nsamples']} rows "
                             f"(no or altered `langprune calibrate` metadata); rebuild it with `langprune calibrate`")
    check_languages(languages, what)
    order = list(dict.fromkeys(languages))
    return [order.index(lang) for lang in languages]


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


def _load_base(model: str, input_ids: Any, calibration: Any, *, dtype: str | None, revision: str | None,
               trust_remote_code: bool) -> Any:
    """The base model on the CPU, after checking the calibration ids fit its vocabulary and positions."""

    loaded = load_model(model, dtype=dtype, device="cpu", revision=revision, trust_remote_code=trust_remote_code)
    vocab = loaded.get_input_embeddings().num_embeddings
    if input_ids is not None and (int(input_ids.min()) < 0 or int(input_ids.max()) >= vocab):
        raise LangpruneError(f"--calibration '{calibration}' holds token ids outside [0, {vocab}) of '{model}': "
                             f"it was tokenized for another model; rebuild it with this model's tokenizer")
    positions = getattr(loaded.config, "max_position_embeddings", None)
    if input_ids is not None and isinstance(positions, int) and input_ids.shape[1] > positions:
        raise LangpruneError(f"--calibration '{calibration}' has windows of {input_ids.shape[1]} tokens but '{model}' "
                             f"has only {positions} positions; rebuild the shard with --seqlen {positions} or less")
    return loaded


OWL_RATIOS_FORMAT = 1


def _is_owl_ratios(path: Path) -> bool:
    """A file of :func:`write_owl_ratios`: its marker is the kind and the format version."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(record, dict) and record.get("kind") == "owl-ratios" and record.get("format") == OWL_RATIOS_FORMAT


OWL_RATIOS_KIND = ArtifactKind("OWL ratios file", recognise=_is_owl_ratios)


def write_owl_ratios(model: str, calibration: str | os.PathLike, out: str | os.PathLike, *, m: float | None = None,
                     device: str = "cpu", batch_size: int = 1, dtype: str | None = None, offload: bool = False,
                     revision: str | None = None, trust_remote_code: bool = False, force: bool = False) -> dict:
    """OWL's per-layer outlier ratios of the dense ``model`` on ``calibration``, written as JSON to ``out``.

    They depend only on (base weights, dtype, shard, M), not on the method or the target
    sparsity, so one file serves every OWL pruning run of that model and shard
    (``prune_to_checkpoint(owl_ratios=...)``), which checks the recorded identity.
    """

    m = OWL_M if m is None else m
    if batch_size < 1:
        raise LangpruneError(f"--batch-size {batch_size} must be at least 1")
    _check_device(device)
    check_output(out, OWL_RATIOS_KIND, force=force, inputs=[model, calibration], need_bytes=1 << 16)
    input_ids, calib_info = load_calibration(calibration)
    base_hash = base_weights_hash(model, revision)
    loaded = _load_base(model, input_ids, calibration, dtype=dtype, revision=revision,
                        trust_remote_code=trust_remote_code)
    ratios, seconds = layer_outlier_ratios(loaded.eval(), input_ids, m=m, batch_size=batch_size, device=device,
                                           offload=offload)
    record = {"format": OWL_RATIOS_FORMAT, "kind": "owl-ratios", "model": model, "revision": revision,
              "base_weights_sha256": base_hash["sha256"], "dtype": str(loaded.dtype),
              "calibration": {k: calib_info[k] for k in ("path", "sha256", "nsamples", "seqlen")},
              "M": m, "outlier_ratios": ratios, "device": device}
    # No timings inside: equal inputs give equal bytes (cache keys).
    write_json(out, record, OWL_RATIOS_KIND, force=force)
    return {**record, "seconds": seconds}


def read_owl_ratios(path: str | os.PathLike, *, base_sha256: str, calib_info: dict[str, Any], m: float, dtype: str,
                    layers: int) -> tuple[list[float], dict[str, Any]]:
    """Ratios from a :func:`write_owl_ratios` file, refused unless made for this model, dtype, shard and M."""

    path = Path(path)
    redo = "recompute it with `langprune owl-ratios` for this --model, --calibration, --dtype and --owl-m"
    if not path.is_file():
        raise LangpruneError(f"--owl-ratios '{path}' does not exist; {redo}")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise LangpruneError(f"--owl-ratios '{path}' is not JSON ({exc}); {redo}") from exc
    if not isinstance(record, dict) or record.get("kind") != "owl-ratios" or record.get("format") != OWL_RATIOS_FORMAT:
        raise LangpruneError(f"--owl-ratios '{path}' is not an OWL ratios file of format {OWL_RATIOS_FORMAT}; {redo}")
    stale = [what for what, recorded, wanted in [
        ("base model weights", record.get("base_weights_sha256"), base_sha256),
        ("calibration shard", (record.get("calibration") or {}).get("sha256"), calib_info["sha256"]),
        ("dtype", record.get("dtype"), dtype), ("M", record.get("M"), m)] if recorded != wanted]
    ratios = record.get("outlier_ratios")
    if not isinstance(ratios, list) or len(ratios) != layers:
        stale.append(f"number of layers ({len(ratios) if isinstance(ratios, list) else 'none'} for {layers})")
    if stale:
        raise LangpruneError(f"--owl-ratios '{path}' was computed for another {', '.join(stale)}; {redo}")
    return [float(r) for r in ratios], {"path": str(path), "sha256": sha256_file(path)}


def prune_to_checkpoint(model: str, out: str | os.PathLike, method: str, *, sparsity: float | None = None,
                        structure: str | None = "unstructured", calibration: str | os.PathLike | None = None,
                        device: str = "cpu", batch_size: int = 1, dtype: str | None = None, offload: bool = False,
                        seed: int = 0, revision: str | None = None, trust_remote_code: bool = False,
                        tags: dict[str, str] | None = None, progress: bool = True,
                        measure_error: bool = True, method_params: dict[str, Any] | None = None,
                        allocation: str = "uniform", owl_m: float | None = None,
                        owl_lambda: float | None = None, cwl_lambda: float | None = None,
                        owl_ratios: str | os.PathLike | None = None, force: bool = False) -> PruneOutcome:
    """Prune ``model`` and write a sparse checkpoint to ``out``; prints the per-layer summary.

    ``out`` is checked before any work: it may replace only an existing checkpoint (or,
    with ``force``, anything but the base model and the shard), and must be writable with
    room for the masks and values.

    ``measure_error=False`` skips the reconstruction-error matmuls (one per linear and
    batch in the propagation pass) for the largest runs. ``method_params`` override the
    method's published hyperparameters; ``allocation="owl"`` gives each decoder layer its
    own sparsity (OWL, threshold ``owl_m``, spread ``owl_lambda``) averaging to the target;
    ``allocation="cwl"`` does so from the layers' cross-lingual correlation (M-Wanda's CWL,
    spread ``cwl_lambda``). M-Wanda and CWL read each row's language from the shard's metadata.
    ``owl_ratios`` is a file from :func:`write_owl_ratios` for this model, shard and M: OWL then
    skips its dense pass (paid once per shard instead of once per pruning run).
    """

    chosen = get_method(method, **(method_params or {}))
    parsed = parse_structure(structure, sparsity)
    if allocation not in ALLOCATIONS:
        raise LangpruneError(f"--allocation '{allocation}' is not one of: {', '.join(ALLOCATIONS)}")
    if owl_ratios is not None and allocation != "owl":
        raise LangpruneError(f"--owl-ratios applies to --allocation owl, not --allocation {allocation}")
    if allocation in ("owl", "cwl"):
        check_owl_structure(parsed, allocation)
        if calibration is None:
            raise LangpruneError(f"--allocation {allocation} needs --calibration SHARD.safetensors (it is computed "
                                 f"from the dense model's activations)")
    owl_m = OWL_M if owl_m is None else owl_m
    owl_lambda = OWL_LAMBDA if owl_lambda is None else owl_lambda
    cwl_lambda = CWL_LAMBDA if cwl_lambda is None else cwl_lambda
    if batch_size < 1:
        raise LangpruneError(f"--batch-size {batch_size} must be at least 1")
    _check_device(device)
    if chosen.needs and calibration is None:
        raise LangpruneError(f"--method {method} needs --calibration SHARD.safetensors (only magnitude runs without)")
    weights = model_files(model, revision=revision)
    base_dirs = sorted({str(path.parent) for path in weights} | ({model} if os.path.isdir(model) else set()))
    # Masks take a bit per weight (at most 1/8 of the weight bytes); kept values at most the weights' bytes.
    weight_bytes = sum(path.stat().st_size for path in weights)
    check_output(out, CHECKPOINT_KIND, force=force, inputs=[*base_dirs, calibration, owl_ratios],
                 need_bytes=weight_bytes if chosen.updates_weights else weight_bytes // 8)
    input_ids, calib_info = load_calibration(calibration) if calibration is not None else (None, None)
    languages = None  # each calibration row's language index, for the language-aware method and allocation
    if LANGUAGES in chosen.needs or allocation == "cwl":
        languages = calibration_row_languages(calib_info, f"--method {method}" if LANGUAGES in chosen.needs
                                              else "--allocation cwl")
    torch.manual_seed(seed)
    started = time.perf_counter()
    base_hash = base_weights_hash(model, revision)
    loaded = _load_base(model, input_ids, calibration, dtype=dtype, revision=revision,
                        trust_remote_code=trust_remote_code)
    allocation_info: dict[str, Any] = {"name": allocation}
    layer_structures: Structure | list[Structure] = parsed
    if allocation == "owl":
        if owl_ratios is not None:  # computed once per (model, shard, M) by `langprune owl-ratios`
            ratios, cached = read_owl_ratios(owl_ratios, base_sha256=base_hash["sha256"], calib_info=calib_info,
                                             m=owl_m, dtype=str(loaded.dtype), layers=len(decoder_layers(loaded)[1]))
            seconds = 0.0
        else:
            ratios, seconds = layer_outlier_ratios(loaded, input_ids, m=owl_m, batch_size=batch_size,
                                                   device=device, offload=offload)
            cached = None
        layer_sparsity = owl_sparsities(ratios, parsed.sparsity, owl_lambda)
        layer_structures = [unstructured(s) for s in layer_sparsity]
        allocation_info.update(M=owl_m, **{"lambda": owl_lambda}, outlier_ratios=ratios,
                               layer_sparsity=layer_sparsity, seconds=seconds)
        if cached is not None:
            allocation_info["ratios_file"] = cached
    elif allocation == "cwl":
        correlations, seconds = dense_layer_values(
            loaded, input_ids, frozenset({LANGUAGES}), lambda linears, stats: cross_lingual_correlation(stats),
            batch_size=batch_size, device=device, offload=offload, row_languages=languages)
        layer_sparsity = cwl_sparsities(correlations, parsed.sparsity, cwl_lambda)
        layer_structures = [unstructured(s) for s in layer_sparsity]
        allocation_info.update(**{"lambda": cwl_lambda}, correlations=correlations, layer_sparsity=layer_sparsity,
                               seconds=seconds)
    result = prune_model(loaded, chosen, layer_structures, input_ids, batch_size=batch_size, device=device,
                         offload=offload, progress=progress, measure_error=measure_error, row_languages=languages)
    run = {"device": device, "batch_size": batch_size, "offload": offload, "seconds": time.perf_counter() - started,
           "timings": result.timings}
    manifest = build_manifest(model, revision, base_hash, loaded, method=method, structure=parsed, seed=seed,
                              calibration=calib_info, tags=tags, run=run, layers=result.layers,
                              method_params=dict(chosen.params), allocation=allocation_info,
                              updates_weights=chosen.updates_weights)
    values = kept_values(loaded, result.masks) if chosen.updates_weights else None
    path = write_checkpoint(out, result.masks, values, manifest, force=force)
    print(summary_table(result.layers))
    return PruneOutcome(path, loaded, result)
