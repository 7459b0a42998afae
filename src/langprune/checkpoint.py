"""Checkpoints: a base model reference plus 1-bit masks (and SparseGPT's kept values), or quantized weights.

The only module that reads or writes checkpoint files: pruning builds its manifest here,
evaluation and the analyses load, apply and iterate masks through the functions below.

A dense copy per run is what makes a grid of hundreds of pruning runs impractical, so a
checkpoint stores only what differs from the base: a packed keep-mask per pruned weight
(1/16 of its bf16 bytes) and, for methods that update surviving weights, those values
in mask order (about half the bf16 bytes at 50% sparsity). Everything is safetensors or
JSON (never unpickled), written atomically, and tied to the base weights by a content
hash so a checkpoint cannot silently be applied to the wrong model.

Layout of ``CKPT/``: ``manifest.json``, ``masks.safetensors`` (uint8, bits packed
big-endian per byte over the row-major flattened weight, 1 = kept),
``values.safetensors`` (optional; 1-D kept values per weight, base dtype).

A quantized checkpoint (format ``langprune-quantized-checkpoint``) holds, in place of the
masks, ``quantized.safetensors``: per quantized weight ``NAME.codes`` and ``NAME.zeros``
(uint8, ``bits`` bits per integer, packed as in :mod:`langprune.quantized`), ``NAME.scales``
(float32 [rows, groups]) and, when columns are not grouped in order, ``NAME.group_index``
(int32 [columns]). Applying it writes the dequantized weights into the loaded base, so
evaluation and export read both kinds through the same functions.

Reading verifies the checkpoint first (:func:`verify_checkpoint`): every file against the
SHA-256 the manifest records, the masks' tensor names and kept counts against the
manifest, and the kept values against the masks (or the quantized tensors' names and sizes
against the manifest's shapes, bits and groups). A checkpoint that fails is an error
that says how to rebuild it, never a silently different model.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import shlex
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import safetensors
import torch
import transformers
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from . import __version__
from .bitmasks import PackedMasks, unpack_mask, zero_pruned
from .errors import LangpruneError
from .hub import snapshot_commit
from .io import (
    CACHE_FILE,
    ArtifactKind,
    atomic_path,
    cache_dir,
    canonical_json,
    check_output,
    json_file_carries,
    json_text,
    marker,
    read_json,
    sha256_bytes,
    sha256_file,
    write_json,
)
from .models import load_model, load_tokenizer, model_files
from .quantized import CODE_BITS, PackedQuantized, QuantizedWeight, unpack_weight

FORMAT = "langprune-sparse-checkpoint"
FORMAT_VERSION = 1
QUANTIZED_FORMAT = "langprune-quantized-checkpoint"
QUANTIZED_FORMAT_VERSION = 1
FORMAT_VERSIONS = {FORMAT: FORMAT_VERSION, QUANTIZED_FORMAT: QUANTIZED_FORMAT_VERSION}
MANIFEST = "manifest.json"
MASKS = "masks.safetensors"
VALUES = "values.safetensors"
QUANTIZED = "quantized.safetensors"
QUANTIZED_PARTS = ("codes", "scales", "zeros", "group_index")  # NAME.<part> in QUANTIZED
# Manifests written before they recorded `updates_weights`: the methods that changed kept weights then.
LEGACY_WEIGHT_UPDATING = ("sparsegpt",)
EXPORT_MARKER = "langprune_export.json"


EXPORT_FORMAT = "langprune-dense-export"
# Manifest key: the SHA-256 of the rest of the manifest (less its file hashes), so an edited manifest
# is found although manifest.json itself is not covered by a file hash.
MANIFEST_DIGEST = "manifest_sha256"
# The marker of a manifest whose JSON is damaged: a format name and version, as write_checkpoint spells them.
_DAMAGED_MARKER = re.compile(r'"format": "(?P<name>[a-z-]+)",\s*"format_version": (?P<version>\d+)\b')


def carries_checkpoint_marker(manifest_path: Path) -> bool:
    """Whether a manifest carries a checkpoint format's name and version (read as text if its JSON is damaged)."""
    try:
        text = manifest_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    try:
        doc = json.loads(text)
    except ValueError:
        found = _DAMAGED_MARKER.search(text)
        return bool(found) and FORMAT_VERSIONS.get(found["name"]) == int(found["version"])
    return isinstance(doc, dict) and doc.get("format") in FORMAT_VERSIONS and \
        FORMAT_VERSIONS[doc["format"]] == doc.get("format_version")


