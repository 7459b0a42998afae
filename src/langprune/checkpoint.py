"""Sparse checkpoints: a base model reference plus 1-bit masks (and SparseGPT's kept values).

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

Reading verifies the checkpoint first (:func:`verify_checkpoint`): every file against the
SHA-256 the manifest records, the masks' tensor names and kept counts against the
manifest, and the kept values against the masks. A checkpoint that fails is an error
that says how to rebuild it, never a silently different model.
"""

from __future__ import annotations

import json
import os
import platform
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
from .io import ArtifactKind, atomic_path, cache_dir, check_output, read_json, sha256_bytes, sha256_file, write_json
from .models import load_model, load_tokenizer, model_files

FORMAT = "langprune-sparse-checkpoint"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
MASKS = "masks.safetensors"
VALUES = "values.safetensors"
# Manifests written before they recorded `updates_weights`: the methods that changed kept weights then.
LEGACY_WEIGHT_UPDATING = ("sparsegpt",)
EXPORT_MARKER = "langprune_export.json"


def is_checkpoint_dir(path: Path) -> bool:
    """A directory holding only what :func:`write_checkpoint` writes (so nothing else is lost by replacing it)."""
    names = {entry.name for entry in path.iterdir()}
    return bool(names & {MANIFEST, MASKS}) and names <= {MANIFEST, MASKS, VALUES}


def is_export_dir(path: Path) -> bool:
    return (path / EXPORT_MARKER).is_file()


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
            write_json(cache_file, cache)
        except OSError:
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
                   structure, seed: int, calibration: dict | None, tags: dict[str, str] | None,
                   run: dict[str, Any], layers: list, method_params: dict[str, Any] | None = None,
                   allocation: dict[str, Any] | None = None, updates_weights: bool = False) -> dict[str, Any]:
    """The manifest of a pruning run: its base, its identity labels, versions and per-layer report.

    ``base_hash`` is :func:`base_weights_hash` of the base, ``loaded`` the base model in
    memory, ``structure`` the parsed ``Structure``, ``layers`` the engine's layer results,
    ``method_params`` the method's hyperparameters and ``allocation`` how sparsity was spread
    over layers (uniform, or OWL with its ratios). ``updates_weights`` says the method changed
    kept weights, so the checkpoint must carry their values (checked on every read).
    """
    return {
        "base": {"model": str(model), "revision": base_hash.get("revision") or revision,
                 "weights_sha256": base_hash["sha256"], "weight_files": base_hash["files"],
                 "dtype": str(next(loaded.parameters()).dtype).replace("torch.", ""),
                 "architecture": type(loaded).__name__},
        "method": method, "method_params": dict(method_params or {}), "updates_weights": bool(updates_weights),
        "allocation": dict(allocation or {"name": "uniform"}), "sparsity": structure.sparsity,
        "structure": structure.label, "seed": seed,
        "calibration": calibration, "tags": dict(tags or {}), "versions": library_versions(),
        "run": {**run, "created": utc_now()},
        "layers": [{"index": r.index, "sparsity": r.sparsity, "seconds": r.seconds, "rel_error": r.rel_error,
                    "linears": r.linears, "shared_inputs": r.groups, "warnings": r.warnings} for r in layers],
    }


def kept_values(model, masks: PackedMasks) -> dict:
    """The surviving entries of each pruned weight, 1-D in mask order, in the model's dtype, on the CPU."""
    params = dict(model.named_parameters())
    return {name: params[name].detach()[masks[name].to(params[name].device)].to("cpu") for name in masks}


def write_checkpoint(out: str | os.PathLike, masks: PackedMasks, values: dict | None,
                     manifest: dict[str, Any], *, force: bool = False) -> Path:
    """Write masks (+ values) and the manifest into ``out`` atomically; returns ``out``.

    Replaces only an existing checkpoint directory (or anything, with ``force``); file
    modes follow the umask like every other artifact.
    """
    out = Path(out)
    manifest = dict(manifest)
    manifest["format"], manifest["format_version"] = FORMAT, FORMAT_VERSION
    manifest["tensors"] = {name: {"shape": list(masks.shapes[name]), "kept": masks.kept[name]}
                           for name in sorted(masks)}
    with atomic_path(out, CHECKPOINT_KIND, force=force) as tmp:
        tmp.mkdir()
        save_file(dict(masks.packed), str(tmp / MASKS))
        if values:
            save_file({name: value.contiguous() for name, value in values.items()}, str(tmp / VALUES))
        manifest["files"] = {path.name: sha256_file(path) for path in sorted(tmp.iterdir())}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return out


# --- reading -----------------------------------------------------------------------------

def rebuild_hint(ckpt_dir: str | os.PathLike, manifest: dict[str, Any] | None = None) -> str:
    """How to get a good copy of a checkpoint back: the prune command when the manifest says it."""
    try:
        base, calib = manifest["base"], manifest.get("calibration") or {}
        command = (f"langprune prune --model {base['model']}"
                   + (f" --revision {base['revision']}" if base.get("revision") else "")
                   + (f" --calibration {calib['path']}" if calib.get("path") else "")
                   + f" --method {manifest['method']} --structure {manifest['structure']}"
                   + (f" --sparsity {manifest['sparsity']}" if manifest["structure"] == "unstructured" else "")
                   + f" --seed {manifest['seed']} --out {ckpt_dir} --force")
    except (KeyError, TypeError):
        command = f"langprune prune ... --out {ckpt_dir} --force"
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
    if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
        raise LangpruneError(f"{path}: format {manifest.get('format')!r} version {manifest.get('format_version')!r} "
                             f"is not {FORMAT!r} version {FORMAT_VERSION}; re-run `langprune prune` with this version")
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


