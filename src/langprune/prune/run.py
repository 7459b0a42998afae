"""A pruning run: one request, checked whole before any model loads, then pruned into a checkpoint.

:func:`prune_to_checkpoint` is what ``langprune prune`` calls, :func:`write_owl_ratios`
what ``langprune owl-ratios`` calls. Everything that can be known without the model is
refused first, with one line naming the flag: the method's and allocation's settings
(against the registry), structure, feasibility, device, the output, the calibration shard
and its languages, the OWL-ratios file, module names. Only then is the base model loaded.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tabulate import tabulate

from .. import owl_ratios as ratios_file
from .. import registry
from ..checkpoint import CHECKPOINT_KIND, base_weights_hash, build_manifest, kept_values, write_checkpoint
from ..data.shards import read_calibration, row_language_indices
from ..errors import LangpruneError
from ..io import check_output, write_json
from ..models import (
    decoder_layers,
    layer_input_sizes,
    layer_module_names,
    load_config,
    load_model,
    model_files,
    resolve_dtype,
)
from ..ranges import POSITIVE_INT, SEED
from .engine import prune_model
from .methods import Method, get_method
from .structure import Structure, parse_structure, unstructured


@dataclass(frozen=True)
class PruneRequest:
    """Everything one pruning run depends on, as given (``langprune prune`` builds it from its flags).

    ``method_params`` and ``allocation_params`` are keyed by the registry's parameter names
    (``{"a": 0.7}``, ``{"M": 5.0, "lambda": 0.05}``); unset ones take the published defaults.
    ``owl_ratios`` is a file from :func:`write_owl_ratios` for this model, shard, dtype and M:
    OWL then skips its dense pass. ``command`` is the command line, recorded in the manifest.
    ``measure_error=False`` skips the reconstruction-error matmuls (one per linear and batch).
    """

    model: str
    out: str | os.PathLike
    method: str
    sparsity: float | None = None
    structure: str | None = "unstructured"
    calibration: str | os.PathLike | None = None
    method_params: Mapping[str, Any] = field(default_factory=dict)
    allocation: str = registry.UNIFORM
    allocation_params: Mapping[str, Any] = field(default_factory=dict)
    owl_ratios: str | os.PathLike | None = None
    device: str = "cpu"
    batch_size: int = 1
    dtype: str | None = None
    offload: bool = False
    seed: int = 0
    revision: str | None = None
    trust_remote_code: bool = False
    tags: Mapping[str, str] = field(default_factory=dict)
    progress: bool = True
    measure_error: bool = True
    force: bool = False
    command: tuple[str, ...] | None = None


@dataclass(frozen=True)
class CheckedRequest:
    """A request whose settings passed every check that needs no file: what the run uses."""

    request: PruneRequest
    method: Method
    structure: Structure
    allocation: registry.AllocationSpec
    allocation_params: dict[str, Any]

    @property
    def spec(self) -> registry.MethodSpec:
        return registry.method(self.method.name)

    @property
    def needs_calibration(self) -> bool:
        return self.spec.needs_calibration or self.allocation.needs_calibration

    def language_user(self) -> str | None:
        """The flag whose choice needs each calibration row's language (None: nothing does)."""
        if self.spec.needs_language_mix:
            return f"--method {self.method.name}"
        if self.allocation.needs_language_mix:
            return f"--allocation {self.allocation.name}"
        return None


@dataclass
class PruneOutcome:
    """A finished run: where the checkpoint is, the pruned model in memory, the engine's report."""

    path: Path
    model: Any
    result: Any


def check_device(device: str) -> None:
    if not (device == "cpu" or device.startswith("cuda")):
        raise LangpruneError(f"--device '{device}' is not 'cpu' or 'cuda[:N]'")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise LangpruneError(f"--device {device} requested but no CUDA GPU is visible; use --device cpu")


def _check_run_settings(device: str, batch_size: int, dtype: str | None) -> None:
    """The settings every dense or pruning pass shares."""
    POSITIVE_INT.check(batch_size, "--batch-size")
    check_device(device)
    resolve_dtype(dtype)


