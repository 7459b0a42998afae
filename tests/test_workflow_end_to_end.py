"""End-to-end: the real Snakefile on the reduced toy (.test/config/config.yaml: two languages, a
mix, one seed, a tiny toy model trained a few dozen steps), from the UDHR archive to tables,
heatmaps and the analyses. The run is the session's reference run (conftest.py), which the
quantized, rerun, cache and browser tests share."""

from __future__ import annotations

import math

import pandas as pd

from helpers import workflow as wf

CONFIG = wf.reduced_default()
LANGS = CONFIG["languages"]
SEEDS = [str(seed) for seed in CONFIG["calibration"]["seeds"]]
SETS = list(CONFIG["calibration"]["sets"])
REPORT_RULES = ("report_tables", "report_significance", "report_summary", "report_figures")


def test_the_reference_config_covers_every_kind_of_variant():
    """What the checks below rely on: single-language sets and a mix, a method with and one without
    calibration, a quantization method, perplexity and a multiple-choice benchmark. (One seed: the
    rerun tests add a second to it.)"""
    assert CONFIG["pruning"]["methods"] == ["magnitude", "wanda"]
    assert list(CONFIG["quantization"]["methods"]) == ["gptq"]
    assert [s for s in SETS if len(CONFIG["calibration"]["sets"][s]) > 1]
    assert {s for s in SETS if CONFIG["calibration"]["sets"][s] == [s]} == set(LANGS)
    assert list(CONFIG["evaluation"]["tasks"]) == ["udhr_mc"]


def metrics(run) -> pd.DataFrame:
    return pd.read_csv(run / "results" / "tables" / "toy" / "metrics.csv", keep_default_na=False)


def test_metrics_table_has_every_variant_language_and_metric(reference_run):
    table = metrics(reference_run)
    ppl = table[(table.benchmark == "perplexity") & (table.metric == "perplexity")]
    variants = set(zip(ppl.method, ppl.calib, ppl.seed.astype(str)))
    expected = {("dense", "none", "-"), ("magnitude", "none", "0")}
    expected |= {(method, calib, seed) for method in ("wanda", "gptq") for calib in SETS for seed in SEEDS}
    assert variants == expected
    assert set(ppl.language) == set(LANGS)
    assert len(ppl) == len(expected) * len(LANGS)
    values = pd.to_numeric(ppl.value)
    assert all(math.isfinite(v) and v > 1 for v in values)
    bpb = table[table.metric == "bits_per_byte"]
    assert len(bpb) == len(ppl) and (pd.to_numeric(bpb.value) > 0).all()
    mc = table[table.benchmark == "udhr_mc"]
    assert set(mc.language) == set(LANGS) and set(mc.method) == {"dense", "magnitude", "wanda", "gptq"}
    assert pd.to_numeric(mc[mc.available.astype(str) == "True"].value).between(0, 1).all()


def test_pruning_changes_the_model_and_dense_is_shared(reference_run):
    """Every checkpoint scores differently from dense, calibration language matters, and
    dense is evaluated once per benchmark, not per variant."""
    table = metrics(reference_run)
    ppl = table[table.metric == "perplexity"].assign(value=lambda t: pd.to_numeric(t.value))
    dense = ppl[ppl.method == "dense"].set_index("language").value
    pruned = ppl[ppl.method != "dense"]
    assert (pruned.value.to_numpy() != dense.loc[pruned.language].to_numpy()).all()
    wanda = pruned[(pruned.method == "wanda") & (pruned.seed.astype(str) == "0")].set_index(["calib", "language"]).value
    assert not wanda.loc[LANGS[0]].equals(wanda.loc[LANGS[1]])
    assert len(list((reference_run / "results" / "metrics" / "toy" / "dense").glob("*.json"))) == 2


def test_report_tables_and_heatmaps_exist(reference_run):
    tables = reference_run / "results" / "tables" / "toy"
    assert (tables / "aggregated.csv").stat().st_size > 0
    heatmaps = sorted((reference_run / "results" / "figures" / "toy" / "heatmaps").rglob("*.png"))
    assert heatmaps, "no heatmap PNGs"
    assert all(p.stat().st_size > 1000 for p in heatmaps)


def declared_outputs(run, rules) -> set[str]:
    """Every output file the given rules declare in a finished run, from `snakemake --summary`."""
    summary = wf.snakemake(run, "--summary", "--cores", "1").stdout
    return {line.split("\t")[0] for line in summary.splitlines()[1:] if line.split("\t")[2:3] and
            line.split("\t")[2] in rules}


def test_report_rules_declare_exactly_the_files_langprune_report_writes(reference_run):
    """The report rules spell their table files out (no package import at parse time): each file
    `langprune report` wrote into results/tables/toy/ is a declared output, so it reaches the
    report, and each declared file was written (Snakemake checks that much itself)."""
    written = {f"results/tables/toy/{p.name}" for p in (reference_run / "results" / "tables" / "toy").iterdir()
               if not p.name.startswith(".")}  # not the output guard's records
    declared = {path for path in declared_outputs(reference_run, REPORT_RULES) if path.startswith("results/tables/")}
    assert written - {"results/tables/toy/metrics.csv"} == declared
    # one of each kind the report shows: a paper table, the mix tables, the summary and the significance tables
    assert {f"results/tables/toy/{name}" for name in ("table2_tasks.tex", "table4_mixes_perplexity.html",
                                                     "target_best.md", "table_level.csv")} <= declared


def test_second_run_has_nothing_to_do(reference_run):
    proc = wf.snakemake(reference_run, "--dry-run", "--cores", "1")
    assert "Nothing to be done" in proc.stdout + proc.stderr

