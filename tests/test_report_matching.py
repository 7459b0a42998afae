"""The table-level matching test: a hand-computed table, null tables, a planted diagonal, missing cells."""

from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from langprune.report.matching import (
    MAX_EXACT_LANGUAGES,
    all_assignments,
    complete_languages,
    matching_test,
    table_level,
)
from langprune.report.tables import normalise_metrics

SETTING = {"model": "toy", "method": "wanda", "structure": "unstructured", "sparsity": "0.5"}
LANGUAGES = ["ar", "de", "en", "es", "ru", "sw", "zh"]

# Rows: calibration a, b, c; columns: evaluation a, b, c (lower is better). The six assignments
# (calibration given to columns a, b, c) sum to: abc 2+3+2 = 7 (the diagonal), acb 2+4+1 = 7,
# bac 4+5+2 = 11, bca 4+4+3 = 11, cab 0+5+1 = 6, cba 0+3+3 = 6. At least as good as 7: four
# of six; strictly better: two (rank 3). Column means 2, 4, 2, so the diagonal's centred sum
# is (2-2) + (3-4) + (2-2) = -1.
HAND = np.array([[2.0, 5.0, 3.0],
                 [4.0, 3.0, 1.0],
                 [0.0, 4.0, 2.0]])


def test_a_three_language_table_matches_a_hand_computation():
    result = matching_test(HAND, higher_is_better=False)
    assert (result.as_good, result.assignments, result.rank, result.exact) == (4, 6, 3, True)
    assert result.p == pytest.approx(4 / 6) and result.statistic == pytest.approx(-1.0)
    # a score table (higher is better) holding the negated values is the same question
    flipped = matching_test(-HAND, higher_is_better=True)
    assert (flipped.as_good, flipped.rank, flipped.statistic) == (4, 3, pytest.approx(1.0))


def test_row_and_column_effects_do_not_change_the_test():
    rng = np.random.default_rng(1)
    table = rng.normal(size=(6, 6))
    shifted = table + rng.normal(0, 50, size=(6, 1)) + rng.normal(0, 50, size=(1, 6))
    a, b = matching_test(table, False), matching_test(shifted, False)
    # centring removes column effects; row effects add sum(r_i - mean r) = 0 to the diagonal
    assert (a.as_good, a.rank) == (b.as_good, b.rank) and a.statistic == pytest.approx(b.statistic)


def test_assignments_are_every_permutation_with_the_diagonal_first():
    perms = all_assignments(4)
    assert perms.shape == (24, 4) and list(perms[0]) == [0, 1, 2, 3]
    assert len({tuple(p) for p in perms}) == 24


def test_a_planted_diagonal_gives_p_one_over_k_factorial():
    rng = np.random.default_rng(3)
    table = rng.normal(size=(7, 7)) + rng.normal(0, 5, size=(7, 1)) - 10 * np.eye(7)  # own calibration far better
    result = matching_test(table, higher_is_better=False)
    assert (result.as_good, result.assignments, result.rank) == (1, 5040, 1)
    assert result.p == pytest.approx(1 / 5040)


def test_null_tables_give_uniform_p_values():
    """Cells independent of the diagonal: the diagonal's rank is uniform over the k! assignments."""
    rng = np.random.default_rng(2024)
    # k = 5: p takes the values m/120, and P(p <= m/120) = m/120 exactly
    p5 = np.array([matching_test(rng.normal(size=(5, 5)), False).p for _ in range(3000)])
    for m in (6, 12, 30, 60, 90):  # 5%, 10%, 25%, 50%, 75%
        share, expected = np.mean(p5 <= m / 120 + 1e-12), m / 120
        assert abs(share - expected) < 4 * math.sqrt(expected * (1 - expected) / len(p5))
    # k = 7, with row and column effects: KS against the uniform distribution
    p7 = [matching_test(rng.normal(size=(7, 7)) + rng.normal(0, 3, (7, 1)) + rng.normal(0, 3, (1, 7)), False).p
          for _ in range(400)]
    assert stats.kstest(p7, "uniform").pvalue > 0.01


def test_five_thousand_assignments_are_fast():
    table = np.random.default_rng(0).normal(size=(7, 7))
    matching_test(table, False)  # the permutations are built once and cached
    start = time.perf_counter()
    for _ in range(100):
        matching_test(table, False)
    assert (time.perf_counter() - start) / 100 < 0.05  # ~0.3 ms each on an idle core


def test_more_languages_than_enumerated_are_sampled():
    k = MAX_EXACT_LANGUAGES + 1
    planted = np.random.default_rng(5).normal(size=(k, k)) - 10 * np.eye(k)
    result = matching_test(planted, False, resamples=999, seed=0)
    assert not result.exact and math.isnan(result.rank) and result.p == pytest.approx(1 / 1000)
    null = np.random.default_rng(6).normal(size=(k, k))
    a, b = matching_test(null, False, resamples=999, seed=1), matching_test(null, False, resamples=999, seed=1)
    assert a.p == b.p and 0 < a.p <= 1


def tidy(values: dict[tuple[str, str], list[float]], metric: str = "perplexity",
         benchmark: str = "perplexity") -> pd.DataFrame:
    """Tidy rows of one setting: (calibration, evaluation language) -> per-seed values (NaN: not available)."""
    rows = [{**SETTING, "calib": calib, "seed": str(seed), "benchmark": benchmark, "language": lang,
             "metric": metric, "value": value, "n": 10, "available": not math.isnan(value)}
            for (calib, lang), seeds in values.items() for seed, value in enumerate(seeds)]
    return normalise_metrics(pd.DataFrame(rows))