def is_checkpoint_dir(path: Path) -> bool:
    """A langprune checkpoint: its manifest carries a checkpoint format marker and the directory holds nothing
    but what :func:`write_checkpoint` writes (so nothing else is lost by replacing or removing it)."""
    names = {entry.name for entry in path.iterdir()}
    return names <= {MANIFEST, MASKS, VALUES, QUANTIZED} and carries_checkpoint_marker(path / MANIFEST)


def is_quantized(manifest: dict[str, Any]) -> bool:
    return manifest.get("format") == QUANTIZED_FORMAT


def is_export_dir(path: Path) -> bool:
    return json_file_carries(path / EXPORT_MARKER, EXPORT_FORMAT)


CHECKPOINT_KIND = ArtifactKind("sparse checkpoint directory", directory=True, recognise=is_checkpoint_dir)
EXPORT_KIND = ArtifactKind("model directory exported by `langprune export`", directory=True, recognise=is_export_dir)


# --- base identity -----------------------------------------------------------------------

def _hash_cache_path() -> Path:
    return cache_dir() / "file_hashes.json"


def hash_cache_key(path: Path) -> str:
    """What identifies a file's bytes without reading them all.

    Size and mtime alone let weights swapped in with ``touch -r`` through; the inode and
    ctime change with any replacement or write (ctime cannot be set back), and the first
    and last 64 kB catch a copy that somehow keeps all of them.
    """
    real = path.resolve()
    stat = real.stat()
    with open(real, "rb") as f:
        head = f.read(1 << 16)
        f.seek(max(0, stat.st_size - (1 << 16)))
        tail = f.read(1 << 16)
    sample = sha256_bytes(head + tail)[:16]
    return f"{real}|{stat.st_size}|{stat.st_mtime_ns}|{stat.st_ino}|{stat.st_ctime_ns}|{sample}"


def cached_sha256(path: Path) -> str:
    """SHA-256 of a file, remembered by :func:`hash_cache_key` so 16 GB of weights are read once."""
    real = path.resolve()
    key = hash_cache_key(real)
    cache_file = _hash_cache_path()
    try:
        cache = read_json(cache_file)
    except (OSError, ValueError):
        cache = {}
    if key not in cache:
        cache[key] = sha256_file(real)
        try:
            write_json(cache_file, cache, CACHE_FILE)
        except (OSError, LangpruneError):
            pass  # an unwritable cache only costs time
    return cache[key]


def base_weights_hash(model: str, revision: str | None = None) -> dict[str, Any]:
    """Content hash over the base model's weight files: what a checkpoint is tied to.

    ``revision`` is the commit those files were read from when they come from the hub cache
    (the one `langprune prefetch` fetched), else the requested one.
    """
    files = model_files(model, revision=revision)
    per_file = {path.name: cached_sha256(path) for path in files}
    combined = sha256_bytes("".join(f"{name}\0{digest}\n" for name, digest in sorted(per_file.items())).encode())
    return {"sha256": combined, "files": per_file, "revision": snapshot_commit(files[0]) or revision}


def library_versions() -> dict[str, str]:
    return {"langprune": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "safetensors": safetensors.__version__, "python": platform.python_version()}


# --- writing -----------------------------------------------------------------------------

