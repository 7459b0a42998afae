"""Heatmaps of calibration set x evaluation language, and the "target language best" count.

For every model and pruning setting (method, structure, sparsity) one heatmap shows the
seed-mean perplexity (or task score) per calibration set (rows) and evaluation language
(columns), a second one the change relative to the dense model in percent. The best
calibration of each column is boxed; the cell whose calibration language is the column's
own language is outlined with dashes, so "is the diagonal the best?" is visible at a glance.
The summary counts that question the way the paper states "26 of 50"; given the paired
tests of ``significance.py`` it also counts the columns where own-language calibration is
significantly better than the next best, and the heatmaps mark those cells with a star and
state under the title the table-level test of the whole diagonal (``matching.py``).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ..errors import LangpruneError
from ..io import atomic_path
from ..variant import SETTING_KEYS, setting_name
from .common import PERPLEXITY_BENCHMARK, html_page, metric_info, write_text
from .significance import annotate_target_best, read_significance, read_table_level, significant_cells, table_level_line
from .tables import (
    aggregate_seeds,
    calib_sort_key,
    column_sort_key,
    is_dense,
    read_metrics,
    single_calibrations,
    target_language,
)

COLUMN_KEYS = ["benchmark", "metric", "language"]
NA_COLOUR = "#d9d9d9"
SUMMARY_FORMATS = ["csv", "md", "html"]  # target_best.<ext>; target_best_columns.csv beside


@dataclass(frozen=True)
class Family:
    """A group of columns drawn in one heatmap (perplexity, or all task scores)."""

    name: str
    label: str

    def select(self, agg: pd.DataFrame) -> pd.Series:
        if self.name == "perplexity":
            return (agg["benchmark"] == PERPLEXITY_BENCHMARK) & (agg["metric"] == "perplexity")
        return agg["benchmark"] != PERPLEXITY_BENCHMARK


FAMILIES = [Family("perplexity", "perplexity"), Family("tasks", "task score")]


@dataclass
class Grid:
    """Seed-mean values of one setting: rows = calibration sets, columns = (benchmark, metric, language)."""

    values: pd.DataFrame
    dense: pd.Series

    @property
    def lower_is_better(self) -> np.ndarray:
        return np.array([metric_info(metric).lower_is_better for _, metric, _ in self.values.columns])


def pruned_settings(agg: pd.DataFrame) -> list[dict]:
    pruned = agg[~is_dense(agg)][SETTING_KEYS].drop_duplicates()
    return [dict(zip(SETTING_KEYS, row)) for row in pruned.itertuples(index=False)]


def in_setting(agg: pd.DataFrame, setting: dict) -> pd.Series:
    """Rows of one model and pruning setting (method, structure, sparsity)."""
    return pd.Series(np.logical_and.reduce([agg[k] == v for k, v in setting.items()]), index=agg.index)


def build_grid(agg: pd.DataFrame, setting: dict, family: Family) -> Grid | None:
    """Pivot one setting's cells; None when the setting has no value in this family."""
    chosen = family.select(agg)
    cells = agg[chosen & in_setting(agg, setting)]
    if cells.empty or cells["mean"].isna().all():
        return None
    singles = single_calibrations(agg)
    values = cells.pivot_table(index="calib", columns=COLUMN_KEYS, values="mean", aggfunc="first", dropna=False)
    rows = sorted(cells["calib"].unique(), key=lambda c: calib_sort_key(c, singles))
    columns = sorted(set(cells[COLUMN_KEYS].itertuples(index=False, name=None)), key=lambda c: column_sort_key(*c))
    values = values.reindex(index=rows, columns=pd.MultiIndex.from_tuples(columns, names=COLUMN_KEYS))
    dense_cells = agg[chosen & is_dense(agg) & (agg["model"] == setting["model"])]
    dense = dense_cells.set_index(COLUMN_KEYS)["mean"].reindex(values.columns)
    return Grid(values=values, dense=dense)


def best_mask(values: pd.DataFrame, lower_is_better: np.ndarray) -> np.ndarray:
    """True where a cell is its column's best (ties all marked); NaN cells never are."""
    signed = values.to_numpy(dtype=float) * np.where(lower_is_better, 1.0, -1.0)
    if signed.size == 0:
        return np.zeros(signed.shape, dtype=bool)
    column_best = np.where(np.isnan(signed), np.inf, signed).min(axis=0)
    return np.isclose(signed, column_best, rtol=1e-12, atol=0.0) & ~np.isnan(signed)


