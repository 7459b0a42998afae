"""Is the diagonal special? The exact matching test of a calibration x evaluation-language table.

The claim "calibrate in the language you evaluate" is about a whole table, not one column:
the diagonal (calibration language = evaluation language) should beat the other ways of
assigning the k single-language calibration sets to the k evaluation languages. The
matching (quadratic-assignment) permutation test makes that exact: the statistic of an
assignment is the sum over the evaluation languages of the assigned cell, each column
centred on its mean over the k calibrations; the p-value is the share of all k!
assignments whose statistic is at least as good as the diagonal's (the diagonal included,
so the smallest p is 1/k!: 1/5040 for seven languages).

Every assignment uses each calibration once and each evaluation language once, so a
calibration set that is good everywhere (a row effect) and a language that is hard for
all (a column effect) add the same to every assignment: the test sees only the
interaction the claim is about. Columns are centred only so the reported statistic reads
as "the diagonal against the column means" (0 = no better than an average calibration).

Cells are seed means of log perplexity (the log of the seeds' geometric-mean perplexity,
as in the paired per-column tests) or of the score itself (bits per byte is already a
log-scale quantity), oriented so that "better" is lower perplexity and higher scores. A
language evaluated in several columns of one benchmark (ARC's EN-E and EN-C) counts once,
as the mean of its centred columns. Up to ``MAX_EXACT_LANGUAGES`` languages every
assignment is enumerated (vectorised: 5,040 assignments take well under a millisecond);
above that ``resamples`` random assignments are drawn and p = (1 + as good) / (1 + resamples).

A cell without a value (no seed evaluated it) is never imputed: the test runs over the
largest set of languages whose cells are all present (a missing cell rules out having both
its languages; of several such sets, the one with the highest p, so the choice cannot make
the diagonal look better), and the row states the missing cells and the languages left out.
With fewer than two languages left there is no test, and the row says so.
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..variant import SETTING_KEYS, is_uncalibrated
from .common import metric_info
from .tables import is_dense, single_calibrations, target_language

MAX_EXACT_LANGUAGES = 9  # 9! = 362,880 assignments (26 MB of indices); beyond that they are sampled
TIE_TOLERANCE = 1e-9  # relative: statistics this close count as equal (sums in a different order)
TABLE_KEYS = SETTING_KEYS + ["benchmark", "metric"]
TABLE_LEVEL_COLUMNS = TABLE_KEYS + ["scale", "better", "k", "languages", "seeds", "statistic", "rank", "as_good",
                                    "assignments", "exact", "p", "significant", "left_out", "fingerprints_checked",
                                    "alpha"]


@dataclass(frozen=True)
class MatchingResult:
    """The diagonal among the assignments of calibration sets to evaluation languages."""

    statistic: float  # the diagonal's sum of column-centred values, on the table's scale
    rank: float  # 1 + assignments strictly better than the diagonal (NaN when sampled)
    as_good: int  # assignments at least as good as the diagonal, the diagonal included
    assignments: int  # k! (exact), or 1 + resamples (sampled)
    exact: bool

    @property
    def p(self) -> float:
        return self.as_good / self.assignments


@functools.lru_cache(maxsize=4)
def all_assignments(k: int) -> np.ndarray:
    """Every permutation of range(k) as rows of a (k!, k) array, the identity (the diagonal) first."""
    return np.fromiter(itertools.chain.from_iterable(itertools.permutations(range(k))), dtype=np.intp,
                       count=math.factorial(k) * k).reshape(-1, k)


def assignment_sums(goodness: np.ndarray, assignments: np.ndarray) -> np.ndarray:
    """Statistic of each assignment: ``sum_j goodness[a[j], j]`` (row a[j] is the calibration given column j)."""
    return goodness[assignments, np.arange(goodness.shape[1])].sum(axis=1)


def matching_test(table: np.ndarray, higher_is_better: bool, resamples: int = 9999, seed: int = 0) -> MatchingResult:
    """The matching test of a complete k x k table (row i and column i are the same language).

    ``higher_is_better``: the orientation of the values (False for log perplexity).
    ``resamples`` and ``seed`` are used only above ``MAX_EXACT_LANGUAGES`` languages.
    """
    values = np.asarray(table, dtype=float)
    k = values.shape[0]
    if values.shape != (k, k) or k < 2 or not np.isfinite(values).all():
        raise ValueError(f"the matching test needs a complete square table of at least 2 languages, not {values.shape}")
    centred = values - values.mean(axis=0)
    goodness = centred if higher_is_better else -centred
    observed = float(np.trace(goodness))
    tolerance = TIE_TOLERANCE * max(1.0, float(np.abs(goodness).max()) * k)
    if k <= MAX_EXACT_LANGUAGES:
        sums = assignment_sums(goodness, all_assignments(k))
        better = int(np.count_nonzero(sums > observed + tolerance))
        as_good = int(np.count_nonzero(sums >= observed - tolerance))
        return MatchingResult(float(np.trace(centred)), better + 1, as_good, len(sums), exact=True)
    rng = np.random.default_rng(seed)
    drawn = rng.permuted(np.tile(np.arange(k), (resamples, 1)), axis=1)
    as_good = 1 + int(np.count_nonzero(assignment_sums(goodness, drawn) >= observed - tolerance))
    return MatchingResult(float(np.trace(centred)), math.nan, as_good, resamples + 1, exact=False)


# --------------------------------------------------------------------------- tables from the tidy metrics

def analysis_scale(metric: str) -> str:
    """What the cells hold: log perplexity, or the metric itself."""
    return "log perplexity" if metric == "perplexity" else metric


def cell_values(tidy: pd.DataFrame) -> pd.Series:
    """Each run's value on the analysis scale (log of a perplexity), NaN where the run produced none."""
    value = tidy["value"].where(tidy["available"])
    return np.log(value).where(tidy["metric"] == "perplexity", value)