def build_manifest(model: str, revision: str | None, base_hash: dict[str, Any], loaded, *, method: str,
                   structure=None, seed: int, calibration: dict | None, tags: dict[str, str] | None,
                   run: dict[str, Any], layers: list, method_params: dict[str, Any] | None = None,
                   allocation: dict[str, Any] | None = None, updates_weights: bool = False,
                   command: list[str] | tuple[str, ...] | None = None) -> dict[str, Any]:
    """The manifest of a pruning run: its base, its identity labels, versions and per-layer report.

    ``base_hash`` is :func:`base_weights_hash` of the base, ``loaded`` the base model in
    memory, ``structure`` the parsed ``Structure`` (None for a quantization method), ``layers`` the
    engine's layer results,
    ``method_params`` the method's hyperparameters and ``allocation`` how sparsity was spread
    over layers (uniform, or OWL with its ratios). ``updates_weights`` says the method changed
    kept weights, so the checkpoint must carry their values (checked on every read).
    ``command`` is the command line that made it (``["langprune", "prune", ...]``; None when
    pruned through the Python API), from which the checkpoint can be rebuilt.
    """
    return {
        "base": {"model": str(model), "revision": base_hash.get("revision") or revision,
                 "weights_sha256": base_hash["sha256"], "weight_files": base_hash["files"],
                 "dtype": str(next(loaded.parameters()).dtype).replace("torch.", ""),
                 "architecture": type(loaded).__name__},
        "method": method, "method_params": dict(method_params or {}), "updates_weights": bool(updates_weights),
        "allocation": dict(allocation or {"name": "uniform"}),
        **({"sparsity": structure.sparsity, "structure": structure.label} if structure is not None else {}),
        "seed": seed, "command": None if command is None else list(command),
        "calibration": calibration, "tags": dict(tags or {}), "versions": library_versions(),
        "run": {**run, "created": utc_now()},
        "layers": [{"index": r.index, "sparsity": r.sparsity, "seconds": r.seconds, "rel_error": r.rel_error,
                    "linears": r.linears, "shared_inputs": r.groups, "warnings": r.warnings} for r in layers],
    }


def manifest_digest(manifest: dict[str, Any]) -> str:
    """SHA-256 of a manifest without its ``files`` entry and without the digest itself."""
    return sha256_bytes(canonical_json({key: value for key, value in manifest.items()
                                        if key not in ("files", MANIFEST_DIGEST)}))


def kept_values(model, masks: PackedMasks) -> dict:
    """The surviving entries of each pruned weight, 1-D in mask order, in the model's dtype, on the CPU."""
    params = dict(model.named_parameters())
    return {name: params[name].detach()[masks[name].to(params[name].device)].to("cpu") for name in masks}


def write_checkpoint(out: str | os.PathLike, masks: PackedMasks, values: dict | None,
                     manifest: dict[str, Any], *, force: bool = False,
                     quantized: PackedQuantized | None = None) -> Path:
    """Write masks (+ values), or the ``quantized`` weights, and the manifest into ``out`` atomically.

    Replaces only an existing checkpoint directory (or anything, with ``force``); file
    modes follow the umask like every other artifact. Returns ``out``.
    """
    out = Path(out)
    manifest = dict(manifest)
    if quantized:
        manifest["format"], manifest["format_version"] = QUANTIZED_FORMAT, QUANTIZED_FORMAT_VERSION
        manifest["tensors"] = {name: dict(quantized.info[name]) for name in sorted(quantized)}
    else:
        manifest["format"], manifest["format_version"] = FORMAT, FORMAT_VERSION
        manifest["tensors"] = {name: {"shape": list(masks.shapes[name]), "kept": masks.kept[name]}
                               for name in sorted(masks)}
    with atomic_path(out, CHECKPOINT_KIND, force=force) as tmp:
        tmp.mkdir()
        if quantized:
            parts = (quantized.codes, quantized.scales, quantized.zeros, quantized.group_index)
            save_file({f"{name}.{part}": tensors[name] for part, tensors in zip(QUANTIZED_PARTS, parts)
                       for name in tensors}, str(tmp / QUANTIZED))
        else:
            save_file(dict(masks.packed), str(tmp / MASKS))
        if values:
            save_file({name: value.contiguous() for name, value in values.items()}, str(tmp / VALUES))
        manifest["files"] = {path.name: sha256_file(path) for path in sorted(tmp.iterdir())}
        manifest[MANIFEST_DIGEST] = manifest_digest(manifest)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return out


# --- reading -----------------------------------------------------------------------------

def recorded_command(manifest: Any, ckpt_dir: str | os.PathLike) -> str | None:
    """The command line the manifest recorded, writing to ``ckpt_dir`` with --force (None if none recorded)."""
    words = manifest.get("command") if isinstance(manifest, dict) else None
    if not isinstance(words, list) or not words or not all(isinstance(w, str) for w in words):
        return None
    words = [w for w in words if not w.startswith("--out=")]
    if "--out" in words[:-1]:
        at = words.index("--out")
        del words[at:at + 2]
    return shlex.join([*words, "--out", str(ckpt_dir), *([] if "--force" in words else ["--force"])])


