"""Report tables, heatmaps and the target-best count from a tidy metrics CSV with known values."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from langprune.cli import main
from langprune.report import figures, paper, tables

# Seed means of the pruned runs (every cell gets seeds mean-1 and mean+1, so std = sqrt(2)).
# Single-language best per column: DE <- de (target), EN <- sw (not target), SW <- sw (target).
PERPLEXITY = {
    "de": {"de": 11.0, "en": 25.0, "sw": 40.0},
    "en": {"de": 14.0, "en": 24.0, "sw": 41.0},
    "sw": {"de": 13.0, "en": 23.0, "sw": 33.0},
    "en+de": {"de": 10.5, "en": 22.0, "sw": 39.0},
}
# Accuracy: DE is a tie between de and sw calibration (target counted as best), EN <- en; SW unavailable.
ACCURACY = {"de": {"de": 0.45, "en": 0.50}, "en": {"de": 0.40, "en": 0.55}, "sw": {"de": 0.45, "en": 0.52},
            "en+de": {"de": 0.44, "en": 0.51}}
DENSE_PPL = {"de": 10.0, "en": 20.0, "sw": 30.0}
DENSE_ACC = {"de": 0.5, "en": 0.6}
SQRT2 = math.sqrt(2.0)


def record(model, method, calib, seed, benchmark, language, metric, value, structure="unstructured", sparsity="0.5"):
    available = value is not None
    return dict(model=model, method=method, structure=structure, sparsity=sparsity, calib=calib, seed=seed,
                benchmark=benchmark, language=language, metric=metric, value="" if value is None else value,
                n=100, available=available)


def tidy_records(model: str = "toy") -> list[dict]:
    rows = []
    for lang, ppl in DENSE_PPL.items():
        rows.append(record(model, "dense", "-", "-", "perplexity", lang, "perplexity", ppl, "-", "-"))
        rows.append(record(model, "dense", "-", "-", "perplexity", lang, "bits_per_byte", ppl / 10, "-", "-"))
        rows.append(record(model, "dense", "-", "-", "udhr_mc", lang, "acc", DENSE_ACC.get(lang), "-", "-"))
    for calib in PERPLEXITY:
        for seed, sign in [("1", -1.0), ("2", 1.0)]:
            for lang in DENSE_PPL:
                ppl = PERPLEXITY[calib][lang] + sign
                rows.append(record(model, "wanda", calib, seed, "perplexity", lang, "perplexity", ppl))
                rows.append(record(model, "wanda", calib, seed, "perplexity", lang, "bits_per_byte", ppl / 10))
                acc = ACCURACY[calib].get(lang)
                rows.append(record(model, "wanda", calib, seed, "udhr_mc", lang, "acc",
                                   None if acc is None else acc + sign * 0.01))
    for lang in DENSE_PPL:  # magnitude reads no calibration data
        rows.append(record(model, "magnitude", "none", "0", "perplexity", lang, "perplexity", 5 * DENSE_PPL[lang]))
    return rows


def write_tidy_metrics(path, model: str = "toy"):
    """A tidy metrics CSV as `langprune evaluate gather` writes it (shared with the browser test)."""
    pd.DataFrame(tidy_records(model)).to_csv(path, index=False)
    return path


@pytest.fixture
def metrics_csv(tmp_path):
    return write_tidy_metrics(tmp_path / "metrics.csv")


@pytest.fixture
def agg(metrics_csv):
    return tables.aggregate_seeds(tables.read_metrics(metrics_csv))


def cell(agg, **labels):
    match = np.logical_and.reduce([agg[k] == v for k, v in labels.items()])
    (row,) = agg[match].to_dict("records")
    return row


def test_seed_mean_and_sample_std(agg):
    row = cell(agg, method="wanda", calib="de", language="de", metric="perplexity")
    assert row["mean"] == pytest.approx(11.0)
    assert row["std"] == pytest.approx(SQRT2)
    assert row["n_seeds"] == 2
    dense = cell(agg, method="dense", language="en", metric="perplexity")
    assert dense["mean"] == 20.0 and np.isnan(dense["std"])


def test_unavailable_runs_are_kept_as_missing(agg):
    row = cell(agg, method="wanda", calib="de", language="sw", metric="acc")
    assert row["n_seeds"] == 0 and row["runs"] == 2 and np.isnan(row["mean"])


def test_single_and_mixed_calibrations_are_told_apart(agg):
    assert tables.single_calibrations(agg) == {"de", "en", "sw"}


def test_language_codes_are_one_spelling(metrics_csv):
    shouting = pd.read_csv(metrics_csv, dtype=str, keep_default_na=False)
    shouting[["calib", "language"]] = shouting[["calib", "language"]].apply(lambda col: col.str.upper())
    agg = tables.aggregate_seeds(tables.normalise_metrics(shouting))
    assert tables.single_calibrations(agg) == {"de", "en", "sw"}


def table_by_name(agg, name):
    (spec,) = [s for s in tables.TABLES if s.name == name]
    return tables.flat_columns(tables.layout_table(agg, spec), spec.per_benchmark)


def test_table1_layout_dense_on_top_then_reference_then_languages(agg):
    t1 = table_by_name(agg, "table1_perplexity")
    assert list(t1["calib"]) == ["NONE", "NONE", "DE", "EN", "SW"]
    assert list(t1["method"]) == ["dense", "magnitude", "wanda", "wanda", "wanda"]
    assert list(t1.columns[-3:]) == ["DE", "EN", "SW"]
    assert t1.iloc[0]["EN"] == "20.00"
    assert t1.iloc[2]["DE"] == "11.00 ± 1.41"
    assert t1.iloc[4]["SW"] == "33.00 ± 1.41"


def test_table4_holds_the_mixes(agg):
    t4 = table_by_name(agg, "table4_mixes_perplexity")
    assert list(t4["calib"]) == ["NONE", "NONE", "EN+DE"]
    assert t4.iloc[2]["DE"] == "10.50 ± 1.41"


def test_task_table_shows_percent_and_keeps_unavailable_columns(agg):
    t2 = table_by_name(agg, "table2_tasks")
    assert "udhr_mc [acc] SW" in t2.columns
    assert set(t2["udhr_mc [acc] SW"]) == {tables.NOT_AVAILABLE}
    wanda_en = t2[(t2["method"] == "wanda") & (t2["calib"] == "EN")].iloc[0]
    assert wanda_en["udhr_mc [acc] EN"] == "55.0 ± 1.4"
    assert t2.iloc[0]["udhr_mc [acc] DE"] == "50.0"


def test_write_tables_writes_every_format(metrics_csv, tmp_path):
    out = tmp_path / "tables"
    written = tables.write_tables(metrics_csv, out)
    for name in tables.TABLE_NAMES:
        for ext in tables.TABLE_FORMATS:
            assert out / f"{name}.{ext}" in written
    latex = (out / "table2_tasks.tex").read_text()
    assert "\\begin{tabular}" in latex and "udhr\\_mc" in latex and "n/a" in latex
    markdown = (out / "table1_perplexity.md").read_text()
    assert "| 11.00 ± 1.41" in markdown
    assert "| 20.00 " in markdown  # printed as formatted, not re-parsed as the number 20
    assert "<table" in (out / "table1_bits_per_byte.html").read_text()
    assert (out / "paper_comparison.csv").exists()


def test_target_best_count_k_of_n(agg):
    columns = figures.target_best_columns(agg)
    summary = figures.target_best_summary(columns).set_index(["method", "metric"])
    assert summary.loc[("wanda", "perplexity"), "statement"] == "2 of 3 columns"
    assert summary.loc[("wanda", "acc"), "statement"] == "2 of 2 columns"  # tie de/sw counts for de
    assert summary.loc[("all", "all"), "statement"] == "4 of 5 columns"
    by_column = columns.set_index(["metric", "language"])
    assert by_column.loc[("perplexity", "en"), "best_single"] == "sw"
    assert not by_column.loc[("perplexity", "en"), "target_is_best"]
    assert by_column.loc[("perplexity", "de"), "best_overall"] == "en+de"
    assert by_column.loc[("acc", "de"), "best_single"] == "de / sw"
    # own minus best other single calibration, negative when the own language wins
    assert by_column.loc[("acc", "de"), "gap_to_best_other"] == 0.0  # tied with sw
    assert by_column.loc[("perplexity", "en"), "gap_to_best_other"] > 0  # sw beat en on en
    per_setting = columns[columns["method"] == "wanda"].groupby("metric")["gap_to_best_other"].mean()
    assert summary.loc[("wanda", "perplexity"), "mean_gap_to_best_other"] == pytest.approx(per_setting["perplexity"])


def test_columns_where_every_calibration_ties_are_not_counted(metrics_csv):
    tied = pd.read_csv(metrics_csv, dtype=str, keep_default_na=False)
    tied.loc[(tied["metric"] == "acc") & (tied["language"] == "en") & (tied["value"] != ""), "value"] = "0.0"
    columns = figures.target_best_columns(tables.aggregate_seeds(tables.normalise_metrics(tied)))
    assert set(columns[columns["metric"] == "acc"]["language"]) == {"de"}  # the de/sw tie still counts


def test_best_mask_marks_ties_and_respects_direction():
    values = pd.DataFrame([[1.0, 5.0], [1.0, np.nan], [3.0, 7.0]])
    assert figures.best_mask(values, np.array([True, True])).tolist() == [[True, True], [True, False],
                                                                          [False, False]]
    assert figures.best_mask(values, np.array([False, False])).tolist() == [[False, False], [False, False],
                                                                            [True, True]]


def test_heatmap_grid_relative_change_and_marks(agg):
    setting = dict(model="toy", method="wanda", structure="unstructured", sparsity="0.5")
    grid = figures.build_grid(agg, setting, figures.FAMILIES[0])
    assert list(grid.values.index) == ["de", "en", "sw", "en+de"]
    relative = figures.relative_change(grid)
    assert relative.loc["de", ("perplexity", "perplexity", "de")] == pytest.approx(10.0)
    fig = figures.draw_heatmap(grid, relative=False, title="t")
    boxes = figures.best_mask(grid.values, grid.lower_is_better).sum()
    targets = figures.target_mask(grid.values).sum()
    assert (boxes, targets) == (3, 3)
    assert len(fig.axes[0].patches) == boxes + targets


def png_pixels(path):
    import matplotlib.image

    return matplotlib.image.imread(path)


def test_write_figures_draws_every_setting(metrics_csv, tmp_path):
    out = tmp_path / "heatmaps"
    written = figures.write_figures(metrics_csv, out)
    names = {p.relative_to(out).as_posix() for p in written}
    assert {"wanda_unstructured_0.5/perplexity_abs.png", "wanda_unstructured_0.5/perplexity_rel.png",
            "wanda_unstructured_0.5/tasks_abs.png", "wanda_unstructured_0.5/tasks_rel.png",
            "magnitude_unstructured_0.5/perplexity_abs.png"} <= names
    assert "magnitude_unstructured_0.5/tasks_abs.png" not in names  # magnitude has no task results
    pixels = png_pixels(out / "wanda_unstructured_0.5/perplexity_abs.png")
    assert pixels.std() > 0.05


def test_write_summary_files(metrics_csv, tmp_path):
    figures.write_summary(metrics_csv, tmp_path)
    assert "4 of 5 columns" in (tmp_path / "target_best.md").read_text()
    assert len(pd.read_csv(tmp_path / "target_best_columns.csv")) == 5


def reference_rows() -> pd.DataFrame:
    """A few of the paper's Table 1 cells, keyed like paper.paper_reference()."""
    rows = [("dense", "-", "de", 9.6), ("dense", "-", "en", 9.4), ("wanda", "de", "de", 15.0),
            ("wanda", "de", "en", 14.5), ("wanda", "en", "de", 17.6), ("wanda", "en", "en", 14.5)]
    return pd.DataFrame([dict(paper_model="Llama-3-8B-Instruct", method=m, calib=c, benchmark="perplexity",
                              language=lang, metric="perplexity", paper=v) for m, c, lang, v in rows])