def complete_languages(present: pd.DataFrame) -> tuple[list[list[str]], list[tuple[str, str]]]:
    """``(candidates, missing)``: the largest sets of languages whose cells are all present, and the missing cells.

    ``present``: True where a cell has a value; rows = calibration languages, columns = the
    same evaluation languages in the same order. A missing cell (i, j) rules out sets holding
    both i and j; every largest set that remains is a candidate (several when it is a tie).
    """
    languages = list(present.index)
    missing = [(calib, lang) for calib in languages for lang in languages if not present.at[calib, lang]]
    for size in range(len(languages), 1, -1):
        candidates = [list(chosen) for chosen in itertools.combinations(languages, size)
                      if not any(calib in chosen and lang in chosen for calib, lang in missing)]
        if candidates:
            return candidates, missing
    return [], missing


def _left_out_text(missing: list[tuple[str, str]], kept: list[str], languages: list[str], choices: int) -> str:
    if not missing:
        return ""
    shown = ", ".join(f"{calib.upper()} on {lang.upper()}" for calib, lang in missing[:8])
    more = f" and {len(missing) - 8} more" if len(missing) > 8 else ""
    left = ", ".join(lang.upper() for lang in languages if lang not in kept)
    tie = (f" (of the {choices} largest complete sets of languages, the one with the highest p)"
           if choices > 1 else "")
    return f"missing cell(s) (calibration on evaluation language): {shown}{more}; left out: {left}{tie}"


def _seed_range(counts: pd.Series) -> str:
    low, high = int(counts.min()), int(counts.max())
    return str(low) if low == high else f"{low}-{high}"


def language_table(runs: pd.DataFrame, languages: list[str]) -> tuple[pd.DataFrame, pd.Series]:
    """Seed means per (calibration, evaluation column), and the seeds behind each cell.

    Columns are the benchmark's language labels; a language with several labels keeps them all.
    """
    usable = runs.assign(cell=cell_values(runs))
    grouped = usable.groupby(["calib", "language"])["cell"]
    means = grouped.mean().unstack("language")
    seeds = grouped.count()
    labels = sorted({lang for lang in runs["language"] if target_language(lang) in languages})
    return means.reindex(index=languages, columns=labels), seeds