def _command_from_fields(manifest: dict[str, Any], ckpt_dir: str | os.PathLike) -> str:
    """The prune command as far as an older manifest's fields tell it."""
    try:
        base, calib = manifest["base"], manifest.get("calibration") or {}
        return (f"langprune prune --model {base['model']}"
                + (f" --revision {base['revision']}" if base.get("revision") else "")
                + (f" --calibration {calib['path']}" if calib.get("path") else "")
                + f" --method {manifest['method']}"
                + (f" --structure {manifest['structure']}" if "structure" in manifest else "")
                + (f" --sparsity {manifest['sparsity']}" if manifest.get("structure") == "unstructured" else "")
                + f" --seed {manifest['seed']} --out {ckpt_dir} --force")
    except (KeyError, TypeError):
        return f"langprune prune ... --out {ckpt_dir} --force"


def rebuild_hint(ckpt_dir: str | os.PathLike, manifest: dict[str, Any] | None = None) -> str:
    """How to get a good copy of a checkpoint back: the command line the manifest recorded, else
    one rebuilt from its fields (manifests of versions that did not record the command line)."""
    command = recorded_command(manifest, ckpt_dir) or _command_from_fields(manifest, ckpt_dir)
    return (f"rebuild it with `{command}`, or in the workflow with "
            f"`snakemake --cores all $(langprune verify --remove-broken {ckpt_dir}) all` (docs/reruns.md)")


def read_manifest(ckpt_dir: str | os.PathLike, *, verify: bool = True) -> dict[str, Any]:
    """The checkpoint's manifest, after checking it is one this version understands.

    ``verify`` (the default) also checks the checkpoint's files against it once per
    process (:func:`verify_checkpoint`), so nothing reads a corrupted checkpoint.
    """
    path = Path(ckpt_dir) / MANIFEST
    if not path.is_file():
        raise LangpruneError(f"'{ckpt_dir}' is not a langprune checkpoint: {MANIFEST} is missing "
                             f"(was the pruning run interrupted? run `langprune prune` again)")
    try:
        manifest = read_json(path)
    except (ValueError, UnicodeDecodeError) as exc:
        raise LangpruneError(f"{path} is not valid JSON: {exc}; the checkpoint is damaged: "
                             f"{rebuild_hint(ckpt_dir)}") from exc
    if not isinstance(manifest, dict):
        raise LangpruneError(f"{path} is not a checkpoint manifest (a JSON object); {rebuild_hint(ckpt_dir)}")
    if manifest.get("format") not in FORMAT_VERSIONS or \
            FORMAT_VERSIONS[manifest["format"]] != manifest.get("format_version"):
        known = " or ".join(f"{name!r} version {version}" for name, version in FORMAT_VERSIONS.items())
        raise LangpruneError(f"{path}: format {manifest.get('format')!r} version {manifest.get('format_version')!r} "
                             f"is not {known}; re-run `langprune prune` with this version")
    if verify:
        verify_checkpoint(ckpt_dir, manifest)
    return manifest


# Checkpoints verified by this process, by what identifies their files' bytes (a job reads one several times).
_VERIFIED: set[tuple] = set()


def _file_identity(path: Path) -> tuple:
    stat = path.stat()
    return (str(path.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_ctime_ns)


def _popcount(packed) -> int:
    """Set bits of a uint8 tensor (kept weights of a packed mask)."""
    table = torch.tensor([bin(i).count("1") for i in range(256)], dtype=torch.int64)
    return int(table[packed.to(torch.int64)].sum())


_NM = re.compile(r"^(\d+):(\d+)$")


def target_sparsities(manifest: dict[str, Any]) -> dict[str, float]:
    """Each pruned weight's sparsity as the manifest asks it: its layer's under a layer-wise allocation
    (OWL, CWL: ``allocation.layer_sparsity``), else the run's; {} for a manifest without a sparsity."""
    sparsity = manifest.get("sparsity")
    tensors = manifest.get("tensors") or {}
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)):
        return {}
    per_layer = (manifest.get("allocation") or {}).get("layer_sparsity")
    layer_of: dict[str, float] = {}
    if isinstance(per_layer, list):
        for layer in manifest.get("layers") or []:
            index = layer.get("index") if isinstance(layer, dict) else None
            if isinstance(index, int) and 0 <= index < len(per_layer):
                layer_of.update({f"{linear}.weight": per_layer[index] for linear in layer.get("linears") or {}})
    return {name: float(layer_of.get(name, sparsity)) for name in tensors}


