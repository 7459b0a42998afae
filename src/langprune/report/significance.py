"""Is the target-language effect larger than the noise? Paired tests behind "calibrate in the target language".

For every model, pruning setting (method, structure, sparsity) and evaluation column
(benchmark, metric, language), own-language calibration is compared with every other
calibration set and with the best of the other single languages (the one with the best
seed-mean score, as in ``target_best``). The comparison is paired twice over:

- over seeds: only seeds both calibration sets were pruned with count, and each unit's
  difference is averaged over them (each document carries its seeds as one block);
- over units: both variants are scored on the same evaluation windows (perplexity) or items
  (tasks), kept per unit by the evaluation (``langprune.evaluate.units``). Units pair only
  when their ids, token counts and fingerprints (hashes of the windows' token ids or the
  items' content) agree; anything else, and any NaN unit, is refused with the file and the
  first offending window or item. Results from before fingerprints were kept pair on ids and
  token counts alone, with a warning, and are marked ``units_checked = False``.

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
narrows as seeds are added. Resamples have a floor (``common.MIN_RESAMPLES``) below which
the interval's ends are noise.

Beside the per-column tests, ``table_level.*`` holds the exact matching test of the whole
diagonal (``matching.py``): it needs only the seed-mean cells of the tidy table, so it reaches
p = 1/k! however few windows or items each column has.
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
from ..evaluate.results import FINGERPRINT_COLUMN, _labels, is_metrics_json
from ..io import read_json
from ..variant import SETTING_KEYS, is_uncalibrated
from .common import MIN_RESAMPLES, TAIL_RESAMPLES, html_page, metric_info, write_text
from .matching import MAX_EXACT_LANGUAGES, TABLE_KEYS, TABLE_LEVEL_COLUMNS, cell_values, table_level
from .tables import is_dense, normalise_metrics, read_metrics, single_calibrations, target_language

COLUMN_KEYS = ["benchmark", "metric", "language"]
BEST_OTHER = "best other"
SIGNIFICANCE_FORMATS = ["csv", "md", "html"]  # significance.<ext>, seed_intervals.<ext>, table_level.<ext>
RESULT_COLUMNS = (SETTING_KEYS + COLUMN_KEYS
                  + ["own", "other", "compared", "effect", "estimate", "low", "high", "p", "p_holm", "significant",
                     "own_better", "seeds", "units", "units_checked", "resamples", "alpha", "rng_seed"])


def min_resamples(alpha: float) -> int:
    """Fewest resamples for a ``1 - alpha`` interval: ``MIN_RESAMPLES``, or more for alpha below 0.05."""
    return max(MIN_RESAMPLES, math.ceil(2 * TAIL_RESAMPLES / alpha - 1e-9) - 1)


@dataclass(frozen=True)
class SignificanceSettings:
    """How the paired tests run; all of it is recorded next to the results."""

    resamples: int = 9999
    alpha: float = 0.05
    seed: int = 0
    seed_counts: tuple[int, ...] = (2, 4, 8)

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise LangpruneError(f"--alpha must lie strictly between 0 and 1, not {self.alpha}")
        if self.resamples < min_resamples(self.alpha):
            raise LangpruneError(
                f"--resamples {self.resamples} is too few for meaningful intervals: use at least "
                f"{min_resamples(self.alpha)} (a {100 * self.confidence:g}% percentile interval needs {TAIL_RESAMPLES} "
                f"resamples beyond each end, and never fewer than {MIN_RESAMPLES})")
        if self.seed < 0:
            raise LangpruneError(f"--seed must be a non-negative integer (a random seed), not {self.seed}")
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

def read_tidy(metrics_csv: str | os.PathLike) -> pd.DataFrame:
    """The tidy metrics CSV, or one error line saying what the file is instead."""
    path = Path(metrics_csv)
    if path.is_file() and is_metrics_json(path):
        raise LangpruneError(f"--metrics {path} is a metrics JSON, not the tidy table: gather it first with "
                             f"`langprune evaluate gather {path}... --out metrics.csv` and pass that CSV")
    return read_metrics(path)


def unit_files(tidy: pd.DataFrame, metrics_csv: str | os.PathLike) -> list[str]:
    """The metrics JSONs behind a tidy metrics table (its ``file`` column, as ``evaluate gather`` writes it)."""
    files = list(dict.fromkeys(f for f in tidy.get("file", pd.Series(dtype=str)) if f))
    missing = [f for f in files if not Path(f).is_file()]
    if missing:
        raise LangpruneError(f"{len(missing)} metrics JSON(s) listed in {metrics_csv} are missing (first: "
                             f"{missing[0]}); run the significance tests where the evaluation results are, or gather "
                             "again")
    return files


def _unit_name(units: dict) -> str:
    return "window" if units["unit"] == "window" else "item"


def check_units(units: dict, where: str) -> None:
    """Per-unit results must be well-formed and finite: NaN is a broken evaluation, never a difference to test."""
    try:
        ids, values, weight = _unit_values(units)
        lengths = {len(ids), len(values), len(weight), len(units.get("fingerprints") or ids)}
    except (KeyError, TypeError, ValueError) as exc:
        raise LangpruneError(f"{where} per-unit results are malformed ({type(exc).__name__}: {exc}): evaluate this "
                             f"variant again") from exc
    if len(lengths) > 1:
        raise LangpruneError(f"{where} per-unit results have lists of different lengths: evaluate this variant again")
    bad = np.flatnonzero(~np.isfinite(values) | ~np.isfinite(weight))
    if bad.size:
        i = int(bad[0])
        name, value = ("NLL" if units["unit"] == "window" else "score", values[i])
        if np.isfinite(value):
            name, value = "tokens", weight[i]
        more = f" (and {bad.size - 1} more {_unit_name(units)}(s))" if bad.size > 1 else ""
        raise LangpruneError(f"{where} {_unit_name(units)} {ids[i]} has {name} {value}{more}: that evaluation is "
                             f"broken: evaluate this variant again")


def read_units(paths: list[str | os.PathLike]) -> pd.DataFrame:
    """One row per record that kept per-unit results, with the tidy table's labels (empty if none did)."""
    rows = []
    for path in paths:
        try:
            doc = read_json(path)
        except (ValueError, UnicodeDecodeError) as exc:
            raise LangpruneError(f"'{path}' is not valid JSON ({exc}); rerun the evaluation that writes it") from exc
        if not isinstance(doc, dict) or "records" not in doc:
            raise LangpruneError(f"'{path}' is not a langprune metrics JSON (no 'records')")
        labels = _labels(doc)
        for rec in doc["records"]:
            if rec.get("units") and rec.get("available"):
                check_units(rec["units"], f"{path}: {rec.get('benchmark')}/{rec.get('language')}")
                rows.append({**labels, **{k: rec.get(k) for k in ["benchmark", "language", "metric", "value", "n"]},
                             "available": True, "units": rec["units"], "file": str(path)})
    columns = SETTING_KEYS + ["calib", "seed"] + COLUMN_KEYS + ["value", "n", "available", "units", "file"]
    return normalise_metrics(pd.DataFrame(rows, columns=columns))