def check_request(request: PruneRequest) -> CheckedRequest:
    """Every check that reads no file: method and allocation settings, structure, feasibility, device."""
    spec = registry.method(request.method)
    method = get_method(spec.name, **request.method_params)
    structure = _structure(spec, request)
    if spec.unstructured_only and structure.is_nm:
        raise LangpruneError(f"--method {spec.name} works on unstructured masks only, not --structure "
                             f"{structure.label}; use --structure unstructured")
    allocation = registry.allocation(request.allocation)
    if not spec.combines_with(allocation.name):
        raise LangpruneError(f"--method {spec.name} does not combine with --allocation {allocation.name} (it "
                             f"combines with: {', '.join(spec.allocations)})")
    params = allocation.bind(request.allocation_params)
    if allocation.unstructured_only and structure.is_nm:
        raise LangpruneError(f"--allocation {allocation.name} needs unstructured sparsity, not --structure "
                             f"{structure.label}: layer-wise ratios do not give pure N:M masks "
                             f"(use --allocation {registry.UNIFORM})")
    if allocation.spread is not None:
        allocation.check_feasible(structure.sparsity, params[allocation.spread.name])
    if request.owl_ratios is not None and allocation.name != ratios_file.ALLOCATION:
        raise LangpruneError(f"--owl-ratios applies to --allocation {ratios_file.ALLOCATION}, not --allocation "
                             f"{allocation.name}")
    if spec.needs_calibration and request.calibration is None:
        without = ", ".join(name for name, other in registry.METHODS.items() if not other.needs_calibration)
        raise LangpruneError(f"--method {spec.name} needs --calibration SHARD.safetensors (only {without} "
                             f"runs without)")
    if allocation.needs_calibration and request.calibration is None:
        raise LangpruneError(f"--allocation {allocation.name} needs --calibration SHARD.safetensors (it is computed "
                             f"from the dense model's activations)")
    SEED.check(request.seed, "--seed")
    _check_run_settings(request.device, request.batch_size, request.dtype)
    return CheckedRequest(request, method, structure, allocation, params)


def _structure(spec: registry.MethodSpec, request: PruneRequest) -> Structure:
    """The requested sparsity structure; a quantization method keeps every weight and takes none."""
    if not spec.quantizes:
        return parse_structure(request.structure, request.sparsity)
    keep_all = unstructured(0.0)
    if request.sparsity is not None or (request.structure or keep_all.label).strip().lower() != keep_all.label:
        given = "--sparsity" if request.sparsity is not None else f"--structure {request.structure}"
        raise LangpruneError(f"--method {spec.name} quantizes every weight and prunes none: drop {given} (its "
                             f"settings are its own flags, --{spec.name}-*)")
    return keep_all


def _check_layer_sizes(checked: CheckedRequest, config: Any) -> None:
    """Settings that depend on the model's layer sizes (e.g. a quantization group size), from its config alone."""
    if checked.spec.check_layers is not None:
        sizes = layer_input_sizes(config, trust_remote_code=checked.request.trust_remote_code)
        checked.spec.check_sizes(checked.method.params, sizes)


def _check_module_names(checked: CheckedRequest, config: Any) -> None:
    """Hyperparameters naming a module of the decoder layers must name one this model has (config only)."""
    request = checked.request
    named = [p for p in checked.spec.params if p.module_name and checked.method.params[p.name] != registry.NO_MODULE]
    if not named:
        return
    names = layer_module_names(config, trust_remote_code=request.trust_remote_code)
    for param in named:
        value = checked.method.params[param.name]
        if value not in names:
            shown = ", ".join(sorted(n for n in names if not n.isdigit()))
            raise LangpruneError(f"{param.flag} '{value}' names no module inside the decoder layers of "
                                 f"'{request.model}' (they have: {shown}); use one of them or "
                                 f"{param.flag} {registry.NO_MODULE}")


def _check_ids_fit(input_ids: Any, calibration: Any, model: str, vocab: Any, positions: Any) -> None:
    """The calibration ids must be tokens of this model's vocabulary, in windows its positions cover."""
    if input_ids is None:
        return
    if isinstance(vocab, int) and (int(input_ids.min()) < 0 or int(input_ids.max()) >= vocab):
        raise LangpruneError(f"--calibration '{calibration}' holds token ids outside [0, {vocab}) of '{model}': "
                             f"it was tokenized for another model; rebuild it with this model's tokenizer")
    if isinstance(positions, int) and input_ids.shape[1] > positions:
        raise LangpruneError(f"--calibration '{calibration}' has windows of {input_ids.shape[1]} tokens but '{model}' "
                             f"has only {positions} positions; rebuild the shard with --seqlen {positions} or less")


def summary_table(layers: list) -> str:
    """Per-layer achieved sparsity, relative reconstruction error and seconds, as text."""

    rows = [[layer.index, f"{layer.sparsity:.4f}", "-" if layer.rel_error is None else f"{layer.rel_error:.4g}",
             f"{layer.seconds:.2f}"] for layer in layers]
    return tabulate(rows, headers=["layer", "sparsity", "rel. error ||WX-W'X||²/||WX||² (mean of linears)", "seconds"])


