"""Metrics JSON (one per evaluation run) and the tidy table gathered from many of them.

A metrics JSON names the model, the checkpoint and the sha256 of its manifest, the tags
(checkpoint manifest tags updated by the run's own ``--tag``), and one record per
(benchmark, language, metric), with a fingerprint of the windows or items it was computed
on. Pairs a benchmark lacks are records with ``available: false`` and ``value: null``, so
gaps stay visible in every table.
"""

from __future__ import annotations

from pathlib import Path

from .. import __version__
from ..errors import LangpruneError
from ..io import ArtifactKind, atomic_path, carries_marker, check_output, marker, read_json, write_json
from ..variant import LABEL_KEYS, checkpoint_labels, run_labels

# Columns every tidy row has, in this order; other tags follow.
LABEL_COLUMNS = LABEL_KEYS
RECORD_COLUMNS = ["benchmark", "language", "metric", "value", "n", "available"]
METRICS_FORMAT = "langprune-metrics"
# The evaluation data a record was computed on (``units.record_fingerprint``); empty for records
# written before fingerprints were kept.
FINGERPRINT_COLUMN = "fingerprint"


def is_metrics_json(path: Path) -> bool:
    """A metrics JSON written by `langprune evaluate` (it carries the metrics format marker)."""
    try:
        doc = read_json(path)
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return carries_marker(doc, METRICS_FORMAT) and "records" in doc


def is_metrics_table(path: Path) -> bool:
    """A tidy CSV written by `langprune evaluate gather` (its header starts with the fixed columns)."""
    try:
        with open(path, encoding="utf-8") as f:
            header = f.readline().strip()
    except (OSError, UnicodeDecodeError):
        return False
    return header.startswith(",".join(LABEL_COLUMNS + RECORD_COLUMNS))


METRICS_KIND = ArtifactKind("metrics JSON", recognise=is_metrics_json)
TABLE_KIND = ArtifactKind("metrics table (CSV)", recognise=is_metrics_table, sidecar=True)


def check_metrics_out(out: str | Path, *, force: bool = False, inputs=()) -> None:
    """Before an evaluation runs: ``out`` may only replace an earlier metrics JSON (or anything, with --force)."""
    check_output(out, METRICS_KIND, force=force, inputs=inputs)


def record(benchmark: str, language: str, metric: str, value: float | None, n: int, available: bool = True,
           **extra) -> dict:
    return {"benchmark": benchmark, "language": language, "metric": metric,
            "value": None if value is None else float(value), "n": int(n), "available": bool(available), **extra}


def write_metrics(out: str | Path, *, kind: str, model: str, checkpoint: str | Path | None, records: list[dict],
                  tags: dict[str, str] | None = None, settings: dict | None = None, force: bool = False) -> dict:
    """Write one evaluation's metrics JSON atomically and return it."""
    # Local: the report reads metrics through this module and must not load torch (checkpoint.py needs it).
    from ..checkpoint import checkpoint_identity  # noqa: PLC0415

    checkpoint_hash, manifest = checkpoint_identity(checkpoint)
    merged_tags = {**{str(k): str(v) for k, v in (manifest.get("tags") or {}).items()}, **(tags or {})}
    doc = {**marker(METRICS_FORMAT), "kind": kind, "model": model,
           "checkpoint": None if checkpoint is None else str(checkpoint),
           "checkpoint_hash": checkpoint_hash, "tags": merged_tags, "pruning": checkpoint_labels(manifest),
           "settings": settings or {},
           "records": records, "langprune_version": __version__}
    write_json(out, doc, METRICS_KIND, force=force)
    return doc


def _labels(doc: dict) -> dict[str, str | None]:
    """Label columns of one metrics JSON: its tags, else the checkpoint's own labels, else dense defaults."""
    return run_labels(doc.get("model"), doc.get("pruning"), doc.get("tags"), dense=doc.get("checkpoint") is None)


def gather(paths: list[str | Path]):
    """Tidy ``pandas.DataFrame``: one row per record of every metrics JSON, with its labels."""
    # Local: every evaluation job writes its metrics through this module; only gathering needs pandas.
    import pandas as pd  # noqa: PLC0415

    rows = []
    seen: dict[str, str] = {}
    for path in paths:
        real = str(Path(path).resolve())
        if real in seen:
            raise LangpruneError(f"'{path}' is given twice (also as '{seen[real]}'); its rows would be counted "
                                 f"twice: give each metrics JSON once")
        seen[real] = str(path)
        if not Path(path).is_file():
            raise LangpruneError(f"metrics JSON '{path}' does not exist; write it with `langprune evaluate "
                                 f"perplexity` or `langprune evaluate tasks`")
        try:
            doc = read_json(path)
        except (ValueError, UnicodeDecodeError) as exc:
            raise LangpruneError(f"'{path}' is not valid JSON ({exc}); rerun the evaluation that writes it") from exc
        if not isinstance(doc, dict) or "records" not in doc:
            raise LangpruneError(f"'{path}' is not a langprune metrics JSON (no 'records')")
        labels = _labels(doc)
        for rec in doc["records"]:
            rows.append({**labels, **{k: rec.get(k) for k in RECORD_COLUMNS},
                         "checkpoint_hash": doc.get("checkpoint_hash"), "file": str(path),
                         FINGERPRINT_COLUMN: rec.get("fingerprint")})
    frame = pd.DataFrame(rows)
    extra = sorted(c for c in frame.columns if c not in LABEL_COLUMNS + RECORD_COLUMNS)
    return frame.reindex(columns=LABEL_COLUMNS + RECORD_COLUMNS + extra)


def gather_to_csv(paths: list[str | Path], out: str | Path, *, force: bool = False) -> int:
    """Write the tidy table as CSV (atomically); returns the number of rows.

    ``out`` may replace only an earlier metrics table (anything but the inputs with ``force``).
    """
    if not paths:
        raise LangpruneError("gather needs at least one metrics JSON")
    check_output(out, TABLE_KIND, force=force, inputs=paths)
    frame = gather(paths)
    with atomic_path(out, TABLE_KIND, force=force) as tmp:
        frame.to_csv(tmp, index=False)
    return len(frame)