def target_mask(values: pd.DataFrame) -> np.ndarray:
    """True where the calibration set is the column's own evaluation language."""
    return np.array([[calib.lower() == target_language(lang) for _, _, lang in values.columns]
                     for calib in values.index])


def relative_change(grid: Grid) -> pd.DataFrame:
    """Percent change of each cell versus the dense model of its column."""
    return (grid.values / grid.dense.to_numpy() - 1.0) * 100.0


# --------------------------------------------------------------------------- the count

def target_best_columns(agg: pd.DataFrame) -> pd.DataFrame:
    """One row per (setting, column) that has its own language among the single calibrations.

    ``target_is_best``: the target-language calibration is (one of) the best single-language
    calibrations, the paper's criterion; ``best_overall`` also considers mixes (en+de, all7).
    A column where all calibrations tie (e.g. a task at chance, all 0%) is left out.
    ``gap_to_best_other``: the target calibration's score minus the best other single
    calibration's, signed so that negative means the target language is better.
    """
    singles = single_calibrations(agg)
    records = []
    for setting in pruned_settings(agg):
        for family in FAMILIES:
            grid = build_grid(agg, setting, family)
            if grid is None:
                continue
            single_rows = [c for c in grid.values.index if c in singles]
            single = grid.values.loc[single_rows]
            best_single = best_mask(single, grid.lower_is_better)
            best_all = best_mask(grid.values, grid.lower_is_better)
            for j, (benchmark, metric, language) in enumerate(grid.values.columns):
                target = target_language(language)
                if target not in single.index or pd.isna(single.at[target, (benchmark, metric, language)]):
                    continue
                winners = [c for i, c in enumerate(single.index) if best_single[i, j]]
                if len(winners) == single.iloc[:, j].notna().sum() > 1:
                    continue  # every calibration scores the same: the column cannot tell them apart
                overall = [c for i, c in enumerate(grid.values.index) if best_all[i, j]]
                column = single.iloc[:, j]
                others = column.drop(target).dropna()
                sign = 1.0 if grid.lower_is_better[j] else -1.0
                gap = sign * (column[target] - (others.min() if sign > 0 else others.max())) if len(others) else np.nan
                records.append({**setting, "benchmark": benchmark, "metric": metric, "language": language,
                                "target": target, "best_single": " / ".join(winners),
                                "target_is_best": target in winners,
                                "best_overall": " / ".join(overall), "gap_to_best_other": gap})
    columns = SETTING_KEYS + ["benchmark", "metric", "language", "target", "best_single", "target_is_best",
                              "best_overall", "gap_to_best_other"]
    return pd.DataFrame(records, columns=columns)


def count_statement(k: int, n: int, significant: int | None = None) -> str:
    text = f"{k} of {n} columns"
    return text if significant is None else f"{text} ({significant} significantly better than the next best)"


def target_best_summary(columns: pd.DataFrame) -> pd.DataFrame:
    """'k of n columns' per model/setting/metric, per metric over everything, and in total."""
    keys = SETTING_KEYS + ["metric"]
    rows = []

    tested = "significant_win" in columns

    def add(scope: dict, group: pd.DataFrame) -> None:
        k, n = int(group["target_is_best"].sum()), len(group)
        significant = {"significant": int(group["significant_win"].sum())} if tested else {}
        rows.append({**scope, "target_best": k, **significant, "columns": n, "share": k / n if n else float("nan"),
                     "mean_gap_to_best_other": group["gap_to_best_other"].mean() if n else float("nan"),
                     "statement": count_statement(k, n, significant.get("significant"))})

    for key, group in columns.groupby(keys, sort=False):
        add(dict(zip(keys, key)), group)
    everything = dict.fromkeys(SETTING_KEYS, "all")
    for metric, group in columns.groupby("metric", sort=False):
        add({**everything, "metric": metric}, group)
    add({**everything, "metric": "all"}, columns)
    return pd.DataFrame(rows, columns=keys + ["target_best", *(["significant"] if tested else []), "columns", "share",
                                              "mean_gap_to_best_other",
                                              "statement"])