def test_paper_comparison_matches_model_names_and_units(tmp_path):
    ours = pd.read_csv(write_tidy_metrics(tmp_path / "m.csv", model="meta-llama/Meta-Llama-3-8B-Instruct"),
                       dtype=str, keep_default_na=False)
    agg = tables.aggregate_seeds(tables.normalise_metrics(ours))
    comparison = paper.compare_with_paper(agg, reference_rows())
    assert len(comparison) == 6  # dense DE/EN + wanda {de,en} x {DE,EN}; SW and en+de have no paper value
    row = comparison[(comparison["calib"] == "de") & (comparison["language"] == "de")].iloc[0]
    assert (row["ours"], row["paper"], row["difference"]) == pytest.approx((11.0, 15.0, -4.0))
    summary = paper.agreement_summary(comparison)
    assert set(summary["cells"]) == {2, 4}


def test_paper_reference_is_in_our_units():
    reference = paper.paper_reference()
    arc = reference[(reference["paper_model"] == "Llama-3-8B-Instruct") & (reference["method"] == "dense")
                    & (reference["benchmark"] == "arc") & (reference["language"] == "en-e")]
    assert arc["paper"].tolist() == pytest.approx([0.759])  # 75.9 % in the paper, a fraction like lm-eval's


def test_paper_comparison_explains_an_empty_match(metrics_csv, tmp_path):
    tables.write_tables(metrics_csv, tmp_path / "out", reference=reference_rows())
    assert "nothing to compare" in (tmp_path / "out" / "paper_comparison.md").read_text()