def _unit_values(units: dict) -> tuple[list, np.ndarray, np.ndarray]:
    """(unit ids, per-unit value to difference, per-unit weight)."""
    if units["unit"] == "window":
        return list(range(len(units["nll"]))), np.asarray(units["nll"], float), np.asarray(units["tokens"], float)
    return list(units["ids"]), np.asarray(units["score"], float), np.ones(len(units["score"]))


def _shown(value) -> str:
    return value if isinstance(value, str) else f"{value:g}"


def first_difference(a: dict, b: dict) -> str | None:
    """Where two runs' units stop being the same evaluation data, in words; None when they pair.

    Units pair when they have the same ids and weights (tokens per window) and, where both
    runs kept them, the same fingerprints.
    """
    name = _unit_name(a)
    (ids_a, _, w_a), (ids_b, _, w_b) = _unit_values(a), _unit_values(b)
    n = min(len(ids_a), len(ids_b))
    columns = [(np.asarray(ids_a[:n]), np.asarray(ids_b[:n]), "id"), (w_a[:n], w_b[:n], "tokens")]
    if a.get("fingerprints") and b.get("fingerprints"):
        columns.append((np.asarray(a["fingerprints"][:n]), np.asarray(b["fingerprints"][:n]), "fingerprint"))
    differs = np.zeros(n, dtype=bool)
    for x, y, _ in columns:
        differs |= x != y
    if differs.any():
        i = int(np.argmax(differs))
        what = next(f"{label} {_shown(x[i])} vs {_shown(y[i])}" for x, y, label in columns if x[i] != y[i])
        return f"first differing {name}: {ids_a[i]} ({what})"
    if len(ids_a) != len(ids_b):
        extra = (ids_a if len(ids_a) > n else ids_b)[n]
        return f"first differing {name}: {extra} ({len(ids_a)} vs {len(ids_b)} {name}s)"
    return None