def sparsity_mismatch(packed, shape, kept: int, target: float, structure: str) -> str | None:
    """How a weight's mask misses its target sparsity, or None if it is within the structure's tolerance.

    N:M: exactly N of every M consecutive inputs pruned (each group is checked). Unstructured:
    the pruned count within one per row of ``target`` x size (the methods round per row or per
    matrix).
    """
    if not isinstance(shape, list) or not shape or not math.isfinite(target):
        return None
    size = math.prod(shape)
    pruned = size - kept
    match = _NM.match(structure)
    if match:
        n, m = int(match.group(1)), int(match.group(2))
        if size % m == 0 and pruned * m != size * n:
            return f"prunes {pruned} of {size} weights, not {n} of every {m} ({structure})"
        if shape[-1] % m == 0:
            per_group = (~unpack_mask(packed, shape)).reshape(-1, m).sum(dim=1)
            bad = int((per_group != n).sum())
            if bad:
                return f"has {bad} groups of {m} inputs that do not prune exactly {n} ({structure})"
        return None
    rows = size // shape[-1]
    if abs(pruned - target * size) > rows + 1:
        return f"is {pruned / size:.2%} sparse but the manifest asks {target:.2%} ({structure})"
    return None


def verify_checkpoint(ckpt_dir: str | os.PathLike, manifest: dict[str, Any] | None = None) -> dict[str, Any]:
    """Check a checkpoint's files against its manifest; LangpruneError naming the first problem.

    Streams each file once through SHA-256 (cheap next to loading the model), then checks
    what a hash cannot: the manifest is unedited (its own digest); the masks hold exactly the
    manifest's tensors with its kept counts, each mask is as sparse as the manifest asks
    (:func:`sparsity_mismatch`), and the kept values (required for methods that update weights)
    match the masks; or the quantized tensors are exactly those the manifest's shapes, bits and
    groups call for.
    """
    ckpt = Path(ckpt_dir)
    manifest = manifest if manifest is not None else read_manifest(ckpt, verify=False)
    hint = rebuild_hint(ckpt, manifest)
    files = manifest.get("files")
    tensors = manifest.get("tensors")
    main = QUANTIZED if is_quantized(manifest) else MASKS
    if not isinstance(files, dict) or main not in files or not isinstance(tensors, dict):
        raise LangpruneError(f"{ckpt / MANIFEST} lacks the file hashes or tensor list of a checkpoint; {hint}")
    identity = tuple(_file_identity(ckpt / name) for name in sorted(files) if (ckpt / name).is_file())
    identity += (_file_identity(ckpt / MANIFEST),)
    if identity in _VERIFIED:
        return manifest
    recorded = manifest.get(MANIFEST_DIGEST)  # absent in manifests of earlier versions
    if recorded is not None and recorded != manifest_digest(manifest):
        raise LangpruneError(f"{ckpt / MANIFEST} was edited after the checkpoint was written (its content no longer "
                             f"matches its {MANIFEST_DIGEST}); {hint}")
    for name in (MASKS, VALUES, QUANTIZED):
        if (ckpt / name).exists() and name not in files:
            raise LangpruneError(f"checkpoint '{ckpt}' holds {name} but its manifest does not list it; {hint}")
    for name, expected in sorted(files.items()):
        path = ckpt / name
        if not path.is_file():
            raise LangpruneError(f"checkpoint '{ckpt}' is missing {name} (its manifest lists it); {hint}")
        if sha256_file(path) != expected:
            raise LangpruneError(f"checkpoint file {path} does not match the SHA-256 in its manifest (corrupted, "
                                 f"truncated or edited); {hint}")
    try:
        (_check_quantized if is_quantized(manifest) else _check_masks)(ckpt, manifest, hint)
    except SafetensorError as exc:
        raise LangpruneError(f"checkpoint '{ckpt}' has an unreadable tensor file ({exc}); {hint}") from exc
    _VERIFIED.add(identity)
    return manifest