def test_cli_writes_tables_and_reports_bad_input(metrics_csv, tmp_path, capsys):
    assert main(["report", "summary", "--metrics", str(metrics_csv), "--out-dir", str(tmp_path / "s")]) == 0
    assert (tmp_path / "s" / "target_best.csv").exists()
    broken = tmp_path / "broken.csv"
    pd.read_csv(metrics_csv).drop(columns=["available"]).to_csv(broken, index=False)
    assert main(["report", "tables", "--metrics", str(broken), "--out-dir", str(tmp_path / "t")]) == 2
    assert "available" in capsys.readouterr().err
    assert main(["report", "figures", "--metrics", str(tmp_path / "absent.csv"), "--out-dir", str(tmp_path)]) == 2


def test_tables_without_task_results_are_written_empty(tmp_path):
    only_perplexity = [r for r in tidy_records() if r["benchmark"] == "perplexity"]
    path = tmp_path / "ppl.csv"
    pd.DataFrame(only_perplexity).to_csv(path, index=False)
    tables.write_tables(path, tmp_path / "out")
    assert "(no rows)" in (tmp_path / "out" / "table2_tasks.md").read_text()
    assert "\\begin{tabular}" in (tmp_path / "out" / "table4_mixes_tasks.tex").read_text()
    written = figures.write_figures(path, tmp_path / "figs")
    assert not [p for p in written if p.name.startswith("tasks")]


def test_count_reproduces_the_papers_statements_from_its_own_tables():
    """On the paper's numbers the count gives its claims: SparseGPT target-best in 18 of 25 task
    columns (Aya-23-8B, the model with a complete table) and Llama-3 Wanda perplexity best on the
    target except for Chinese (6 of 7)."""
    reference = paper.paper_reference().rename(columns={"paper_model": "model", "paper": "mean"})
    pruned = reference["method"] != "dense"
    agg = reference.assign(structure=np.where(pruned, "unstructured", "-"), sparsity=np.where(pruned, "0.5", "-"),
                           std=np.nan, n_seeds=1, runs=1)
    columns = figures.target_best_columns(agg)
    summary = figures.target_best_summary(columns).set_index(["model", "method", "metric"])
    assert summary.loc[("Aya-23-8B", "sparsegpt", "acc"), "statement"] == "18 of 25 columns"
    assert summary.loc[("Llama-3-8B-Instruct", "wanda", "perplexity"), "statement"] == "6 of 7 columns"
    zh = columns[(columns["model"] == "Llama-3-8B-Instruct") & (columns["method"] == "wanda")
                 & (columns["metric"] == "perplexity") & (columns["language"] == "zh")].iloc[0]
    assert zh["best_single"] == "ru"
