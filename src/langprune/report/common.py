"""Vocabulary shared by the report's tables, figures and paper comparison: which columns name a
cell, how each metric is read and printed, and how a table file is written."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..io import atomic_path
from ..variant import SETTING_KEYS

# Columns that name one table row and cell; seeds are averaged away.
ROW_KEYS = [*SETTING_KEYS, "calib"]
CELL_KEYS = [*ROW_KEYS, "benchmark", "language", "metric"]
PERPLEXITY_BENCHMARK = "perplexity"
NOT_AVAILABLE = "n/a"

# Fewest resamples at which the significance intervals and p-values mean something: a 95%
# percentile interval then rests on 25 resamples beyond each end (fewer, and its ends move with
# the random seed), and the sign-flip p-value can reach 1/1000, below what Holm asks of the best
# of seven languages (0.05 / 7). A smaller alpha needs at least TAIL_RESAMPLES beyond each end.
MIN_RESAMPLES = 999
TAIL_RESAMPLES = 25


@dataclass(frozen=True)
class MetricInfo:
    """How a metric is read: which direction is better, and how it is printed."""

    lower_is_better: bool
    decimals: int
    scale: float = 1.0  # display factor: lm-eval fractions are shown as percent like the paper


METRICS = {
    "perplexity": MetricInfo(lower_is_better=True, decimals=2),
    "bits_per_byte": MetricInfo(lower_is_better=True, decimals=3),
    "acc": MetricInfo(lower_is_better=False, decimals=1, scale=100.0),
    "acc_norm": MetricInfo(lower_is_better=False, decimals=1, scale=100.0),
    "f1": MetricInfo(lower_is_better=False, decimals=1, scale=100.0),
}
# A score we know nothing about is assumed to be "higher is better", printed as recorded.
DEFAULT_METRIC = MetricInfo(lower_is_better=False, decimals=3)


def metric_info(metric: str) -> MetricInfo:
    return METRICS.get(metric, DEFAULT_METRIC)


def html_page(title: str, note: str, table_html: str) -> str:
    """A small self-contained page; Snakemake's report shows HTML inline, CSV only as download."""
    style = ("body{font-family:sans-serif;margin:1em} table{border-collapse:collapse;font-size:13px}"
             "th,td{border:1px solid #bbb;padding:3px 6px;text-align:right;white-space:nowrap}"
             "th{background:#eee} caption{caption-side:top;text-align:left;font-weight:bold}")
    return (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{title}</title>"
            f"<style>{style}</style></head><body><h3>{title}</h3><p>{note}</p>{table_html}</body></html>\n")


def write_text(path: Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path