def _run_label(run) -> str:
    return f"calibration {run.calib} seed {run.seed} ({run.file})"


def check_pairable(units: pd.DataFrame) -> set[tuple]:
    """Refuse a column whose calibrated runs were scored on different units; return the unchecked columns.

    All runs of one setting and column are compared with one reference, the first that kept
    fingerprints (own vs every other calibration pairs any two of them). Returned: the
    (setting + column) keys where a run kept no fingerprints (results from before they
    existed), so pairing there rests on ids and token counts alone.
    """
    unchecked = set()
    calibrated = units[~is_dense(units) & ~units["calib"].map(is_uncalibrated).astype(bool)]
    for key, runs in calibrated.groupby(SETTING_KEYS + COLUMN_KEYS, sort=True):
        ordered = list(runs.sort_values(["calib", "seed"]).itertuples(index=False))
        # the reference keeps fingerprints when any run does, so every fingerprinted run is compared
        reference = next((run for run in ordered if run.units.get("fingerprints")), ordered[0])
        for run in ordered:
            difference = first_difference(reference.units, run.units)
            if difference:
                raise LangpruneError(
                    f"{_run_label(reference)} and {_run_label(run)} were evaluated on different {key[4]}/{key[6]} "
                    f"{_unit_name(run.units)}s; {difference}; they cannot be paired: evaluate every variant on the "
                    f"same text and settings")
        if not all(run.units.get("fingerprints") for run in ordered):
            unchecked.add(key)
    return unchecked


def paired_arrays(own: pd.DataFrame, other: pd.DataFrame, seeds: list[str] | None = None):
    """``(diff, weight, seeds)``: per-unit own - other, averaged over the seeds both have (or ``seeds``).

    The runs must pair unit by unit (``check_pairable``).
    """
    by_seed = [{s: _unit_values(u) for s, u in zip(runs["seed"], runs["units"])} for runs in (own, other)]
    common = seeds or sorted(set(by_seed[0]) & set(by_seed[1]), key=_seed_order)
    if not common:
        return None
    _, _, weight = by_seed[0][common[0]]
    diffs = [by_seed[0][seed][1] - by_seed[1][seed][1] for seed in common]
    return np.mean(diffs, axis=0), weight, common


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
         seeds: list, units: int, checked: bool, settings: SignificanceSettings) -> dict:
    return {**setting, **dict(zip(COLUMN_KEYS, column)), "own": own, "other": other, "compared": compared,
            "effect": "ratio" if ratio else "difference", "estimate": result.estimate, "low": result.low,
            "high": result.high, "p": result.p,
            "own_better": bool(result.estimate < 1.0 if ratio else result.estimate > 0.0),
            "seeds": len(seeds), "units": units, "units_checked": checked, "resamples": settings.resamples,
            "alpha": settings.alpha,
            "rng_seed": settings.seed}