def write_summary(metrics_csv: str | os.PathLike, out_dir: str | os.PathLike,
                  significance: str | os.PathLike | None = None) -> list[Path]:
    """Write target_best.{csv,md,html} (counts) and target_best_columns.csv (per column).

    With ``significance`` (significance.csv) each column also states own vs the next best
    language: the effect, its interval, the Holm-adjusted p-value and whether the win is significant.
    """
    out_dir = Path(out_dir)
    columns = target_best_columns(aggregate_seeds(read_metrics(metrics_csv)))
    if significance is not None:
        columns = annotate_target_best(columns, read_significance(significance))
    summary = target_best_summary(columns)
    title = "How often is the target language the best calibration?"
    note = ("For each evaluation column (benchmark x language) of each pruning setting, the single-language "
            "calibration with the best seed-mean score is found (lowest perplexity, highest accuracy); "
            "the count is the number of columns where that is the evaluation language itself, like the paper's "
            "'26 of 50'. Columns whose own language was not used for calibration, or where every calibration "
            "scores the same, are not counted."
            + (" 'significant' counts the columns where own-language calibration is also significantly better than "
               "the next best language (paired test, Holm-corrected; see significance.md); the per-column file "
               "states the effect and its interval." if "significant_win" in columns else ""))
    body_md = summary.to_markdown(index=False, floatfmt=".2f") if len(summary) else "(no comparable columns)"
    return [
        write_text(out_dir / "target_best.csv", summary.to_csv(index=False)),
        write_text(out_dir / "target_best_columns.csv", columns.to_csv(index=False)),
        write_text(out_dir / "target_best.md", f"**{title}**\n\n{note}\n\n{body_md}\n"),
        write_text(out_dir / "target_best.html",
                   html_page(title, note, summary.to_html(index=False, border=0, float_format="{:.2f}".format)
                             + "<h4>Per column</h4>" + columns.to_html(index=False, border=0))),
    ]


# --------------------------------------------------------------------------- drawing

def cell_text(values: pd.DataFrame, relative: bool) -> list[list[str]]:
    """Numbers as printed in the cells: display units, or signed percent change."""
    texts = []
    for calib in values.index:
        row = []
        for benchmark, metric, language in values.columns:
            v = values.at[calib, (benchmark, metric, language)]
            info = metric_info(metric)
            row.append("n/a" if pd.isna(v) else (f"{v:+.1f}%" if relative else f"{v * info.scale:.{info.decimals}f}"))
        texts.append(row)
    return texts