def _check_masks(ckpt: Path, manifest: dict[str, Any], hint: str) -> None:
    """The masks hold the manifest's tensors and kept counts; kept values match them."""
    tensors, files = manifest["tensors"], manifest["files"]
    with safe_open(str(ckpt / MASKS), framework="pt") as handle:
        names = set(handle.keys())
        if names != set(tensors):
            extra, missing = sorted(names - set(tensors)), sorted(set(tensors) - names)
            raise LangpruneError(f"checkpoint '{ckpt}': {MASKS} and the manifest disagree on the pruned tensors "
                                 f"(only in the masks: {extra[:3]}, only in the manifest: {missing[:3]}); {hint}")
        targets = target_sparsities(manifest)
        for name, info in tensors.items():
            packed = handle.get_tensor(name)
            kept = _popcount(packed)
            if kept != info.get("kept"):
                raise LangpruneError(f"checkpoint '{ckpt}': the mask of {name} keeps {kept} weights but the "
                                     f"manifest says {info.get('kept')}; {hint}")
            if name in targets:
                problem = sparsity_mismatch(packed, info.get("shape"), kept, targets[name],
                                            str(manifest.get("structure")))
                if problem:
                    raise LangpruneError(f"checkpoint '{ckpt}': the mask of {name} {problem}; {hint}")
    updates_weights = manifest.get("updates_weights", manifest.get("method") in LEGACY_WEIGHT_UPDATING)
    if updates_weights and VALUES not in files:
        raise LangpruneError(f"checkpoint '{ckpt}' was pruned with {manifest['method']}, which updates the kept "
                             f"weights, but has no {VALUES}; {hint}")
    if VALUES in files:
        with safe_open(str(ckpt / VALUES), framework="pt") as handle:
            for name in handle.keys():
                count = handle.get_slice(name).get_shape()
                if name not in tensors or count != [tensors[name].get("kept")]:
                    raise LangpruneError(f"checkpoint '{ckpt}': {VALUES} holds {count} values for {name}, but "
                                         f"the manifest keeps {tensors.get(name, {}).get('kept')}; {hint}")