def square(table: np.ndarray, languages: list[str], seeds=1, transform=math.exp) -> dict:
    return {(calib, lang): [transform(table[i, j])] * seeds
            for i, calib in enumerate(languages) for j, lang in enumerate(languages)}


def test_table_level_from_tidy_metrics_uses_seed_means_of_log_perplexity():
    # perplexities exp(x) per seed; two seeds of the diagonal cell of 'a' differ, their log mean is HAND's 2
    cells = square(HAND, ["de", "en", "ru"], seeds=2)
    cells[("de", "de")] = [math.exp(1.5), math.exp(2.5)]
    row = table_level(tidy(cells), alpha=0.05).iloc[0]
    assert (row["k"], row["languages"], row["as_good"], row["assignments"], row["rank"]) == (3, "de,en,ru", 4, 6, 3)
    assert row["p"] == pytest.approx(4 / 6) and row["statistic"] == pytest.approx(-1.0)
    assert row["scale"] == "log perplexity" and row["better"] == "lower" and row["seeds"] == "2"
    assert not row["significant"] and row["left_out"] == "" and row["fingerprints_checked"]


def test_a_missing_cell_is_stated_and_its_languages_left_out():
    planted = np.random.default_rng(8).normal(size=(4, 4)) - 5 * np.eye(4)
    languages = ["ar", "de", "en", "ru"]
    cells = square(planted, languages)
    cells[("de", "ar")] = [math.nan]  # calibration de was never evaluated on ar
    row = table_level(tidy(cells), alpha=0.05).iloc[0]
    # either ar or de must go; of the two complete sets of three, the one with the higher p is reported
    either = [matching_test(planted[np.ix_(keep, keep)], False).p for keep in ([0, 2, 3], [1, 2, 3])]
    assert row["k"] == 3 and row["assignments"] == 6 and row["p"] == max(either)
    assert row["languages"] == ("de,en,ru" if either[1] > either[0] else "ar,en,ru")  # a tie: the first
    assert "DE on AR" in row["left_out"] and "the one with the highest p" in row["left_out"]
    # a missing diagonal cell leaves out its language only; so does a calibration never evaluated on this
    # benchmark (but pruned in this setting: it has a run on another benchmark)
    cells = square(planted, languages)
    cells[("en", "en")] = [math.nan]
    del cells[("ru", "ar")], cells[("ru", "de")], cells[("ru", "en")], cells[("ru", "ru")]
    other = tidy({("ru", "ru"): [0.5]}, metric="acc", benchmark="udhr_mc")
    tables = table_level(pd.concat([tidy(cells), other], ignore_index=True), alpha=0.05)
    kept = tables[tables["benchmark"] == "perplexity"].iloc[0]
    assert kept["languages"] == "ar,de" and "left out: EN, RU" in kept["left_out"]
    assert "EN on EN" in kept["left_out"] and "RU on AR" in kept["left_out"]
    # nothing left to test: a row that says so, not a crash
    cells = square(planted[:2, :2], ["ar", "de"])
    cells[("ar", "de")] = [math.nan]
    untested = table_level(tidy(cells), alpha=0.05).iloc[0]
    assert math.isnan(untested["p"]) and "not tested" in untested["left_out"] and untested["k"] == 0


def test_complete_languages_are_the_largest_sets_without_a_missing_cell():
    present = pd.DataFrame(True, index=list("abcd"), columns=list("abcd"))
    present.loc["b", "d"] = False
    assert complete_languages(present) == ([list("abc"), list("acd")], [("b", "d")])
    present.loc["c", "c"] = False
    assert complete_languages(present)[0] == [list("ab"), list("ad")]


def test_scores_are_oriented_and_a_language_with_two_columns_counts_once():
    # accuracy: own calibration best everywhere; ARC's en has two columns (en-e, en-c)
    languages = ["de", "en", "ru"]
    acc = 0.5 + 0.1 * np.eye(3)
    cells = {(calib, lang): [acc[i, j]] for i, calib in enumerate(languages) for j, lang in enumerate(languages)
             if lang != "en"}
    for i, calib in enumerate(languages):
        cells[(calib, "en-e")] = [acc[i, 1]]
        cells[(calib, "en-c")] = [acc[i, 1] - 0.2]
    row = table_level(tidy(cells, metric="acc", benchmark="arc"), alpha=0.05).iloc[0]
    assert (row["better"], row["rank"], row["as_good"], row["assignments"]) == ("higher", 1, 1, 6)
    assert row["statistic"] == pytest.approx(3 * (0.1 - 0.1 / 3))  # each column: own 0.6 - mean 0.5333


def test_tables_without_two_calibrated_evaluation_languages_are_not_listed():
    cells = {("de", "de"): [2.0], ("de", "en"): [3.0], ("en+de", "de"): [2.5], ("en+de", "en"): [2.5]}
    assert table_level(tidy(cells), alpha=0.05).empty


def test_of_tied_complete_sets_the_least_favourable_is_reported():
    # missing cell: calibration de on ru. Without ru, the diagonal wins (p = 1/6); without de, ru's own
    # calibration is the worst on ru, so that set's p is higher, and it is the one reported
    languages = ["ar", "de", "en", "ru"]
    table = np.zeros((4, 4)) - 5 * np.eye(4)
    table[3, 3] = 10.0
    cells = square(table, languages)
    cells[("de", "ru")] = [math.nan]
    row = table_level(tidy(cells), alpha=0.05).iloc[0]
    assert row["languages"] == "ar,en,ru" and row["p"] > 1 / 6 and "left out: DE (of the 2 largest" in row["left_out"]