def _model_config(model: str, input_ids: Any, calibration: Any, *, revision: str | None,
                  trust_remote_code: bool) -> Any:
    """The base model's config, after checking the calibration ids against it (before the weights load)."""
    config = load_config(model, revision=revision, trust_remote_code=trust_remote_code)
    _check_ids_fit(input_ids, calibration, model, getattr(config, "vocab_size", None),
                   getattr(config, "max_position_embeddings", None))
    return config


def _load_base(model: str, input_ids: Any, calibration: Any, *, dtype: str | None, revision: str | None,
               trust_remote_code: bool) -> Any:
    """The base model on the CPU, the calibration ids checked against its embeddings too."""
    loaded = load_model(model, dtype=dtype, device="cpu", revision=revision, trust_remote_code=trust_remote_code)
    _check_ids_fit(input_ids, calibration, model, loaded.get_input_embeddings().num_embeddings,
                   getattr(loaded.config, "max_position_embeddings", None))
    return loaded


def _base_dirs(model: str, weights: list[Path]) -> list[str]:
    """What an output must never be or hold: the folders of the base model's files."""
    return sorted({str(path.parent) for path in weights} | ({model} if os.path.isdir(model) else set()))


def _layer_structures(checked: CheckedRequest, loaded: Any, input_ids: Any, languages: list[int] | None,
                      cached: dict[str, Any] | None) -> tuple[Structure | list[Structure], dict[str, Any]]:
    """The structure of every decoder layer under the allocation, and what the manifest records about it."""
    allocation, params, request = checked.allocation, checked.allocation_params, checked.request
    info: dict[str, Any] = {"name": allocation.name}
    if allocation.layer_values is None:
        return checked.structure, info
    if cached is not None:  # computed once per (model, shard, M) by `langprune owl-ratios`
        values, seconds = cached["values"], 0.0
    else:
        language_rows = {"row_languages": languages} if allocation.needs_language_mix else {}
        values, seconds = allocation.resolve_layer_values()(
            loaded, input_ids, **{p.name: params[p.name] for p in allocation.params}, batch_size=request.batch_size,
            device=request.device, offload=request.offload, **language_rows)
    layer_sparsity = allocation.resolve_sparsities()(values, checked.structure.sparsity,
                                                     params[allocation.spread.name])
    info.update(params, **{allocation.values_key: values}, layer_sparsity=layer_sparsity, seconds=seconds)
    if cached is not None:
        info["ratios_file"] = cached["file"]
    return [unstructured(s) for s in layer_sparsity], info


@dataclass(frozen=True)
class _Inputs:
    """What a run reads before loading the model, each part checked: the shard, its languages, the ratios file."""

    input_ids: Any
    calibration: dict[str, Any] | None
    languages: list[int] | None
    base_hash: dict[str, Any]
    ratios: dict[str, Any] | None  # an intact OWL-ratios file's record, made for this base, shard and M