def _quantized_layout(name: str, info: Any) -> dict[str, tuple[str, list[int]]]:
    """Tensor name -> (safetensors dtype, shape) that a manifest entry calls for; ValueError if it is malformed."""
    rows, columns = info["shape"]
    bits, groups, size = info["bits"], info["groups"], info["group_size"]
    if bits not in CODE_BITS or min(rows, columns, groups) < 1 or size < 0 or \
            groups != (columns // size if size else 1) or (size and columns % size):
        raise ValueError(name)
    layout = {f"{name}.codes": ("U8", [(rows * columns * bits + 7) // 8]),
              f"{name}.scales": ("F32", [rows, groups]),
              f"{name}.zeros": ("U8", [(rows * groups * bits + 7) // 8])}
    if info["group_index"]:
        layout[f"{name}.group_index"] = ("I32", [columns])
    return layout


def _check_quantized(ckpt: Path, manifest: dict[str, Any], hint: str) -> None:
    """The quantized tensors are exactly those the manifest's entries call for, each of its dtype and size."""
    layout: dict[str, tuple[str, list[int]]] = {}
    for name, info in manifest["tensors"].items():
        try:
            layout.update(_quantized_layout(name, info))
        except (KeyError, TypeError, ValueError):
            raise LangpruneError(f"checkpoint '{ckpt}': the manifest's entry for {name} is not a quantized weight "
                                 f"(shape, bits from 1 to 8, group_size, groups, symmetric, group_index); "
                                 f"{hint}") from None
    with safe_open(str(ckpt / QUANTIZED), framework="pt") as handle:
        names = set(handle.keys())
        if names != set(layout):
            extra, missing = sorted(names - set(layout)), sorted(set(layout) - names)
            raise LangpruneError(f"checkpoint '{ckpt}': {QUANTIZED} and the manifest disagree on the quantized "
                                 f"tensors (only in the file: {extra[:3]}, only in the manifest: {missing[:3]}); "
                                 f"{hint}")
        for key, (dtype, shape) in layout.items():
            found = handle.get_slice(key)
            if (found.get_dtype(), found.get_shape()) != (dtype, shape):
                raise LangpruneError(f"checkpoint '{ckpt}': {key} is {found.get_dtype()} {found.get_shape()} but "
                                     f"the manifest calls for {dtype} {shape}; {hint}")
            if key.endswith(".group_index"):
                groups = manifest["tensors"][key.removesuffix(".group_index")]["groups"]
                index = handle.get_tensor(key)
                if int(index.min()) < 0 or int(index.max()) >= groups:
                    raise LangpruneError(f"checkpoint '{ckpt}': {key} names groups outside [0, {groups}); {hint}")


def checkpoint_identity(checkpoint: str | os.PathLike | None) -> tuple[str | None, dict]:
    """``(sha256 of manifest.json, manifest)`` of a checkpoint, or ``(None, {})`` for the dense model."""
    if checkpoint is None:
        return None, {}
    manifest = read_manifest(checkpoint)
    return sha256_file(Path(checkpoint) / MANIFEST), manifest


def iter_masks(ckpt_dir: str | os.PathLike, names: list[str] | None = None) -> Iterator[tuple[str, Any]]:
    """(parameter name, keep-mask) one weight at a time (True = kept); a paper-sized model's masks
    unpacked together would not fit in memory. ``names`` picks weights (default: all, in manifest order)."""
    manifest = read_manifest(ckpt_dir)
    if is_quantized(manifest):
        raise LangpruneError(f"checkpoint '{ckpt_dir}' is quantized ({manifest.get('method')}): it has no pruning "
                             f"masks to read")
    tensors = manifest["tensors"]
    with safe_open(str(Path(ckpt_dir) / MASKS), framework="pt") as handle:
        for name in tensors if names is None else names:
            yield name, unpack_mask(handle.get_tensor(name), tensors[name]["shape"])


def read_masks(ckpt_dir: str | os.PathLike) -> dict[str, Any]:
    """Keep-masks (bool tensors, True = kept) by parameter name."""
    return dict(iter_masks(ckpt_dir))


def check_base(manifest: dict[str, Any], model: str, revision: str | None) -> None:
    """Refuse a base model whose weights hash differs from the one the checkpoint was pruned from."""
    expected = manifest["base"]["weights_sha256"]
    actual = base_weights_hash(model, revision)["sha256"]
    if actual != expected:
        raise LangpruneError(f"base model '{model}' does not match the checkpoint: its weights hash to {actual[:12]}… "
                             f"but the checkpoint was pruned from '{manifest['base']['model']}' "
                             f"(revision {manifest['base'].get('revision')}) hashing to {expected[:12]}…; "
                             f"load the same base model files the checkpoint was made from")


def iter_quantized(ckpt_dir: str | os.PathLike) -> Iterator[tuple[str, QuantizedWeight]]:
    """(parameter name, quantized weight) of a quantized checkpoint, one weight at a time, in manifest order."""
    tensors = read_manifest(ckpt_dir)["tensors"]  # verified against the file
    with safe_open(str(Path(ckpt_dir) / QUANTIZED), framework="pt") as handle:
        for name, info in tensors.items():
            parts = [handle.get_tensor(f"{name}.{part}") for part in QUANTIZED_PARTS[:3]]
            index = handle.get_tensor(f"{name}.group_index") if info["group_index"] else None
            yield name, unpack_weight(info, parts[0], parts[1], parts[2], index)


def _parameter(params: dict, name: str, shape, ckpt_dir, what: str) -> Any:
    """The model's parameter ``name``, which must have the checkpoint's ``shape``."""
    if name not in params or tuple(params[name].shape) != tuple(shape):
        found = tuple(params[name].shape) if name in params else "missing"
        raise LangpruneError(f"checkpoint '{ckpt_dir}' has {what} {name} {tuple(shape)} but the model has {found}; "
                             f"load the base model the checkpoint was made from")
    return params[name]


def apply_checkpoint(model, ckpt_dir: str | os.PathLike):
    """Zero the pruned weights of an already loaded base model in place (and restore SparseGPT values),
    or write a quantized checkpoint's dequantized weights into it."""
    params = dict(model.named_parameters())
    if is_quantized(read_manifest(ckpt_dir)):
        with torch.no_grad():
            for name, weight in iter_quantized(ckpt_dir):
                param = _parameter(params, name, weight.shape, ckpt_dir, "a quantized weight for")
                param.copy_(weight.dequantize(param.dtype))
        return model
    masks = read_masks(ckpt_dir)  # verified against the manifest
    values_path = Path(ckpt_dir) / VALUES
    values = load_file(str(values_path)) if values_path.is_file() else {}
    with torch.no_grad():
        for name, keep in masks.items():
            param = _parameter(params, name, keep.shape, ckpt_dir, "a mask for")
            keep = keep.to(param.device)
            zero_pruned(param, keep)
            if name in values:
                param[keep] = values[name].to(param.device, param.dtype)
    return model


@contextmanager
def applied(model, ckpt_dir: str | os.PathLike):
    """``model`` with the checkpoint applied inside the block and its base weights restored after,
    so one loaded base serves many checkpoints."""
    params = dict(model.named_parameters())
    originals = {name: params[name].detach().clone() for name in read_manifest(ckpt_dir)["tensors"] if name in params}
    try:
        yield apply_checkpoint(model, ckpt_dir)
    finally:
        with torch.no_grad():
            for name, weight in originals.items():
                params[name].copy_(weight)


def load_pruned_model(model: str | None, checkpoint: str | os.PathLike | None = None, dtype: str | None = None,
                      device: str = "cpu", revision: str | None = None, trust_remote_code: bool = False):
    """Load the base model and apply ``checkpoint`` in memory (None = the dense base).

    ``model`` None means the base recorded in the checkpoint. ``dtype`` None means the
    dtype the checkpoint was pruned in, so kept SparseGPT values come back bit-exactly.
    """
    manifest = read_manifest(checkpoint) if checkpoint is not None else None
    if manifest is not None:
        base = manifest["base"]
        model = model or base["model"]
        revision = revision if revision is not None else base.get("revision")
        dtype = dtype or base.get("dtype")
        check_base(manifest, model, revision)
    if model is None:
        raise LangpruneError("no model given: pass a model id or directory (or a checkpoint that names its base)")
    loaded = load_model(model, dtype=dtype, device="cpu", revision=revision, trust_remote_code=trust_remote_code)
    if checkpoint is not None:
        apply_checkpoint(loaded, checkpoint)
    if device != "cpu":
        loaded.to(device)
    return loaded


EXPORT_FORMATS = ("dense", "compressed-tensors")


def export_model(ckpt_dir: str | os.PathLike, out_dir: str | os.PathLike, model: str | None = None,
                 trust_remote_code: bool = False, *, format: str = "dense", force: bool = False) -> Path:
    """Write a Hugging Face model directory (weights + tokenizer) of the checkpoint applied to its base.

    ``format`` "dense" writes every weight as a plain tensor; "compressed-tensors" writes a
    quantized checkpoint's linears packed (:mod:`langprune.compressed`). ``out_dir`` may replace
    only an earlier export (``langprune_export.json`` carries its marker and the ``weights`` format),
    or anything but the inputs with
    ``force``; it and the format are checked before the model is loaded.
    """
    manifest = read_manifest(ckpt_dir)
    if format not in EXPORT_FORMATS:
        raise LangpruneError(f"--format '{format}' is not one of: {', '.join(EXPORT_FORMATS)}")
    scheme = None
    if format == "compressed-tensors":
        from . import compressed  # noqa: PLC0415 - compressed-tensors loads in seconds; only this export needs it

        scheme = compressed.scheme_for(ckpt_dir, manifest, is_quantized(manifest))
    base = model or manifest["base"]["model"]
    revision = manifest["base"].get("revision")
    weights = model_files(base, revision=revision)
    base_dirs = sorted({str(path.parent) for path in weights} | ({base} if os.path.isdir(base) else set()))
    check_output(out_dir, EXPORT_KIND, force=force, inputs=[ckpt_dir, *base_dirs],
                 need_bytes=sum(path.stat().st_size for path in weights))
    loaded = load_pruned_model(model, ckpt_dir, trust_remote_code=trust_remote_code)
    with atomic_path(out_dir, EXPORT_KIND, force=force) as tmp:
        if scheme is None:
            loaded.save_pretrained(tmp)
        else:
            compressed.save_compressed(loaded, iter_quantized(ckpt_dir), scheme, tmp)
        try:
            tokenizer = load_tokenizer(base, revision=revision, trust_remote_code=trust_remote_code)
        except LangpruneError:
            tokenizer = None  # a weights-only base (e.g. a random test model) has none to copy
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        (tmp / EXPORT_MARKER).write_text(json_text(marker(
            EXPORT_FORMAT, checkpoint=str(ckpt_dir), manifest_sha256=sha256_file(Path(ckpt_dir) / MANIFEST),
            base=manifest["base"]["model"], weights=format)), encoding="utf-8")
    return Path(out_dir)


def checkpoint_bytes(ckpt_dir: str | os.PathLike) -> dict[str, int]:
    """Sizes of the checkpoint's tensor files, for the size targets."""
    return {name: (Path(ckpt_dir) / name).stat().st_size for name in (MASKS, VALUES, QUANTIZED)
            if (Path(ckpt_dir) / name).is_file()}


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