def verify_checkpoint(ckpt_dir: str | os.PathLike, manifest: dict[str, Any] | None = None) -> dict[str, Any]:
    """Check a checkpoint's files against its manifest; LangpruneError naming the first problem.

    Streams each file once through SHA-256 (cheap next to loading the model), then checks
    what a hash cannot: the masks hold exactly the manifest's tensors with its kept counts,
    and the kept values (required for methods that update weights) match the masks.
    """
    ckpt = Path(ckpt_dir)
    manifest = manifest if manifest is not None else read_manifest(ckpt, verify=False)
    hint = rebuild_hint(ckpt, manifest)
    files = manifest.get("files")
    tensors = manifest.get("tensors")
    if not isinstance(files, dict) or MASKS not in files or not isinstance(tensors, dict):
        raise LangpruneError(f"{ckpt / MANIFEST} lacks the file hashes or tensor list of a checkpoint; {hint}")
    identity = tuple(_file_identity(ckpt / name) for name in sorted(files) if (ckpt / name).is_file())
    identity += (_file_identity(ckpt / MANIFEST),)
    if identity in _VERIFIED:
        return manifest
    for name in (MASKS, VALUES):
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
        with safe_open(str(ckpt / MASKS), framework="pt") as handle:
            names = set(handle.keys())
            if names != set(tensors):
                extra, missing = sorted(names - set(tensors)), sorted(set(tensors) - names)
                raise LangpruneError(f"checkpoint '{ckpt}': {MASKS} and the manifest disagree on the pruned tensors "
                                     f"(only in the masks: {extra[:3]}, only in the manifest: {missing[:3]}); {hint}")
            for name, info in tensors.items():
                kept = _popcount(handle.get_tensor(name))
                if kept != info.get("kept"):
                    raise LangpruneError(f"checkpoint '{ckpt}': the mask of {name} keeps {kept} weights but the "
                                         f"manifest says {info.get('kept')}; {hint}")
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
    except SafetensorError as exc:
        raise LangpruneError(f"checkpoint '{ckpt}' has an unreadable tensor file ({exc}); {hint}") from exc
    _VERIFIED.add(identity)
    return manifest


def checkpoint_identity(checkpoint: str | os.PathLike | None) -> tuple[str | None, dict]:
    """``(sha256 of manifest.json, manifest)`` of a checkpoint, or ``(None, {})`` for the dense model."""
    if checkpoint is None:
        return None, {}
    manifest = read_manifest(checkpoint)
    return sha256_file(Path(checkpoint) / MANIFEST), manifest


def iter_masks(ckpt_dir: str | os.PathLike, names: list[str] | None = None) -> Iterator[tuple[str, Any]]:
    """(parameter name, keep-mask) one weight at a time (True = kept); a paper-sized model's masks
    unpacked together would not fit in memory. ``names`` picks weights (default: all, in manifest order)."""
    tensors = read_manifest(ckpt_dir)["tensors"]
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


def apply_checkpoint(model, ckpt_dir: str | os.PathLike):
    """Zero the pruned weights of an already loaded base model in place (and restore SparseGPT values)."""
    masks = read_masks(ckpt_dir)  # verified against the manifest
    values_path = Path(ckpt_dir) / VALUES
    values = load_file(str(values_path)) if values_path.is_file() else {}
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, keep in masks.items():
            if name not in params or tuple(params[name].shape) != tuple(keep.shape):
                found = tuple(params[name].shape) if name in params else "missing"
                raise LangpruneError(f"checkpoint '{ckpt_dir}' has a mask for {name} {tuple(keep.shape)} but the "
                                     f"model has {found}; load the base model the checkpoint was made from")
            param = params[name]
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


def export_dense(ckpt_dir: str | os.PathLike, out_dir: str | os.PathLike, model: str | None = None,
                 trust_remote_code: bool = False, *, force: bool = False) -> Path:
    """Write a dense Hugging Face model directory (weights + tokenizer) with the pruned weights.

    ``out_dir`` may replace only an earlier export (``langprune_export.json`` marks one),
    or anything but the inputs with ``force``; it is checked before the model is loaded.
    """
    manifest = read_manifest(ckpt_dir)
    base = model or manifest["base"]["model"]
    revision = manifest["base"].get("revision")
    weights = model_files(base, revision=revision)
    base_dirs = sorted({str(path.parent) for path in weights} | ({base} if os.path.isdir(base) else set()))
    check_output(out_dir, EXPORT_KIND, force=force, inputs=[ckpt_dir, *base_dirs],
                 need_bytes=sum(path.stat().st_size for path in weights))
    pruned = load_pruned_model(model, ckpt_dir, trust_remote_code=trust_remote_code)
    with atomic_path(out_dir, EXPORT_KIND, force=force) as tmp:
        pruned.save_pretrained(tmp)
        try:
            tokenizer = load_tokenizer(base, revision=revision, trust_remote_code=trust_remote_code)
        except LangpruneError:
            tokenizer = None  # a weights-only base (e.g. a random test model) has none to copy
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        (tmp / EXPORT_MARKER).write_text(json.dumps({
            "checkpoint": str(ckpt_dir), "manifest_sha256": sha256_file(Path(ckpt_dir) / MANIFEST),
            "base": manifest["base"]["model"]}, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return Path(out_dir)


def checkpoint_bytes(ckpt_dir: str | os.PathLike) -> dict[str, int]:
    """Sizes of the checkpoint's tensor files, for the size targets."""
    return {name: (Path(ckpt_dir) / name).stat().st_size for name in (MASKS, VALUES)
            if (Path(ckpt_dir) / name).is_file()}


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
