"""Is the target-language effect larger than the noise? Paired tests behind "calibrate in the target language".

For every model, pruning setting (method, structure, sparsity) and evaluation column
(benchmark, metric, language), own-language calibration is compared with every other
calibration set and with the best of the other single languages (the one with the best
seed-mean score, as in ``target_best``). The comparison is paired twice over:

- over seeds: only seeds both calibration sets were pruned with count, and each unit's
  difference is averaged over them (each document carries its seeds as one block);
- over units: both variants are scored on the same evaluation windows (perplexity) or items
  (tasks), kept per unit by the evaluation (``langprune.evaluate.units``).

The effect is the perplexity ratio own / other, ``exp(sum_u d_u / sum_u tokens_u)`` with
``d_u`` the seed-mean NLL difference of window ``u`` (the ratio of the seeds' geometric-mean
perplexities; below 1 = own better), or the score difference own - other (above 0 = own
better). Its ``1 - alpha`` interval is a paired percentile bootstrap over units
(``scipy.stats.bootstrap``); the p-value is a paired sign-flip permutation test over units
(``scipy.stats.permutation_test``), Holm-corrected across the languages of one table (same
setting, metric and comparison). Resamples, alpha and the random seed come from the config
and are written into every output. The interval reflects which documents/items were
evaluated and the seed-to-seed differences per document; with few seeds it cannot see a
shift shared by all documents of one seed, which is why ``seed_intervals`` shows how it
narrows as seeds are added.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import LangpruneError
from ..evaluate.results import _labels
from ..io import read_json
from ..variant import SETTING_KEYS, is_uncalibrated
from .common import html_page, metric_info, write_text
from .tables import is_dense, normalise_metrics, single_calibrations, target_language

COLUMN_KEYS = ["benchmark", "metric", "language"]
BEST_OTHER = "best other"
SIGNIFICANCE_FORMATS = ["csv", "md", "html"]  # significance.<ext> and seed_intervals.<ext>
RESULT_COLUMNS = (SETTING_KEYS + COLUMN_KEYS
                  + ["own", "other", "compared", "effect", "estimate", "low", "high", "p", "p_holm", "significant",
                     "own_better", "seeds", "units", "resamples", "alpha", "rng_seed"])


@dataclass(frozen=True)
class SignificanceSettings:
    """How the paired tests run; all of it is recorded next to the results."""

    resamples: int = 9999
    alpha: float = 0.05
    seed: int = 0
    seed_counts: tuple[int, ...] = (2, 4, 8)

    def __post_init__(self) -> None:
        if self.resamples < 1:
            raise LangpruneError(f"--resamples must be a positive number of resamples, not {self.resamples}")
        if not 0 < self.alpha < 1:
            raise LangpruneError(f"--alpha must lie strictly between 0 and 1, not {self.alpha}")
        if any(k < 1 for k in self.seed_counts):
            raise LangpruneError(f"--seed-counts must be positive numbers of seeds, not {list(self.seed_counts)}")

    @property
    def confidence(self) -> float:
        return 1.0 - self.alpha


@dataclass(frozen=True)
class PairedResult:
    """One paired comparison on the reported scale (a ratio, or a difference)."""

    estimate: float
    low: float
    high: float
    p: float


# --------------------------------------------------------------------------- statistics

def _rate(diff: np.ndarray, weight: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.sum(diff, axis=axis) / np.sum(weight, axis=axis)


def _total(diff: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.sum(diff, axis=axis)


def paired_test(diff: np.ndarray, weight: np.ndarray, settings: SignificanceSettings, ratio: bool) -> PairedResult:
    """Bootstrap interval and sign-flip p-value of ``sum(diff) / sum(weight)`` over paired units.

    ``diff``: per-unit difference own - other (summed NLL for perplexity, score for tasks),
    already averaged over the paired seeds; ``weight``: per-unit tokens (perplexity) or ones.
    ``ratio``: report ``exp`` of the statistic (a perplexity ratio) instead of the difference.
    With one unit there is nothing to resample: the interval and p-value are NaN.
    """
    # Local: `report figures` and `report summary` read significance results through this module without scipy.
    from scipy import stats  # noqa: PLC0415

    diff, weight = np.asarray(diff, dtype=float), np.asarray(weight, dtype=float)
    theta = float(_rate(diff, weight))
    low = high = p = math.nan
    if len(diff) > 1:
        rng = np.random.default_rng(settings.seed)
        if np.ptp(diff / weight) == 0:  # every unit differs by the same rate: no spread to resample
            low = high = theta
        else:
            boot = stats.bootstrap((diff, weight), _rate, paired=True, vectorized=True, axis=-1,
                                   n_resamples=settings.resamples, confidence_level=settings.confidence,
                                   method="percentile", rng=rng)
            low, high = float(boot.confidence_interval.low), float(boot.confidence_interval.high)
        p = float(stats.permutation_test((diff,), _total, permutation_type="samples", vectorized=True, axis=-1,
                                         n_resamples=settings.resamples, alternative="two-sided", rng=rng).pvalue)
    scale = math.exp if ratio else float
    return PairedResult(scale(theta), scale(low), scale(high), p)


def holm(pvalues) -> np.ndarray:
    """Holm's step-down adjusted p-values (NaN stays NaN and does not count as a test)."""
    p = np.asarray(pvalues, dtype=float)
    adjusted = np.full(p.shape, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    order = valid[np.argsort(p[valid], kind="stable")]
    m, running = len(order), 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[index]))
        adjusted[index] = running
    return adjusted


