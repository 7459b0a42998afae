"""Per-unit results kept beside each aggregate, so that variants can be compared pairwise.

A perplexity record keeps, per evaluation window, the summed NLL (nats), the predicted
tokens and the UTF-8 bytes those tokens cover; a task record keeps, per item (lm-eval's
``doc_id``), its score (1/0 correctness for accuracy, the F1 of F1 tasks). Every variant of
a model sees the same windows and items, so two variants can be compared on the same units
(``langprune.report.significance``). Units are small lists inside the record's ``units``
key of the metrics JSON: 128 windows per language for the paper's perplexity budget, one
number per item for tasks; the tidy CSV leaves them out.
"""

from __future__ import annotations

from ..errors import LangpruneError

WINDOW = "window"
ITEM = "item"


def window_units(nll: list[float], tokens: list[int], scored_bytes: list[int]) -> dict:
    """Units of one perplexity record: one entry per evaluation window, in window order."""
    if not len(nll) == len(tokens) == len(scored_bytes):
        raise ValueError("one NLL, token count and byte count per window")
    return {"unit": WINDOW, "nll": [float(v) for v in nll], "tokens": [int(t) for t in tokens],
            "bytes": [int(b) for b in scored_bytes]}


def item_units(samples: list[dict], metric: str, filter_key: str = "none") -> dict:
    """Units of one task record from lm-eval's logged samples (``log_samples=True``), sorted by item id."""
    scores = {}
    for sample in samples:
        if sample.get("filter", filter_key) != filter_key:
            continue
        if metric not in sample:
            raise LangpruneError(f"lm-eval's per-item results have no '{metric}' (they have "
                                 f"{', '.join(k for k in sample if isinstance(sample[k], (int, float)))})")
        scores[int(sample["doc_id"])] = float(sample[metric])
    ids = sorted(scores)
    return {"unit": ITEM, "ids": ids, "score": [scores[i] for i in ids]}