def table_matching(runs: pd.DataFrame, languages: list[str], higher_is_better: bool, resamples: int,
               seed: int) -> tuple[MatchingResult | None, list[str], str, str]:
    """``(result, kept languages, left-out statement, seeds)`` of one setting's benchmark x metric table."""
    means, seeds = language_table(runs, languages)
    by_language = {lang: [c for c in means.columns if target_language(c) == lang] for lang in languages}
    # a language's cell is missing when any of its columns is (ARC's EN-E and EN-C both count)
    present = pd.DataFrame({lang: means[cols].notna().all(axis=1) for lang, cols in by_language.items()},
                           index=languages)
    candidates, missing = complete_languages(present)
    if not candidates:
        return None, [], _left_out_text(missing, [], languages, 0) + "; fewer than 2 languages left: not tested", ""
    tested = []
    for kept in candidates:
        columns = [c for lang in kept for c in by_language[lang]]
        centred = means.loc[kept, columns] - means.loc[kept, columns].mean(axis=0)
        square = np.column_stack([centred[by_language[lang]].mean(axis=1).to_numpy() for lang in kept])
        tested.append((matching_test(square, higher_is_better, resamples, seed), kept, columns))
    result, kept, columns = max(tested, key=lambda t: t[0].p)  # ties: the first candidate
    used = seeds[seeds.index.get_level_values("calib").isin(kept)
                 & seeds.index.get_level_values("language").isin(columns)]
    return result, kept, _left_out_text(missing, kept, languages, len(candidates)), _seed_range(used)


def table_level(tidy: pd.DataFrame, alpha: float, resamples: int = 9999, seed: int = 0,
                unchecked: set[tuple] = frozenset()) -> pd.DataFrame:
    """One matching test per model x pruning setting x benchmark x metric (``TABLE_LEVEL_COLUMNS``).

    ``tidy``: the normalised tidy metrics (one row per run). Only tables with at least two
    languages that are both a single-language calibration set and evaluated get a row.
    ``unchecked``: table keys whose cells carry no evaluation fingerprints to compare.
    """
    calibrated = tidy[~is_dense(tidy) & ~tidy["calib"].map(is_uncalibrated).astype(bool)]
    singles = single_calibrations(tidy)
    calibrations = calibrated.groupby(SETTING_KEYS)["calib"].agg(set)
    rows = []
    for key, runs in calibrated.groupby(TABLE_KEYS, sort=True):
        evaluated = {target_language(lang) for lang in runs["language"]}
        languages = sorted(evaluated & calibrations[key[:len(SETTING_KEYS)]] & singles)
        if len(languages) < 2:
            continue
        metric = key[-1]
        higher = not metric_info(metric).lower_is_better
        result, kept, left_out, seeds = table_matching(runs[runs["calib"].isin(languages)], languages, higher,
                                                       resamples, seed)
        rows.append({**dict(zip(TABLE_KEYS, key)), "scale": analysis_scale(metric),
                     "better": "higher" if higher else "lower", "k": len(kept) if result else 0,
                     "languages": ",".join(kept) if result else "", "seeds": seeds,
                     "statistic": result.statistic if result else math.nan,
                     "rank": result.rank if result else math.nan, "as_good": result.as_good if result else math.nan,
                     "assignments": result.assignments if result else math.nan,
                     "exact": result.exact if result else math.nan, "p": result.p if result else math.nan,
                     "significant": bool(result and result.p < alpha), "left_out": left_out,
                     "fingerprints_checked": key not in unchecked, "alpha": alpha})
    return pd.DataFrame(rows, columns=TABLE_LEVEL_COLUMNS)
