"""The OWL-ratios file: OWL's per-layer outlier ratios of a dense model on one shard, kept for reuse.

The ratios depend only on (base weights, dtype, shard, M), not on the method or the target
sparsity, so ``langprune owl-ratios`` computes them once and every OWL pruning run of that
model and shard reads them instead of repeating OWL's dense pass. A JSON object::

    {"format": 2, "kind": "owl-ratios", "model", "revision", "base_weights_sha256", "dtype",
     "calibration": {"path", "sha256", "nsamples", "seqlen"}, "M", "outlier_ratios": [percent per layer],
     "device", "sha256": SHA-256 of the canonical JSON of every other key}

The file's own hash makes an edited file an error instead of a silently different
allocation; the recorded identity makes a file made for another model, dtype, shard or M
one. No timings inside: equal inputs give equal bytes (workflow cache keys). Torch-free.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from .errors import LangpruneError
from .io import ArtifactKind, sha256_file
from .ranges import Range

FORMAT = 2  # 1: without its own hash
KIND = "owl-ratios"
ALLOCATION = "owl"  # the registered allocation whose dense pass this file holds
VALUES_KEY = "outlier_ratios"
THRESHOLD = "M"  # OWL's outlier threshold: the registry's name of the parameter the ratios depend on
HASH_KEY = "sha256"
PERCENT = Range(float, minimum=0, maximum=100)
REDO = "recompute it with `langprune owl-ratios` for this --model, --calibration, --dtype and --owl-m"


def content_hash(record: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON (sorted keys, no spaces) of everything in ``record`` but its hash."""
    body = {key: value for key, value in record.items() if key != HASH_KEY}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def is_owl_ratios(path: Path) -> bool:
    """Whether ``path`` is a file `langprune owl-ratios` wrote (any format): what it may replace."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(record, dict) and record.get("kind") == KIND


OWL_RATIOS_KIND = ArtifactKind("OWL ratios file", recognise=is_owl_ratios)


def ratios_record(*, model: str, revision: str | None, base_sha256: str, dtype: str, calibration: dict[str, Any],
                  m: float, ratios: list[float], device: str) -> dict[str, Any]:
    """The file's content for ratios computed on ``calibration`` (a ``read_calibration`` identity), hash included."""
    record = {"format": FORMAT, "kind": KIND, "model": model, "revision": revision,
              "base_weights_sha256": base_sha256, "dtype": dtype,
              "calibration": {key: calibration[key] for key in ("path", "sha256", "nsamples", "seqlen")},
              THRESHOLD: m, VALUES_KEY: [float(r) for r in ratios], "device": device}
    record[HASH_KEY] = content_hash(record)
    return record


def read_owl_ratios(path: str | os.PathLike) -> dict[str, Any]:
    """The record of an intact OWL-ratios file: right format, its own hash matching, ratios percentages.

    Refused with one line naming ``--owl-ratios``: a missing file, one that is not JSON or
    not of this format, one edited after it was written, ratios that are not finite numbers
    in [0, 100].
    """
    path = Path(path)
    if not path.is_file():
        raise LangpruneError(f"--owl-ratios '{path}' does not exist; {REDO}")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise LangpruneError(f"--owl-ratios '{path}' is not JSON ({exc}); {REDO}") from exc
    if not isinstance(record, dict) or record.get("kind") != KIND or record.get("format") != FORMAT:
        raise LangpruneError(f"--owl-ratios '{path}' is not an OWL ratios file of format {FORMAT}; {REDO}")
    if record.get(HASH_KEY) != content_hash(record):
        raise LangpruneError(f"--owl-ratios '{path}' does not match the SHA-256 it records (it was edited or "
                             f"damaged after `langprune owl-ratios` wrote it); {REDO}")
    ratios = record.get(VALUES_KEY)
    if not isinstance(ratios, list) or not ratios or not all(PERCENT.allows(r) for r in ratios):
        shown = ratios if not isinstance(ratios, list) else [r for r in ratios if not PERCENT.allows(r)][:3]
        raise LangpruneError(f"--owl-ratios '{path}': {VALUES_KEY} must be a non-empty list of finite "
                             f"percentages in [0, 100], not {shown!r}; {REDO}")
    return record


def check_made_for(record: dict[str, Any], path: str | os.PathLike, *, base_sha256: str, calibration_sha256: str,
                   m: float, dtype: str | None = None, layers: int | None = None) -> dict[str, Any]:
    """Refuse ratios made for another base, shard or M (and, once known, dtype and layer count).

    Returns what the manifest records about the file (path and SHA-256).
    """
    wanted = [("base model weights", record.get("base_weights_sha256"), base_sha256),
              ("calibration shard", (record.get("calibration") or {}).get("sha256"), calibration_sha256),
              (THRESHOLD, record.get(THRESHOLD), m)]
    if dtype is not None:
        wanted.append(("dtype", record.get("dtype"), dtype))
    stale = [what for what, recorded, expected in wanted if recorded != expected]
    if layers is not None and len(record[VALUES_KEY]) != layers:
        stale.append(f"number of layers ({len(record[VALUES_KEY])} for {layers})")
    if stale:
        raise LangpruneError(f"--owl-ratios '{path}' was computed for another {', '.join(stale)}; {REDO}")
    return {"path": str(path), "sha256": sha256_file(path)}