def column_goodness(values: pd.DataFrame, lower_is_better: np.ndarray) -> np.ndarray:
    """0..1 within each column, 1 = best: columns differ in scale, so colour ranks within one."""
    arr = values.to_numpy(dtype=float)
    with warnings.catch_warnings():  # an all-n/a column stays NaN, which is what we draw
        warnings.simplefilter("ignore", RuntimeWarning)
        lo, hi = np.nanmin(arr, axis=0), np.nanmax(arr, axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    scaled = (arr - lo) / span
    return np.where(lower_is_better, 1.0 - scaled, scaled)


def column_labels(values: pd.DataFrame) -> list[str]:
    benchmarks = {b for b, _, _ in values.columns}
    return [lang.upper() if len(benchmarks) == 1 else f"{b}\n{lang.upper()}" for b, _, lang in values.columns]


def draw_heatmap(grid: Grid, relative: bool, title: str, significant: np.ndarray | None = None):
    """Render one heatmap as a matplotlib Figure (no pyplot state, Agg canvas).

    ``significant``: cells whose own-language win is significant; they get a star and a solid box.
    """
    values = relative_change(grid) if relative else grid.values
    lower = grid.lower_is_better
    if relative:
        harm = values.to_numpy(dtype=float) * np.where(lower, 1.0, -1.0)  # > 0 means worse than dense
        limit = max(float(np.nanmax(np.abs(harm))) if np.isfinite(harm).any() else 1.0, 1e-9)
        colour, cmap, norm = harm, "RdBu_r", TwoSlopeNorm(0.0, -limit, limit)
        bar_label = "% worse than dense (red = worse)"
    else:
        colour, cmap, norm = column_goodness(values, lower), "viridis", None
        bar_label = "position within column (1 = best)"
    nrows, ncols = values.shape
    fig = Figure(figsize=(max(5.0, 1.0 + 0.85 * ncols), max(3.0, 1.6 + 0.45 * nrows)), dpi=110)
    ax = fig.add_subplot()
    masked = np.ma.masked_invalid(colour)
    image = ax.imshow(masked, cmap=colormaps[cmap].with_extremes(bad=NA_COLOUR), norm=norm, aspect="auto")
    best = best_mask(grid.values, lower)
    target = target_mask(grid.values)
    for i, row in enumerate(cell_text(values, relative)):
        for j, text in enumerate(row):
            shade = masked[i, j] if not np.ma.is_masked(masked[i, j]) else None
            level = image.norm(shade) if shade is not None else None
            dark = level is not None and (level < 0.35 if not relative else abs(level - 0.5) > 0.35)
            starred = significant is not None and significant[i, j]
            ax.text(j, i, text + (" *" if starred else ""), ha="center", va="center", fontsize=7,
                    fontweight="bold" if starred else "normal", color="white" if dark else "black")
            if best[i, j]:
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="black", linewidth=2.4))
            if target[i, j]:
                ax.add_patch(Rectangle((j - 0.38, i - 0.38), 0.76, 0.76, fill=False, edgecolor="#e6550d",
                                       linestyle="--", linewidth=1.1))
    ax.set_xticks(range(ncols), column_labels(values), fontsize=8)
    ax.set_yticks(range(nrows), [c.upper() for c in values.index], fontsize=8)
    ax.set_xlabel("evaluation language")
    ax.set_ylabel("calibration set")
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, label=bar_label, shrink=0.8)
    legend = "black box: best calibration in the column\norange dashes: calibration = evaluation language; grey: n/a"
    if significant is not None:
        legend += "\n*: own language significantly better than the next best (Holm-corrected)"
    fig.text(0.01, 0.005, legend, fontsize=7)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig


def save_figure(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def figure_title(setting: dict, family: Family, relative: bool, seeds: int, matching: str = "") -> str:
    """The setting and what is drawn; ``matching``: the table-level test's line, on a line of its own."""
    what = f"{family.label}, % change vs dense" if relative else f"{family.label} (mean over {seeds} seed(s))"
    title = f"{setting['model']}: {setting['method']} {setting['structure']} {setting['sparsity']} - {what}"
    return f"{title}\n{matching}" if matching else title


def write_figures(metrics_csv: str | os.PathLike, out_dir: str | os.PathLike,
                  model: str | None = None, significance: str | os.PathLike | None = None) -> list[Path]:
    """Write heatmaps OUT_DIR/<method>_<structure>_<sparsity>/<family>_{abs,rel}.png for one model.

    ``significance`` (significance.csv): star the cells of significant own-language wins, and
    state the table-level test (table_level.csv beside it) under each title.
    """
    tests = read_significance(significance) if significance is not None else None
    matching = read_table_level(significance) if significance is not None else None
    agg = aggregate_seeds(read_metrics(metrics_csv))
    models = sorted(agg["model"].unique())
    if model is None and len(models) > 1:
        raise LangpruneError(f"metrics table {metrics_csv} holds several models ({', '.join(models)}); "
                             "pass --model NAME to draw one")
    if model is not None:
        if model not in models:
            raise LangpruneError(f"--model {model} is not in {metrics_csv} (it has: {', '.join(models)})")
        agg = agg[agg["model"] == model]
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LangpruneError(f"cannot create --out-dir '{out_dir}': {exc.strerror or exc}") from exc
    written = []
    for setting in pruned_settings(agg):
        seeds = int(agg[in_setting(agg, setting)]["runs"].max())
        for family in FAMILIES:
            grid = build_grid(agg, setting, family)
            if grid is None:
                continue
            tables = list(dict.fromkeys((benchmark, metric) for benchmark, metric, _ in grid.values.columns))
            line = table_level_line(matching, setting, tables)
            for relative, suffix in [(False, "abs"), (True, "rel")]:
                marks = None if tests is None else significant_cells(tests, setting, grid.values)
                fig = draw_heatmap(grid, relative, figure_title(setting, family, relative, seeds, line), marks)
                written.append(save_figure(fig, out_dir / setting_name(setting) / f"{family.name}_{suffix}.png"))
    return written