# --------------------------------------------------------------------------- units

def unit_files(metrics_csv: str | os.PathLike) -> list[str]:
    """The metrics JSONs behind a tidy metrics CSV (its ``file`` column, as ``evaluate gather`` writes it)."""
    path = Path(metrics_csv)
    if not path.is_file():
        raise LangpruneError(f"metrics table {path} does not exist: write it with `langprune evaluate gather`")
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    files = list(dict.fromkeys(f for f in frame.get("file", pd.Series(dtype=str)) if f))
    missing = [f for f in files if not Path(f).is_file()]
    if missing:
        raise LangpruneError(f"{len(missing)} metrics JSON(s) listed in {path} are missing (first: {missing[0]}); "
                             "run the significance tests where the evaluation results are, or gather again")
    return files


def read_units(paths: list[str | os.PathLike]) -> pd.DataFrame:
    """One row per record that kept per-unit results, with the tidy table's labels (empty if none did)."""
    rows = []
    for path in paths:
        doc = read_json(path)
        if "records" not in doc:
            raise LangpruneError(f"'{path}' is not a langprune metrics JSON (no 'records')")
        labels = _labels(doc)
        for rec in doc["records"]:
            if rec.get("units") and rec.get("available"):
                rows.append({**labels, **{k: rec.get(k) for k in ["benchmark", "language", "metric", "value", "n"]},
                             "available": True, "units": rec["units"], "file": str(path)})
    columns = SETTING_KEYS + ["calib", "seed"] + COLUMN_KEYS + ["value", "n", "available", "units", "file"]
    return normalise_metrics(pd.DataFrame(rows, columns=columns))


def _unit_values(units: dict) -> tuple[list, np.ndarray, np.ndarray]:
    """(unit ids, per-unit value to difference, per-unit weight)."""
    if units["unit"] == "window":
        return list(range(len(units["nll"]))), np.asarray(units["nll"], float), np.asarray(units["tokens"], float)
    return list(units["ids"]), np.asarray(units["score"], float), np.ones(len(units["score"]))


def paired_arrays(own: pd.DataFrame, other: pd.DataFrame, seeds: list[str] | None = None):
    """``(diff, weight, seeds)``: per-unit own - other, averaged over the seeds both have (or ``seeds``)."""
    by_seed = [{s: _unit_values(u) for s, u in zip(runs["seed"], runs["units"])} for runs in (own, other)]
    common = seeds or sorted(set(by_seed[0]) & set(by_seed[1]), key=_seed_order)
    if not common:
        return None
    reference_ids, _, reference_weight = by_seed[0][common[0]]
    diffs = []
    for seed in common:
        (ids_a, a, w_a), (ids_b, b, w_b) = by_seed[0][seed], by_seed[1][seed]
        if ids_a != reference_ids or ids_b != reference_ids or not (
                np.array_equal(w_a, reference_weight) and np.array_equal(w_b, reference_weight)):
            raise LangpruneError(
                f"{own['file'].iloc[0]} and {other['file'].iloc[0]} were scored on different evaluation units "
                f"(windows or items); evaluate every variant with the same data and settings")
        diffs.append(a - b)
    return np.mean(diffs, axis=0), reference_weight, common


