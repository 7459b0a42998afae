"""Per-unit results kept beside each aggregate, so that variants can be compared pairwise.

A perplexity record keeps, per evaluation window, the summed NLL (nats), the predicted
tokens and the UTF-8 bytes those tokens cover; a task record keeps, per item (lm-eval's
``doc_id``), its score (1/0 correctness for accuracy, the F1 of F1 tasks). Every variant of
a model sees the same windows and items, so two variants can be compared on the same units
(``langprune.report.significance``). Units are small lists inside the record's ``units``
key of the metrics JSON: 128 windows per language for the paper's perplexity budget, one
number per item for tasks; the tidy CSV leaves them out.

Each unit also carries a fingerprint of what was scored (a short hash of a window's token
ids, or of an item's document, prompt and target as lm-eval logged them), and each record
one fingerprint of all its units. Pairing two variants unit by unit is only meaningful when
the fingerprints agree; the record's fingerprint travels into the tidy CSV, so the report can
check that every cell of a column was evaluated on the same data.
"""

from __future__ import annotations

import hashlib
import json

from ..errors import LangpruneError

WINDOW = "window"
ITEM = "item"
# Hex digits kept of each SHA-256: 64 bits, so two different windows or items of one column
# share a fingerprint with probability ~1e-19 per pair; the JSON grows by ~20 bytes per unit.
FINGERPRINT_HEX = 16


def digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:FINGERPRINT_HEX]


def window_fingerprint(input_ids: list[int]) -> str:
    """Fingerprint of one evaluation window: its token ids (BOS included), in order."""
    return digest(" ".join(str(int(t)) for t in input_ids))


def item_fingerprint(sample: dict) -> str:
    """Fingerprint of one task item: the document, the prompt(s) scored and the target, as lm-eval logs them.

    Nothing the model produced (responses, scores) enters it, so every variant gets the same one.
    """
    content = {key: sample.get(key) for key in ("doc", "arguments", "target")}
    return digest(json.dumps(content, sort_keys=True, ensure_ascii=False, default=str))


def record_fingerprint(units: dict) -> str | None:
    """One fingerprint of all units of a record (kind, ids, per-unit fingerprints); None without them."""
    if not units.get("fingerprints"):
        return None
    ids = units.get("ids", list(range(len(units["fingerprints"]))))
    return digest(json.dumps([units["unit"], list(ids), units["fingerprints"]]))


def window_units(nll: list[float], tokens: list[int], scored_bytes: list[int], windows: list[list[int]]) -> dict:
    """Units of one perplexity record: one entry per evaluation window, in window order."""
    if not len(nll) == len(tokens) == len(scored_bytes) == len(windows):
        raise ValueError("one NLL, token count, byte count and window per window")
    return {"unit": WINDOW, "nll": [float(v) for v in nll], "tokens": [int(t) for t in tokens],
            "bytes": [int(b) for b in scored_bytes], "fingerprints": [window_fingerprint(w) for w in windows]}


def item_units(samples: list[dict], metric: str, filter_key: str = "none") -> dict:
    """Units of one task record from lm-eval's logged samples (``log_samples=True``), sorted by item id."""
    scores, fingerprints = {}, {}
    for sample in samples:
        if sample.get("filter", filter_key) != filter_key:
            continue
        if metric not in sample:
            raise LangpruneError(f"lm-eval's per-item results have no '{metric}' (they have "
                                 f"{', '.join(k for k in sample if isinstance(sample[k], (int, float)))})")
        item = int(sample["doc_id"])
        scores[item], fingerprints[item] = float(sample[metric]), item_fingerprint(sample)
    ids = sorted(scores)
    return {"unit": ITEM, "ids": ids, "score": [scores[i] for i in ids],
            "fingerprints": [fingerprints[i] for i in ids]}