def compare_calibrations(units: pd.DataFrame, settings: SignificanceSettings) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(comparisons, seed_intervals)`` for every column whose own language was a calibration set.

    ``comparisons``: own vs each other calibration set (``other`` = its name) and vs the
    best other single language (``other`` = ``"best other"``, ``compared`` = its name), with
    the Holm-adjusted p-value and ``significant`` (adjusted p < alpha); ``units_checked``: the
    paired units' fingerprints were compared (False for results from before they were kept).
    ``seed_intervals``: the best-other interval recomputed with the first k paired seeds, k
    from ``seed_counts``. Runs of one column scored on different units are refused first.
    """
    unchecked = check_pairable(units)
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
                             seeds, len(diff), key not in unchecked, settings))
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


# --------------------------------------------------------------------------- the table-level test

TABLE_LEVEL_FILE = "table_level"  # table_level.<ext> beside significance.<ext>


def check_cells(tidy: pd.DataFrame, metrics_csv: str | os.PathLike) -> set[tuple]:
    """Refuse calibrated results that are not numbers or whose column mixes evaluation data.

    Returns the tables (setting + benchmark + metric) with a run that carries no fingerprint
    (results or a table from before fingerprints were kept): their cells are compared unchecked.
    """
    calibrated = tidy[~is_dense(tidy) & ~tidy["calib"].map(is_uncalibrated).astype(bool) & tidy["available"]]
    broken = ~np.isfinite(cell_values(calibrated).to_numpy(dtype=float))
    if broken.any():
        run = calibrated[broken].iloc[0]
        raise LangpruneError(f"{run.get('file') or metrics_csv}: {run['benchmark']}/{run['language']} {run['metric']} "
                             f"of calibration {run['calib']} seed {run['seed']} is {run['value']}; that evaluation is "
                             f"broken: evaluate this variant again")
    fingerprints = calibrated.get(FINGERPRINT_COLUMN, pd.Series("", index=calibrated.index)).fillna("")
    unchecked = set()
    for key, runs in calibrated.assign(fingerprint=fingerprints).groupby(SETTING_KEYS + COLUMN_KEYS, sort=True):
        kept = runs[runs["fingerprint"] != ""].sort_values(["calib", "seed"])
        if len(kept) < len(runs):
            unchecked.add(key[:len(TABLE_KEYS)])
        differing = kept[kept["fingerprint"] != kept["fingerprint"].iloc[0]] if len(kept) else kept
        if len(differing):
            first, other = kept.iloc[0], differing.iloc[0]
            raise LangpruneError(
                f"calibration {first['calib']} seed {first['seed']} ({first.get('file', '?')}) and calibration "
                f"{other['calib']} seed {other['seed']} ({other.get('file', '?')}) were evaluated on different "
                f"{key[4]}/{key[6]} data (fingerprints {first['fingerprint']} vs {other['fingerprint']}); their "
                f"cells cannot be compared: evaluate every variant on the same text and settings")
    return unchecked


def table_level_note(settings: SignificanceSettings, table: pd.DataFrame) -> str:
    sampled = table["exact"].eq(False).any()
    return ("Is the diagonal (calibrate in the language you evaluate) better than the other ways of assigning the "
            "k single-language calibration sets to the k evaluation languages? Per model, pruning setting, benchmark "
            "and metric, cells are seed means of log perplexity (scores as they are) per calibration x evaluation "
            "language, centred on each evaluation column's mean. The statistic is the sum of the diagonal's centred "
            "cells (below 0 = better for perplexity, above 0 for scores); p is the share of all k! assignments "
            "at least as good as the diagonal (exact, so the smallest p is 1/k!: 1/5040 for seven languages) and "
            "the rank is 1 + the assignments strictly better. Row and column effects add the same to every "
            "assignment, so only the calibration x evaluation-language interaction is tested. Significant: "
            f"p < {settings.alpha}, per table, not corrected across tables. With a cell missing, the test runs over "
            "the largest set of languages whose cells are all present (of tied sets, the one with the highest p), "
            "stated in 'left out'; a language evaluated in several columns (ARC's EN-E, EN-C) counts once, as the "
            "mean of its columns. 'diagonal vs column mean': the diagonal's perplexity as a factor of the column's "
            "geometric mean over calibrations (below 1 = better), or its score minus the column mean."
            + (f" Tables of more than {MAX_EXACT_LANGUAGES} languages sample {settings.resamples} random assignments "
               f"(random seed {settings.seed}): p = (1 + as good) / (1 + resamples), no rank." if sampled else ""))


def format_advantage(statistic: float, k: int, metric: str) -> str:
    """The diagonal against the column means, per language: a perplexity factor or a score difference."""
    if pd.isna(statistic) or not k:
        return "n/a"
    if metric == "perplexity":
        return f"x{math.exp(statistic / k):.3f}"
    return f"{statistic / k * metric_info(metric).scale:+.{metric_info(metric).decimals + 1}f}"


def format_matching_p(row) -> str:
    if pd.isna(row.p):
        return "n/a"
    return f"{int(row.as_good)}/{int(row.assignments)} = {row.p:.3g}" if row.exact else f"{row.p:.3g} (sampled)"


def table_level_display(table: pd.DataFrame) -> pd.DataFrame:
    """The table-level tests as read by people: one row per setting, benchmark and metric."""
    rows = list(table.itertuples(index=False))
    return pd.DataFrame({
        **{k: table[k] for k in TABLE_KEYS},
        "languages": [r.languages.upper().replace(",", " ") or "-" for r in rows],
        "seeds": table["seeds"],
        "diagonal vs column mean (per language)": [format_advantage(r.statistic, r.k, r.metric) for r in rows],
        "rank of diagonal": ["n/a" if pd.isna(r.rank) else f"{int(r.rank)} of {int(r.assignments)}" for r in rows],
        "p": [format_matching_p(r) for r in rows],
        "verdict": ["not tested" if pd.isna(r.p) else "diagonal significantly better" if r.significant
                    else "not significant" for r in rows],
        "left out": table["left_out"],
    })


def read_table_level(significance: str | os.PathLike) -> pd.DataFrame:
    """table_level.csv, written beside ``significance`` (significance.csv) by the same command."""
    path = Path(significance).with_name(f"{TABLE_LEVEL_FILE}.csv")
    if not path.is_file():
        raise LangpruneError(f"{path} (the table-level test, written beside {Path(significance).name}) does not "
                             f"exist: rewrite both with `langprune report significance`")
    table = pd.read_csv(path, dtype={k: str for k in TABLE_KEYS + ["languages", "seeds", "left_out"]},
                        keep_default_na=False, na_values=[""])
    missing = [c for c in TABLE_LEVEL_COLUMNS if c not in table.columns]
    if missing:
        raise LangpruneError(f"{path} lacks column(s) {', '.join(missing)}: rewrite it with "
                             f"`langprune report significance`")
    for flag in ["significant", "exact", "fingerprints_checked"]:
        table[flag] = table[flag].astype(str).str.lower().isin(["true", "1"])
    return table.fillna({"languages": "", "left_out": "", "seeds": ""})


def matching_statement(row) -> str:
    """The table-level test in one short phrase, as a heatmap states it."""
    if pd.isna(row.p):
        return "diagonal not tested (too many cells missing)"
    if row.exact:
        text = f"diagonal vs all {int(row.assignments)} assignments: rank {int(row.rank)}, p = {row.p:.3g}"
    else:
        text = f"diagonal vs {int(row.assignments) - 1} sampled assignments: p = {row.p:.3g}"
    return text + (f" ({int(row.k)} languages: cells missing)" if row.left_out else "")


def table_level_line(tests: pd.DataFrame | None, setting: dict, tables: list[tuple[str, str]]) -> str:
    """The table-level test of each (benchmark, metric) drawn in one heatmap, one line each ('' without tests)."""
    if tests is None:
        return ""
    chosen = tests
    for k, v in setting.items():
        chosen = chosen[chosen[k] == str(v)]
    lines = []
    for benchmark, metric in tables:
        row = chosen[(chosen["benchmark"] == benchmark) & (chosen["metric"] == metric)]
        if len(row):
            name = "" if benchmark == metric else f"{benchmark} {metric}: "
            lines.append(name + matching_statement(next(row.itertuples(index=False))))
    return "\n".join(lines)


# --------------------------------------------------------------------------- writing the outputs

def write_significance(metrics_csv: str | os.PathLike, out_dir: str | os.PathLike,
                       settings: SignificanceSettings) -> list[Path]:
    """Write significance.*, seed_intervals.* and table_level.* ({csv,md,html}) into out_dir.

    Everything is read and checked before any test runs: the tidy table (its cells must be
    numbers, and each column's cells share one evaluation fingerprint) and the per-unit results
    of the metrics JSONs it was gathered from (finite, and pairable unit by unit). Results from
    before fingerprints were kept are paired by position with a warning, and marked unchecked
    in the outputs. Results evaluated before units were kept (or a table without its JSONs'
    paths) give empty per-column tables that say so; the table-level test needs only the table.
    """
    out_dir = Path(out_dir)
    tidy = read_tidy(metrics_csv)
    units = read_units(unit_files(tidy, metrics_csv))
    unchecked_columns = check_pairable(units)  # first: it names the first differing window or item
    unchecked_tables = check_cells(tidy, metrics_csv)
    if unchecked_tables or unchecked_columns:
        print(f"warning: {metrics_csv}: some results carry no fingerprint of their evaluation data (evaluated or "
              f"gathered before fingerprints were kept): {len(unchecked_tables)} table(s) compared and "
              f"{len(unchecked_columns)} column(s) paired by position without checking that every variant saw the "
              f"same windows/items; evaluate and gather again to check them", file=sys.stderr)
    matching = table_level(tidy, settings.alpha, settings.resamples, settings.seed, unchecked_tables)
    table, narrowing = compare_calibrations(units, settings)
    note = settings_note(settings)
    if units.empty:
        note = ("Nothing was tested: none of the evaluations behind this table kept per-unit results; "
                "evaluate again with this version of langprune. " + note)
        print(f"warning: {metrics_csv}: no per-unit results, nothing to test", file=sys.stderr)
    if unchecked_columns:
        note += (f" {len(unchecked_columns)} column(s) come from results without unit fingerprints: their "
                 "windows/items are paired by position, unchecked (units_checked = False).")
    shown = display_table(table)
    title = "Is own-language calibration significantly better than the best other language?"
    narrow_title = "How the interval narrows with more seeds (own vs best other language)"
    narrow_note = (f"Width of the {settings.confidence:.0%} interval of own vs the best other language using the "
                   f"first k paired seeds, k in {list(settings.seed_counts)} (only k up to the seeds run); median "
                   "over the columns of a setting: of the perplexity ratio, or in percentage points for task scores.")
    matching_title = "Is the diagonal better than every other assignment of calibration to evaluation languages?"
    summary = narrowing_summary(narrowing)
    written = [write_text(out_dir / "significance.csv", table.to_csv(index=False)),
               write_text(out_dir / "seed_intervals.csv", narrowing.to_csv(index=False)),
               write_text(out_dir / f"{TABLE_LEVEL_FILE}.csv", matching.to_csv(index=False))]
    for name, heading, text, frame in [("significance", title, note, shown),
                                       ("seed_intervals", narrow_title, narrow_note, summary),
                                       (TABLE_LEVEL_FILE, matching_title, table_level_note(settings, matching),
                                        table_level_display(matching))]:
        body = frame.to_markdown(index=False, disable_numparse=True) if len(frame) else "(no comparisons)"
        written.append(write_text(out_dir / f"{name}.md", f"**{heading}**\n\n{text}\n\n{body}\n"))
        written.append(write_text(out_dir / f"{name}.html", html_page(heading, text,
                                                                       frame.to_html(index=False, border=0))))
    return written
