"""Seed-aggregated result tables in the layouts of the paper (Tables 1, 2 and 4).

The input is the tidy metrics CSV written by ``langprune evaluate gather`` (one row per
record: model, method, structure, sparsity, calib, seed, benchmark, language, metric,
value, n, available). Tables show ``mean ± std`` over seeds: rows are a pruning setting
and calibration set (the dense model on top), columns are evaluation languages (and
benchmarks for task tables). A cell whose runs were all unavailable reads ``n/a``
rather than disappearing, so a missing benchmark is visible, not silently dropped.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd

from .. import registry
from ..errors import LangpruneError
from ..variant import DENSE, LABEL_KEYS, NOT_APPLICABLE, canonical_calib, is_uncalibrated, method_label, mix_parts
from .common import CELL_KEYS, NOT_AVAILABLE, PERPLEXITY_BENCHMARK, ROW_KEYS, html_page, metric_info, write_text
from .paper import write_paper_comparison

REQUIRED_COLUMNS = [*LABEL_KEYS, "benchmark", "language", "metric", "value", "n", "available"]


def method_order() -> list[str]:
    """Row order of methods: dense, the registry's methods in its order (the order the paper discusses
    them), then each layer-wise allocation of them; unknown methods follow alphabetically."""
    return [DENSE, *[method_label(m, a) for a in registry.ALLOCATIONS for m in registry.METHODS
                     if registry.METHODS[m].combines_with(a)]]


# Task columns in the paper's order; unknown benchmarks follow alphabetically.
BENCHMARK_ORDER = [PERPLEXITY_BENCHMARK, "arc", "belebele", "mmlu", "hellaswag", "mkqa", "udhr_mc"]


# --------------------------------------------------------------------------- reading

def read_metrics(path: str | os.PathLike) -> pd.DataFrame:
    """Read a tidy metrics CSV, keeping labels as strings ('-' for the dense model's structure and seed)."""
    path = Path(path)
    if not path.is_file():
        raise LangpruneError(f"metrics table {path} does not exist: write it with "
                             f"`langprune evaluate gather METRICS.json... --out {path}`")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise LangpruneError(f"metrics table {path} is not a readable CSV ({' '.join(str(exc).split())}); rewrite it "
                             f"with `langprune evaluate gather METRICS.json... --out {path}`") from exc
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise LangpruneError(f"metrics table {path} lacks column(s) {', '.join(missing)}; "
                             f"expected {', '.join(REQUIRED_COLUMNS)} (as written by `langprune evaluate gather`)")
    return normalise_metrics(df)


def normalise_metrics(df: pd.DataFrame) -> pd.DataFrame:
    """Give labels one spelling and values numeric types, so grouping is exact."""
    df = df.copy()
    for col in CELL_KEYS + ["seed"]:
        df[col] = df[col].fillna("").astype(str).str.strip().replace("", NOT_APPLICABLE)
    df["calib"] = df["calib"].map(canonical_calib)  # 'DE' and 'de' name one language; tables print upper case
    df["language"] = df["language"].str.lower()
    df["value"] = pd.to_numeric(df["value"].replace({"": None, "None": None, "null": None}), errors="coerce")
    df["available"] = df["available"].astype(str).str.strip().str.lower().isin(["true", "1", "yes"])
    return df


# --------------------------------------------------------------------------- aggregation

def aggregate_seeds(tidy: pd.DataFrame) -> pd.DataFrame:
    """Mean and sample std (ddof=1) over seeds per cell; unavailable runs count as missing.

    ``n_seeds`` counts the runs that produced a value, ``runs`` all runs of the cell; a
    cell with ``n_seeds == 0`` is kept (mean NaN) so tables can print it as n/a.
    """
    usable = tidy.assign(value=tidy["value"].where(tidy["available"]))
    grouped = usable.groupby(CELL_KEYS, sort=False, dropna=False)["value"]
    agg = grouped.agg(mean="mean", std="std", n_seeds="count", runs="size").reset_index()
    return agg


def target_language(language: str) -> str:
    """The calibration language that 'matches' an evaluation column (EN-E, en_c -> en)."""
    return re.split(r"[-_]", language.lower())[0]


def single_calibrations(agg: pd.DataFrame) -> set[str]:
    """Calibration sets that are one evaluated language; everything else (en+de, all7) is a mix."""
    languages = {target_language(lang) for lang in agg["language"].unique()}
    return {c for c in agg["calib"].unique() if c in languages}


def is_dense(agg: pd.DataFrame) -> pd.Series:
    return agg["method"] == DENSE


def is_reference_row(agg: pd.DataFrame) -> pd.Series:
    """Dense and calibration-free runs (magnitude): shown in every table, above the calibrated rows."""
    return is_dense(agg) | agg["calib"].map(is_uncalibrated)


def _order_key(value: str, order: list[str]) -> tuple:
    return (order.index(value), "") if value in order else (len(order), value)


def calib_sort_key(calib: str, singles: set[str]) -> tuple:
    """Dense first, single languages, explicit mixes (en+de) by size, then named sets (all7)."""
    if is_uncalibrated(calib):
        return (0, 0, calib)
    if calib in singles:
        return (1, 0, calib)
    parts = len(mix_parts(calib))
    return (2, parts, calib) if parts > 1 else (3, 0, calib)


def sort_rows(rows: pd.DataFrame, singles: set[str]) -> pd.DataFrame:
    """Order table rows as the paper does: dense on top, then by method and calibration."""
    order = method_order()
    key = rows.apply(lambda r: (r["model"], _order_key(r["method"], order), r["structure"],
                                r["sparsity"], calib_sort_key(r["calib"], singles)), axis=1)
    return rows.iloc[sorted(range(len(rows)), key=lambda i: key.iloc[i])]


def column_sort_key(benchmark: str, metric: str, language: str) -> tuple:
    return (_order_key(benchmark, BENCHMARK_ORDER), metric, language.lower())


# --------------------------------------------------------------------------- layouts

def format_cell(mean: float, std: float, metric: str) -> str:
    """'mean ± std' in the metric's display units; 'n/a' when no run produced a value."""
    if pd.isna(mean):
        return NOT_AVAILABLE
    info = metric_info(metric)
    text = f"{mean * info.scale:.{info.decimals}f}"
    if not pd.isna(std):
        text += f" ± {std * info.scale:.{info.decimals}f}"
    return text


def column_label(benchmark: str, metric: str) -> str:
    return f"{benchmark} [{metric}]"


@dataclass(frozen=True)
class TableSpec:
    """One paper-style table: which records it shows and which calibration sets are its rows."""

    name: str
    title: str
    select: Callable[[pd.DataFrame], pd.Series]
    mixes: bool  # rows are mixed calibration sets (Table 4) instead of single languages
    per_benchmark: bool = False  # column headers name the benchmark (task tables)


def _perplexity_metric(metric: str) -> Callable[[pd.DataFrame], pd.Series]:
    return lambda agg: (agg["benchmark"] == PERPLEXITY_BENCHMARK) & (agg["metric"] == metric)


def _tasks(agg: pd.DataFrame) -> pd.Series:
    return agg["benchmark"] != PERPLEXITY_BENCHMARK


TABLES = [
    TableSpec("table1_perplexity", "Perplexity per evaluation language, single-language calibration "
              "(paper Table 1 layout; lower is better)", _perplexity_metric("perplexity"), mixes=False),
    TableSpec("table1_bits_per_byte", "Bits per byte per evaluation language, single-language calibration "
              "(lower is better; comparable across tokenizers)", _perplexity_metric("bits_per_byte"), mixes=False),
    TableSpec("table2_tasks", "Task scores per benchmark and evaluation language, single-language calibration "
              "(paper Table 2 layout; accuracy in %, higher is better)", _tasks, mixes=False, per_benchmark=True),
    TableSpec("table4_mixes_tasks", "Task scores with mixed calibration sets "
              "(paper Table 4 layout; accuracy in %, higher is better)", _tasks, mixes=True, per_benchmark=True),
    TableSpec("table4_mixes_perplexity", "Perplexity with mixed calibration sets (lower is better)",
              _perplexity_metric("perplexity"), mixes=True),
]
TABLE_NAMES = [spec.name for spec in TABLES]
TABLE_FORMATS = ["csv", "md", "tex", "html"]


def layout_table(agg: pd.DataFrame, spec: TableSpec) -> pd.DataFrame:
    """Pivot aggregated cells into the spec's layout: one row per setting x calibration.

    Columns are a (benchmark [metric], LANGUAGE) MultiIndex; the row labels are ordinary
    columns (model, method, structure, sparsity, calib). The dense row is on top; runs
    without calibration data (magnitude, calib 'none') appear in every table.
    """
    singles = single_calibrations(agg)
    cells = agg[spec.select(agg)]
    keep_calib = cells["calib"].map(lambda c: (c not in singles) if spec.mixes else (c in singles))
    cells = cells[is_reference_row(cells) | keep_calib]
    keys = cells[["benchmark", "metric", "language"]].itertuples(index=False)
    columns = sorted({(b, m, lang) for b, m, lang in keys},
                     key=lambda c: column_sort_key(*c))
    column_index = two_level_index([(column_label(b, m), lang.upper()) for b, m, lang in columns])
    rows = sort_rows(cells[ROW_KEYS].drop_duplicates(), singles)
    text = {(tuple(r[k] for k in ROW_KEYS), (column_label(r["benchmark"], r["metric"]), r["language"].upper())):
            format_cell(r["mean"], r["std"], r["metric"]) for _, r in cells.iterrows()}
    body = [[text.get((tuple(row), col), NOT_AVAILABLE) for col in column_index]
            for row in rows.itertuples(index=False)]
    table = pd.DataFrame(body, columns=column_index)
    labels = rows.reset_index(drop=True).assign(calib=lambda d: d["calib"].str.upper())
    labels.columns = two_level_index([(k, "") for k in ROW_KEYS])
    table.columns = two_level_index(list(table.columns))
    return pd.concat([labels, table], axis=1)


def two_level_index(pairs: list[tuple[str, str]]) -> pd.MultiIndex:
    """(top, sub) column labels; also for a table without value columns (no tasks were run)."""
    return pd.MultiIndex.from_arrays([[p[0] for p in pairs], [p[1] for p in pairs]])


# --------------------------------------------------------------------------- writing

def flat_columns(table: pd.DataFrame, per_benchmark: bool) -> pd.DataFrame:
    """One header row: 'arc [acc] DE' in task tables, just 'DE' in single-metric tables."""
    flat = [top if sub == "" else (f"{top} {sub}" if per_benchmark else sub) for top, sub in table.columns]
    out = table.copy()
    out.columns = flat
    return out


def write_table_formats(table: pd.DataFrame, out_prefix: Path, title: str, note: str,
                        per_benchmark: bool = False) -> list[Path]:
    """Write one layout as CSV, Markdown, LaTeX and HTML (same cells, four readers)."""
    flat = flat_columns(table, per_benchmark)
    written = [write_text(out_prefix.with_suffix(".csv"), flat.to_csv(index=False)),
               write_text(out_prefix.with_suffix(".md"),
                          f"**{title}**\n\n{note}\n\n"
                          + (flat.to_markdown(index=False, disable_numparse=True) if len(flat) else "(no rows)")
                          + "\n")]
    latex = table.to_latex(index=False, multicolumn=True, multicolumn_format="c", escape=True, caption=title,
                           label=f"tab:{out_prefix.name}") if len(table.columns) else ""
    written.append(write_text(out_prefix.with_suffix(".tex"), latex))
    written.append(write_text(out_prefix.with_suffix(".html"),
                              html_page(title, note, flat.to_html(index=False, border=0, na_rep=NOT_AVAILABLE))))
    return written


def seeds_note(agg: pd.DataFrame) -> str:
    pruned = agg[~is_dense(agg)]
    seeds = sorted(set(pruned["runs"])) if len(pruned) else []
    runs = "/".join(str(s) for s in seeds) or "0"
    return (f"Cells are mean ± sample std over {runs} pruning run(s) (seeds); a cell without ± had one run; "
            f"'{NOT_AVAILABLE}' marks a cell no run could measure.")


def write_tables(metrics_csv: str | os.PathLike, out_dir: str | os.PathLike,
                 reference: pd.DataFrame | None = None) -> list[Path]:
    """Write every paper-layout table, the seed aggregate and the paper comparison into out_dir.

    ``reference`` replaces the paper's numbers (a frame like ``paper.paper_reference()``).
    """
    out_dir = Path(out_dir)
    agg = aggregate_seeds(read_metrics(metrics_csv))
    note = seeds_note(agg)
    written = [write_text(out_dir / "aggregated.csv", agg.to_csv(index=False))]
    for spec in TABLES:
        written += write_table_formats(layout_table(agg, spec), out_dir / spec.name, spec.title, note,
                                       spec.per_benchmark)
    written += write_paper_comparison(agg, out_dir, reference)
    return written