def _seed_order(seed: str) -> tuple:
    return (0, int(seed), "") if str(seed).isdigit() else (1, 0, str(seed))


# --------------------------------------------------------------------------- comparisons

def _best_other(values: pd.Series, own: str, candidates: set[str], lower_is_better: bool) -> str | None:
    """The other single-language calibration with the best seed-mean score (as target_best ranks them)."""
    others = values[[c for c in values.index if c != own and c in candidates]].dropna()
    if others.empty:
        return None
    return str(others.idxmin() if lower_is_better else others.idxmax())


def _row(setting: dict, column: tuple, own: str, other: str, compared: str, result: PairedResult, ratio: bool,
         seeds: list, units: int, settings: SignificanceSettings) -> dict:
    return {**setting, **dict(zip(COLUMN_KEYS, column)), "own": own, "other": other, "compared": compared,
            "effect": "ratio" if ratio else "difference", "estimate": result.estimate, "low": result.low,
            "high": result.high, "p": result.p,
            "own_better": bool(result.estimate < 1.0 if ratio else result.estimate > 0.0),
            "seeds": len(seeds), "units": units, "resamples": settings.resamples, "alpha": settings.alpha,
            "rng_seed": settings.seed}


def compare_calibrations(units: pd.DataFrame, settings: SignificanceSettings) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(comparisons, seed_intervals)`` for every column whose own language was a calibration set.

    ``comparisons``: own vs each other calibration set (``other`` = its name) and vs the
    best other single language (``other`` = ``"best other"``, ``compared`` = its name), with
    the Holm-adjusted p-value and ``significant`` (adjusted p < alpha). ``seed_intervals``:
    the best-other interval recomputed with the first k paired seeds, k from ``seed_counts``.
    """
    calibrated = units[~is_dense(units) & ~units["calib"].map(is_uncalibrated).astype(bool)]
    singles = single_calibrations(units)
    rows, narrowing = [], []
    for key, cells in calibrated.groupby(SETTING_KEYS + COLUMN_KEYS, sort=True):
        setting, column = dict(zip(SETTING_KEYS, key[:4])), key[4:]
        own = target_language(column[2])
        if own not in set(cells["calib"]):
            continue
        ratio = column[1] == "perplexity"
        lower = metric_info(column[1]).lower_is_better
        runs = {calib: group for calib, group in cells.groupby("calib")}
        best = _best_other(cells.groupby("calib")["value"].mean(), own, singles, lower)
        comparisons = [(c, c) for c in sorted(runs) if c != own] + ([(BEST_OTHER, best)] if best else [])
        for other, compared in comparisons:
            paired = paired_arrays(runs[own], runs[compared])
            if paired is None:
                continue
            diff, weight, seeds = paired
            rows.append(_row(setting, column, own, other, compared, paired_test(diff, weight, settings, ratio), ratio,
                             seeds, len(diff), settings))
            if other != BEST_OTHER:
                continue
            for k in sorted(set(settings.seed_counts)):
                if k <= len(seeds):
                    diff_k, weight_k, _ = paired_arrays(runs[own], runs[compared], seeds[:k])
                    result = paired_test(diff_k, weight_k, settings, ratio)
                    narrowing.append({**setting, **dict(zip(COLUMN_KEYS, column)), "own": own, "compared": compared,
                                      "seeds": k, "effect": "ratio" if ratio else "difference",
                                      "estimate": result.estimate, "low": result.low, "high": result.high,
                                      "width": result.high - result.low})
    table = pd.DataFrame(rows, columns=[c for c in RESULT_COLUMNS if c not in ("p_holm", "significant")])
    family = SETTING_KEYS + ["benchmark", "metric", "other"]
    table["p_holm"] = table.groupby(family, sort=False)["p"].transform(lambda p: holm(p.to_numpy())) \
        if len(table) else pd.Series(dtype=float)
    table["significant"] = table["p_holm"] < settings.alpha
    return table[RESULT_COLUMNS], pd.DataFrame(narrowing, columns=SETTING_KEYS + COLUMN_KEYS + [
        "own", "compared", "seeds", "effect", "estimate", "low", "high", "width"])


# --------------------------------------------------------------------------- target_best and heatmaps

def read_significance(path: str | os.PathLike) -> pd.DataFrame:
    """Read significance.csv back with labels as strings (as the tidy table has them)."""
    path = Path(path)
    if not path.is_file():
        raise LangpruneError(f"--significance {path} does not exist: write it with `langprune report significance`")
    labels = SETTING_KEYS + COLUMN_KEYS + ["own", "other", "compared", "effect"]
    table = pd.read_csv(path, dtype={k: str for k in labels}, keep_default_na=False, na_values=[""])
    missing = [c for c in RESULT_COLUMNS if c not in table.columns]
    if missing:
        raise LangpruneError(f"{path} lacks column(s) {', '.join(missing)}: "
                             f"rewrite it with `langprune report significance`")
    for flag in ["significant", "own_better"]:
        table[flag] = table[flag].astype(str).str.lower().isin(["true", "1"])
    return table


def annotate_target_best(columns: pd.DataFrame, significance: pd.DataFrame) -> pd.DataFrame:
    """target_best's per-column rows plus own vs the best other language: effect, interval, Holm p.

    ``significant_win``: own language is the best single calibration and significantly
    better than the next best; columns without a test read False, and without any test the
    columns come back unchanged.
    """
    best = significance[significance["other"] == BEST_OTHER].rename(columns={"compared": "next_best"})
    if best.empty:  # nothing was tested: state no significance rather than zero wins
        return columns
    keep = SETTING_KEYS + COLUMN_KEYS + ["next_best", "effect", "estimate", "low", "high", "p_holm", "significant",
                                         "own_better", "seeds", "units"]
    merged = columns.merge(best[keep], on=SETTING_KEYS + COLUMN_KEYS, how="left")
    merged["significant_win"] = (merged["target_is_best"].astype(bool) & merged["own_better"].eq(True)
                                 & merged["significant"].eq(True))
    return merged


def significant_cells(significance: pd.DataFrame | None, setting: dict, values: pd.DataFrame) -> np.ndarray:
    """Heatmap mask: the own-language cell of each column where own calibration wins significantly."""
    mask = np.zeros(values.shape, dtype=bool)
    if significance is None or significance.empty:
        return mask
    chosen = significance[(significance["other"] == BEST_OTHER) & significance["significant"]
                          & significance["own_better"]]
    for k, v in setting.items():
        chosen = chosen[chosen[k] == str(v)]
    wins = set(chosen[COLUMN_KEYS + ["own"]].itertuples(index=False, name=None))
    for j, column in enumerate(values.columns):
        for i, calib in enumerate(values.index):
            mask[i, j] = (*column, calib) in wins
    return mask


# --------------------------------------------------------------------------- writing

def format_effect(estimate: float, low: float, high: float, effect: str, metric: str) -> str:
    """'0.987 [0.975, 0.999]' for ratios, '+4.2 [-1.0, +9.4]' (display units) for differences."""
    if pd.isna(estimate):
        return "n/a"
    if effect == "ratio":
        return f"{estimate:.3f} [{low:.3f}, {high:.3f}]"
    scale = metric_info(metric).scale
    return f"{estimate * scale:+.1f} [{low * scale:+.1f}, {high * scale:+.1f}]"


def settings_note(settings: SignificanceSettings) -> str:
    return (f"Paired over seeds and over the same evaluation windows/items; {settings.confidence:.0%} percentile "
            f"bootstrap interval over units ({settings.resamples} resamples, random seed {settings.seed}); two-sided "
            f"sign-flip permutation p-value ({settings.resamples} resamples), Holm-corrected across the languages of "
            f"one table; significant: adjusted p < {settings.alpha}. Perplexity: ratio own / other (below 1 = own "
            f"better); tasks: own - other in the metric's display units (above 0 = own better).")


def display_table(table: pd.DataFrame) -> pd.DataFrame:
    """The best-other comparisons as read by people: one row per setting and column."""
    best = table[table["other"] == BEST_OTHER]
    return pd.DataFrame({
        **{k: best[k] for k in SETTING_KEYS + ["benchmark", "metric"]},
        "language": best["language"].str.upper(),
        "own vs": best["compared"].str.upper(),
        "effect [interval]": [format_effect(r.estimate, r.low, r.high, r.effect, r.metric)
                              for r in best.itertuples(index=False)],
        "p (Holm)": best["p_holm"].map(lambda p: "n/a" if pd.isna(p) else f"{p:.3g}"),
        "verdict": [verdict(r.own_better, r.significant, r.estimate == (1.0 if r.effect == "ratio" else 0.0))
                    for r in best.itertuples(index=False)],
        "seeds": best["seeds"], "units": best["units"],
    })


def verdict(own_better: bool, significant: bool, tie: bool = False) -> str:
    if tie:
        return "no difference"
    if significant:
        return "own significantly better" if own_better else "own significantly worse"
    return "own nominally better" if own_better else "own nominally worse"


def narrowing_summary(narrowing: pd.DataFrame) -> pd.DataFrame:
    """Median interval width per method, metric and number of seeds: how many seeds a budget needs.

    Widths read as the effects do: of the perplexity ratio, or in the task metric's display units.
    """
    columns = SETTING_KEYS + ["metric", "seeds", "columns", "median_width"]
    if narrowing.empty:
        return pd.DataFrame(columns=columns)
    summary = (narrowing.groupby(SETTING_KEYS + ["metric", "seeds"], sort=True)["width"]
               .agg(columns="count", median_width="median").reset_index())
    summary["median_width"] = [f"{w:.4f}" if metric == "perplexity" else f"{w * metric_info(metric).scale:.1f}"
                               for w, metric in zip(summary["median_width"], summary["metric"])]
    return summary[columns]


def write_significance(metrics_csv: str | os.PathLike, out_dir: str | os.PathLike,
                       settings: SignificanceSettings) -> list[Path]:
    """Write significance.{csv,md,html} and seed_intervals.{csv,md,html} into out_dir.

    The per-unit results come from the metrics JSONs the tidy table was gathered from. Results
    evaluated before units were kept (or a table without its JSONs' paths) give empty tables
    that say so, since the nominal tables stay valid.
    """
    out_dir = Path(out_dir)
    units = read_units(unit_files(metrics_csv))
    table, narrowing = compare_calibrations(units, settings)
    note = settings_note(settings)
    if units.empty:
        note = ("Nothing was tested: none of the evaluations behind this table kept per-unit results; "
                "evaluate again with this version of langprune. " + note)
        print(f"warning: {metrics_csv}: no per-unit results, nothing to test", file=sys.stderr)
    shown = display_table(table)
    title = "Is own-language calibration significantly better than the best other language?"
    narrow_title = "How the interval narrows with more seeds (own vs best other language)"
    narrow_note = (f"Width of the {settings.confidence:.0%} interval of own vs the best other language using the "
                   f"first k paired seeds, k in {list(settings.seed_counts)} (only k up to the seeds run); median "
                   "over the columns of a setting: of the perplexity ratio, or in percentage points for task scores.")
    summary = narrowing_summary(narrowing)
    written = [write_text(out_dir / "significance.csv", table.to_csv(index=False)),
               write_text(out_dir / "seed_intervals.csv", narrowing.to_csv(index=False))]
    for name, heading, text, frame in [("significance", title, note, shown),
                                       ("seed_intervals", narrow_title, narrow_note, summary)]:
        body = frame.to_markdown(index=False, disable_numparse=True) if len(frame) else "(no comparisons)"
        written.append(write_text(out_dir / f"{name}.md", f"**{heading}**\n\n{text}\n\n{body}\n"))
        written.append(write_text(out_dir / f"{name}.html", html_page(heading, text,
                                                                       frame.to_html(index=False, border=0))))
    return written