def _read_inputs(checked: CheckedRequest) -> _Inputs:
    """The output, shard, languages, ratios file and model config, checked in that order before the model loads."""
    request, method = checked.request, checked.method
    weights = model_files(request.model, revision=request.revision)
    # Masks take a bit per weight (at most 1/8 of the weight bytes); kept values at most the weights' bytes.
    weight_bytes = sum(path.stat().st_size for path in weights)
    check_output(request.out, CHECKPOINT_KIND, force=request.force,
                 inputs=[*_base_dirs(request.model, weights), request.calibration, request.owl_ratios],
                 need_bytes=weight_bytes if method.updates_weights else weight_bytes // 8)
    input_ids, calibration = (read_calibration(request.calibration) if request.calibration is not None
                              else (None, None))
    what = checked.language_user()
    languages = row_language_indices(calibration, what) if what is not None else None
    ratios = ratios_file.read_owl_ratios(request.owl_ratios) if request.owl_ratios is not None else None
    config = _model_config(request.model, input_ids, request.calibration, revision=request.revision,
                           trust_remote_code=request.trust_remote_code)
    _check_module_names(checked, config)
    _check_layer_sizes(checked, config)
    base_hash = base_weights_hash(request.model, request.revision)
    if ratios is not None:
        ratios_file.check_made_for(ratios, request.owl_ratios, **_ratios_identity(checked, calibration, base_hash))
    return _Inputs(input_ids, calibration, languages, base_hash, ratios)


def _ratios_identity(checked: CheckedRequest, calibration: dict[str, Any], base_hash: dict[str, Any]) -> dict:
    return {"base_sha256": base_hash["sha256"], "calibration_sha256": calibration["sha256"],
            "m": checked.allocation_params[ratios_file.THRESHOLD]}


def prune_to_checkpoint(request: PruneRequest) -> PruneOutcome:
    """Prune ``request.model`` and write a sparse checkpoint to ``request.out`` (a quantization method: a
    quantized one, its codes, scales and zero points); prints the per-layer summary.

    ``out`` is checked before any work: it may replace only an existing checkpoint (or,
    with ``force``, anything but the base model, the shard and the ratios file), and must be
    writable with room for the masks and values.
    """
    checked = check_request(request)
    method = checked.method
    inputs = _read_inputs(checked)
    torch.manual_seed(request.seed)
    started = time.perf_counter()
    loaded = _load_base(request.model, inputs.input_ids, request.calibration, dtype=request.dtype,
                        revision=request.revision, trust_remote_code=request.trust_remote_code)
    cached = None
    if inputs.ratios is not None:  # the dtype and layer count are known once the model is loaded
        made_for = _ratios_identity(checked, inputs.calibration, inputs.base_hash)
        cached = {"values": inputs.ratios[ratios_file.VALUES_KEY], "file": ratios_file.check_made_for(
            inputs.ratios, request.owl_ratios, **made_for, dtype=str(loaded.dtype),
            layers=len(decoder_layers(loaded)[1]))}
    layer_structures, allocation_info = _layer_structures(checked, loaded, inputs.input_ids, inputs.languages,
                                                          cached)
    result = prune_model(loaded, method, layer_structures, inputs.input_ids, batch_size=request.batch_size,
                         device=request.device, offload=request.offload, progress=request.progress,
                         measure_error=request.measure_error, row_languages=inputs.languages)
    run = {"device": request.device, "batch_size": request.batch_size, "offload": request.offload,
           "seconds": time.perf_counter() - started, "timings": result.timings}
    quantizes = checked.spec.quantizes
    manifest = build_manifest(request.model, request.revision, inputs.base_hash, loaded, method=method.name,
                              structure=None if quantizes else checked.structure, seed=request.seed,
                              calibration=inputs.calibration,
                              tags=dict(request.tags), run=run, layers=result.layers,
                              method_params=dict(method.params), allocation=allocation_info,
                              updates_weights=method.updates_weights, command=request.command)
    values = kept_values(loaded, result.masks) if method.updates_weights and not quantizes else None
    path = write_checkpoint(request.out, result.masks, values, manifest, force=request.force,
                            quantized=result.quantized if quantizes else None)
    print(summary_table(result.layers))
    return PruneOutcome(path, loaded, result)


def write_owl_ratios(model: str, calibration: str | os.PathLike, out: str | os.PathLike, *, m: float | None = None,
                     device: str = "cpu", batch_size: int = 1, dtype: str | None = None, offload: bool = False,
                     revision: str | None = None, trust_remote_code: bool = False, force: bool = False) -> dict:
    """OWL's per-layer outlier ratios of the dense ``model`` on ``calibration``, written to ``out``.

    The file format is :mod:`langprune.owl_ratios`; ``m`` None is the registry's published M. Returns the
    record plus the pass's ``seconds``.
    """
    owl = registry.allocation(ratios_file.ALLOCATION)
    bound = owl.bind({ratios_file.THRESHOLD: m} if m is not None else {})
    params = {p.name: bound[p.name] for p in owl.params}
    _check_run_settings(device, batch_size, dtype)
    check_output(out, ratios_file.OWL_RATIOS_KIND, force=force, inputs=[model, calibration], need_bytes=1 << 16)
    input_ids, calib_info = read_calibration(calibration)
    _model_config(model, input_ids, calibration, revision=revision, trust_remote_code=trust_remote_code)
    base_hash = base_weights_hash(model, revision)
    loaded = _load_base(model, input_ids, calibration, dtype=dtype, revision=revision,
                        trust_remote_code=trust_remote_code)
    ratios, seconds = owl.resolve_layer_values()(loaded.eval(), input_ids, **params, batch_size=batch_size,
                                                 device=device, offload=offload)
    record = ratios_file.ratios_record(model=model, revision=revision, base_sha256=base_hash["sha256"],
                                       dtype=str(loaded.dtype), calibration=calib_info,
                                       m=params[ratios_file.THRESHOLD], ratios=ratios, device=device)
    write_json(out, record, ratios_file.OWL_RATIOS_KIND, force=force)
    return {**record, "seconds": seconds}
