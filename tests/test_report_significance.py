"""Paired significance of own-language calibration: hand-computed cases, a no-difference case, the outputs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from langprune.cli import main
from langprune.errors import LangpruneError
from langprune.evaluate.results import METRICS_FORMAT
from langprune.evaluate.units import record_fingerprint, window_units
from langprune.io import marker, write_json
from langprune.report.significance import (
    BEST_OTHER,
    SignificanceSettings,
    compare_calibrations,
    holm,
    min_resamples,
    paired_test,
    read_significance,
    read_table_level,
    read_units,
    table_level_line,
)

FAST = SignificanceSettings(resamples=999, alpha=0.05, seed=0, seed_counts=(1, 2))


def test_paired_test_matches_a_hand_computation():
    # Three units, differences 1, -1, 2: mean 2/3. Sign flips give 8 equally likely sums
    # (2, -2, 4, 0, 0, -4, 2, -2); |sum| >= 2 in 6 of them, so the exact two-sided p is 0.75.
    result = paired_test(np.array([1.0, -1.0, 2.0]), np.ones(3), SignificanceSettings(resamples=9999), ratio=False)
    assert result.estimate == pytest.approx(2 / 3)
    assert result.p == pytest.approx(0.75)
    # 1 in 27 bootstrap resamples is (-1, -1, -1) and 1 in 27 is (2, 2, 2): both beyond 2.5 %.
    assert (result.low, result.high) == (pytest.approx(-1.0), pytest.approx(2.0))


def test_holm_matches_a_hand_computation():
    # sorted 0.01, 0.03, 0.04 -> 3 x 0.01, 2 x 0.03, max(0.06, 1 x 0.04); NaN is no test
    assert holm([0.01, 0.04, 0.03, float("nan")]) == pytest.approx([0.03, 0.06, 0.06, float("nan")], nan_ok=True)
    assert list(holm([0.2, 0.9])) == [0.4, 0.9]  # 2 x 0.2, then max(0.4, 1 x 0.9)


def test_identical_variants_give_ratio_one_covering_interval_and_p_one():
    nll = np.array([3.0, 5.0, 4.0, 7.0])
    result = paired_test(nll - nll, np.full(4, 10.0), FAST, ratio=True)
    assert (result.estimate, result.low, result.high, result.p) == (1.0, 1.0, 1.0, 1.0)


def test_no_true_difference_gives_uniform_p_values_and_covering_intervals():
    """Own and other drawn from one distribution (shared document effects, seed noise): p ~ U(0, 1)."""
    rng = np.random.default_rng(2024)
    pvalues, covered = [], 0
    for _ in range(200):
        documents = rng.gamma(4.0, 25.0, size=40)  # per-window NLL level, shared by every variant
        own = documents + rng.normal(0.0, 3.0, size=(2, 40))
        other = documents + rng.normal(0.0, 3.0, size=(2, 40))
        result = paired_test((own - other).mean(axis=0), np.full(40, 64.0), FAST, ratio=True)
        pvalues.append(result.p)
        covered += result.low <= 1.0 <= result.high
    assert stats.kstest(pvalues, "uniform").pvalue > 0.01
    assert 0.90 <= covered / 200 <= 0.99


def window_ids(lang: str, window: int, text: str) -> list[int]:
    """Token ids of a synthetic evaluation window: the same for every variant evaluated on ``text``."""
    return [ord(c) for c in f"{text}/{lang}/{window}"]


def perplexity_doc(tmp_path, calib: str, seed: int, nll: dict[str, list[float]], tokens=(4, 6), text: str = "udhr",
                   fingerprints: bool = True) -> str:
    """A metrics JSON of one pruned variant with per-window units (languages -> window NLLs).

    ``text``: which evaluation text the windows come from (their fingerprints); ``fingerprints``
    False writes units as evaluations did before fingerprints were kept.
    """
    records = []
    for lang, values in nll.items():
        total = math.fsum(values)
        units = window_units(values, list(tokens), [9] * len(tokens),
                             [window_ids(lang, i, text) for i in range(len(values))])
        if not fingerprints:
            del units["fingerprints"]
        records.append({"benchmark": "perplexity", "language": lang, "metric": "perplexity",
                        "value": math.exp(total / sum(tokens)), "n": sum(tokens), "available": True,
                        "fingerprint": record_fingerprint(units), "units": units})
    path = tmp_path / f"{calib}-{seed}.json"
    write_json(path, {**marker(METRICS_FORMAT), "kind": "perplexity", "model": "toy", "checkpoint": None,
                      "checkpoint_hash": None,
                      "tags": {"model": "toy", "method": "wanda", "structure": "unstructured", "sparsity": "0.5",
                               "calib": calib, "seed": str(seed)}, "records": records,
                      "langprune_version": "test"})
    return str(path)


def test_perplexity_ratio_is_the_ratio_of_seed_geometric_means(tmp_path):
    # en: own seeds [10, 20], [12, 22]; de seeds [11, 19], [11, 25]; 10 tokens. Per-window
    # seed-mean differences 0 and -1 -> ratio exp(-1/10) = exp(3.2) / exp(3.3).
    de = {"de": [9.0, 9.0]}  # de is evaluated too, so it counts as a single-language calibration
    files = [perplexity_doc(tmp_path, "en", 0, {"en": [10.0, 20.0], **de}),
             perplexity_doc(tmp_path, "en", 1, {"en": [12.0, 22.0], **de}),
             perplexity_doc(tmp_path, "de", 0, {"en": [11.0, 19.0], **de}),
             perplexity_doc(tmp_path, "de", 1, {"en": [11.0, 25.0], **de})]
    table, narrowing = compare_calibrations(read_units(files), FAST)
    table, narrowing = table[table["language"] == "en"], narrowing[narrowing["language"] == "en"]
    pair = table[table["other"] == "de"].iloc[0]
    assert pair["estimate"] == pytest.approx(math.exp(-0.1)) and pair["own"] == "en" and pair["seeds"] == 2
    assert pair["units"] == 2 and pair["effect"] == "ratio" and pair["own_better"]
    # de is the only other single language, so it is also the best other
    best = table[table["other"] == BEST_OTHER].iloc[0]
    assert best["compared"] == "de" and best["estimate"] == pytest.approx(pair["estimate"])
    assert sorted(narrowing["seeds"]) == [1, 2]
    one_seed = narrowing[narrowing["seeds"] == 1].iloc[0]  # seed 0 only: differences -1, +1
    assert one_seed["estimate"] == pytest.approx(1.0)


def synthetic_grid(tmp_path, languages=("de", "en", "ru"), windows=30, seeds=3, gap=0.08):
    """Every language calibrated on every language; own calibration lowers the NLL of its own
    language by ``gap`` nats per token (en only gets no advantage)."""
    rng = np.random.default_rng(7)
    tokens = [64] * windows
    level = {lang: rng.gamma(50.0, 5.0, size=windows) for lang in languages}
    files = []
    for calib in languages:
        for seed in range(seeds):
            nll = {}
            for lang in languages:
                advantage = gap * 64 if (calib == lang and lang != "en") else 0.0
                nll[lang] = list(level[lang] - advantage + rng.normal(0.0, 1.0, size=windows))
            files.append(perplexity_doc(tmp_path, calib, seed, nll, tokens=tokens))
    return files


def test_real_advantages_are_significant_and_a_null_one_is_not(tmp_path):
    table, _ = compare_calibrations(read_units(synthetic_grid(tmp_path)), FAST)
    best = table[table["other"] == BEST_OTHER].set_index("language")
    assert best.loc["de", "significant"] and best.loc["ru", "significant"]
    assert best.loc["de", "high"] < 1.0 and best.loc["de", "estimate"] == pytest.approx(math.exp(-0.08), abs=0.01)
    assert not best.loc["en", "significant"]
    # Holm: the adjusted p of a table's languages is never below the raw one
    assert (best["p_holm"] >= best["p"]).all()
    assert set(table["resamples"]) == {999} and set(table["alpha"]) == {0.05} and set(table["rng_seed"]) == {0}


def test_cli_writes_tables_and_target_best_counts_significant_wins(tmp_path):
    files = synthetic_grid(tmp_path)
    out = tmp_path / "tables"
    metrics = str(tmp_path / "metrics.csv")
    assert main(["evaluate", "gather", *files, "--out", metrics]) == 0  # the CSV names the JSONs it came from
    assert main(["report", "significance", "--metrics", metrics, "--out-dir", str(out), "--resamples", "999",
                 "--seed-counts", "1,3"]) == 0
    table = read_significance(out / "significance.csv")
    assert (out / "significance.md").read_text().count("own significantly better") == 2
    assert sorted(pd.read_csv(out / "seed_intervals.csv")["seeds"].unique()) == [1, 3]
    # the summary with the tests
    assert main(["report", "summary", "--metrics", str(tmp_path / "metrics.csv"), "--out-dir", str(out),
                 "--significance", str(out / "significance.csv")]) == 0
    columns = pd.read_csv(out / "target_best_columns.csv")
    assert columns.set_index("language")["significant_win"].to_dict() == {"de": True, "en": False, "ru": True}
    assert {"next_best", "estimate", "low", "high", "p_holm"} <= set(columns.columns)
    summary = pd.read_csv(out / "target_best.csv")
    overall = summary[summary["metric"] == "all"].iloc[0]
    assert overall["significant"] == 2 and overall["target_best"] >= 2
    assert "significantly better than the next best" in overall["statement"]
    # the heatmaps star exactly those cells
    from langprune.report.figures import FAMILIES, build_grid
    from langprune.report.significance import significant_cells
    from langprune.report.tables import aggregate_seeds, read_metrics

    setting = {"model": "toy", "method": "wanda", "structure": "unstructured", "sparsity": "0.5"}
    grid = build_grid(aggregate_seeds(read_metrics(tmp_path / "metrics.csv")), setting, FAMILIES[0])
    marks = significant_cells(table, setting, grid.values)
    starred = {(grid.values.index[i], grid.values.columns[j][2]) for i, j in zip(*np.nonzero(marks))}
    assert starred == {("de", "de"), ("ru", "ru")}
    assert main(["report", "figures", "--metrics", str(tmp_path / "metrics.csv"), "--out-dir", str(tmp_path / "fig"),
                 "--significance", str(out / "significance.csv")]) == 0
    # the table-level test: de and ru calibrate their own language best, en is a tie, so the
    # diagonal beats all 5 other assignments of 3 calibrations to 3 languages: p = 1/6
    matching = read_table_level(out / "significance.csv")
    assert len(matching) == 1 and matching.iloc[0]["languages"] == "de,en,ru"
    assert (matching.iloc[0]["rank"], matching.iloc[0]["as_good"], matching.iloc[0]["assignments"]) == (1, 1, 6)
    assert matching.iloc[0]["fingerprints_checked"] and table["units_checked"].all()
    assert "1/6 = 0.167" in (out / "table_level.md").read_text() and (out / "table_level.html").is_file()
    assert table_level_line(matching, setting, [("perplexity", "perplexity")]) == \
        "diagonal vs all 6 assignments: rank 1, p = 0.167"
    # significance results from before the table-level test: the figures say what to rerun
    (out / "table_level.csv").unlink()
    assert main(["report", "figures", "--metrics", metrics, "--out-dir", str(tmp_path / "fig"),
                 "--significance", str(out / "significance.csv")]) == 2


def test_results_without_fingerprints_are_paired_with_a_warning_and_marked_unchecked(tmp_path, capsys):
    """Metrics from before fingerprints were kept: paired by position, said on stderr and in every output."""
    files = [perplexity_doc(tmp_path, calib, seed, {lang: [10.0 + seed + (lang == calib), 20.0, 15.0]
                                                    for lang in ("de", "en")}, tokens=(4, 6, 5), fingerprints=False)
             for calib in ("de", "en") for seed in range(2)]
    metrics = tmp_path / "metrics.csv"
    assert main(["evaluate", "gather", *files, "--out", str(metrics)]) == 0
    assert set(pd.read_csv(metrics)["fingerprint"].isna()) == {True}
    capsys.readouterr()
    assert main(["report", "significance", "--metrics", str(metrics), "--out-dir", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert "carry no fingerprint" in err and "1 table(s)" in err and "2 column(s)" in err
    table = read_significance(tmp_path / "out" / "significance.csv")
    assert len(table) and not table["units_checked"].any()
    assert "paired by position, unchecked" in (tmp_path / "out" / "significance.md").read_text()
    assert not read_table_level(tmp_path / "out" / "significance.csv")["fingerprints_checked"].any()


def test_results_without_units_are_reported_untested_and_bad_input_is_a_clear_error(tmp_path, capsys):
    plain = tmp_path / "plain.json"
    write_json(plain, {"kind": "perplexity", "model": "toy", "checkpoint": None, "tags": {},
                       "records": [{"benchmark": "perplexity", "language": "en", "metric": "perplexity",
                                    "value": 3.0, "n": 10, "available": True}]})
    assert main(["evaluate", "gather", str(plain), "--out", str(tmp_path / "plain.csv")]) == 0
    assert main(["report", "significance", "--metrics", str(tmp_path / "plain.csv"), "--out-dir", str(tmp_path)]) == 0
    assert "no per-unit results" in capsys.readouterr().err
    assert "Nothing was tested" in (tmp_path / "significance.md").read_text()
    assert read_significance(tmp_path / "significance.csv").empty
    assert main(["report", "summary", "--metrics", str(tmp_path / "plain.csv"), "--out-dir", str(tmp_path),
                 "--significance", str(tmp_path / "significance.csv")]) == 0
    assert "significant" not in pd.read_csv(tmp_path / "target_best.csv").columns  # untested, not "0 significant"
    plain.unlink()
    assert main(["report", "significance", "--metrics", str(tmp_path / "plain.csv"), "--out-dir", str(tmp_path)]) == 2
    assert "metrics JSON(s) listed in" in capsys.readouterr().err
    files = [perplexity_doc(tmp_path, "en", 0, {"en": [10.0, 20.0]}),
             perplexity_doc(tmp_path, "de", 0, {"en": [10.0, 20.0, 5.0]}, tokens=(4, 6, 2))]
    with pytest.raises(LangpruneError, match="different perplexity/en windows; first differing window: 2 "):
        compare_calibrations(read_units(files), FAST)
    with pytest.raises(LangpruneError, match="--alpha"):
        SignificanceSettings(alpha=1.5)


def test_resamples_have_a_floor_that_grows_as_alpha_shrinks():
    """Enough resamples that a 1 - alpha percentile interval has 25 beyond each end, and never fewer than 999."""
    assert (min_resamples(0.05), min_resamples(0.1), min_resamples(0.01), min_resamples(0.001)) == (999, 999, 4999,
                                                                                                    49999)
    for alpha in (0.05, 0.01, 0.003):
        needed = min_resamples(alpha)
        assert (needed + 1) * alpha / 2 >= 25 and SignificanceSettings(resamples=needed, alpha=alpha)
        with pytest.raises(LangpruneError, match=f"use at least {needed}"):
            SignificanceSettings(resamples=needed - 1, alpha=alpha)
    with pytest.raises(LangpruneError, match="--seed must be a non-negative integer"):
        SignificanceSettings(seed=-1)


def test_the_config_schema_has_the_same_resamples_floor():
    import yaml

    from langprune.report.common import MIN_RESAMPLES

    schema = yaml.safe_load((Path(__file__).parents[1] / "workflow" / "schemas" / "config.schema.yaml").read_text())
    assert schema["properties"]["significance"]["properties"]["resamples"]["minimum"] == MIN_RESAMPLES
