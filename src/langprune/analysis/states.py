"""Probe-states files: what `langprune analyze hidden` writes and the other analyses read.

One safetensors file per model: tensors named ``<kind>.<lang>`` (``layers``, ``final``,
``active``, ``tokens`` for the dense reference; ``final``, ``drift``, ``dense_norm`` for a
pruned model) and JSON metadata (labels, languages, probe fingerprint) under 'langprune'.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from safetensors import safe_open
from safetensors.torch import save_file

from ..errors import LangpruneError
from ..io import ArtifactKind, atomic_path, langprune_metadata

FORMAT = "langprune-probe-states/1"
STATES_KIND = ArtifactKind("probe-states file", recognise=lambda path: langprune_metadata(path).get("format") == FORMAT)


def write_states(path: str | os.PathLike, tensors: dict[str, Any], meta: dict[str, Any], *,
                 force: bool = False) -> Path:
    """One safetensors file; tensor names are ``<kind>.<lang>``; metadata JSON under 'langprune'."""
    meta = {**meta, "format": FORMAT}
    with atomic_path(path, STATES_KIND, force=force) as tmp:
        save_file({k: v.contiguous() for k, v in sorted(tensors.items())}, str(tmp),
                  metadata={"langprune": json.dumps(meta, sort_keys=True)})
    return Path(path)


def read_states(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
    """Tensors and metadata of a probe-states file, with a clear error for anything else."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = json.loads((handle.metadata() or {}).get("langprune", "{}"))
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except (OSError, ValueError, json.JSONDecodeError) as exc:
        raise LangpruneError(f"cannot read probe states '{path}': {exc}") from exc
    if meta.get("format") != FORMAT:
        raise LangpruneError(f"'{path}' is not a probe-states file written by `langprune analyze hidden`")
    return tensors, meta


def by_language(tensors: dict[str, Any], kind: str) -> dict[str, Any]:
    """``{lang: tensor}`` for tensors named ``<kind>.<lang>``."""
    prefix = f"{kind}."
    return {key[len(prefix):]: value for key, value in tensors.items() if key.startswith(prefix)}


def load_variants(paths: list[str], need: str) -> list[tuple[dict, dict]]:
    """(labels, tensors) of several probe-states files, checked to share one probe set."""
    variants, fingerprints = [], set()
    for path in paths:
        tensors, meta = read_states(path)
        if not by_language(tensors, need):
            raise LangpruneError(f"'{path}' has no '{need}' states; pass pruned-model files written with --reference")
        fingerprints.add(meta.get("probe_sha256"))
        variants.append((meta["tags"], tensors))
    if len(fingerprints) > 1:
        raise LangpruneError("the probe-states files were computed on different probe text; recompute them together")
    return variants
