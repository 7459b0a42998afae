# Aggregation and report: the tidy metrics table of each model -> paper-layout tables,
# the "target language best" summary, heatmaps and the paper comparison. Every table and
# figure is flagged for `snakemake --report` with a caption from workflow/report/.
# Targets for `rule all`: report_targets(models).

from langprune.report.figures import SUMMARY_FORMATS
from langprune.report.paper import COMPARISON_FORMATS
from langprune.report.tables import TABLE_FORMATS, TABLE_NAMES

REPORT_METRICS = "results/tables/{model}/metrics.csv"
REPORT_TABLES = "results/tables/{model}/{name}.{ext}"
REPORT_HEATMAPS = "results/figures/{model}/heatmaps"
# Formats shown in the report: HTML renders inline, CSV is the download.
REPORT_SHOWN = {"html": "Tables", "csv": "Table data (CSV)"}
REPORT_TABLE_FILES = {**{name: TABLE_FORMATS for name in TABLE_NAMES}, "paper_comparison": COMPARISON_FORMATS}
REPORT_SUMMARY_FILES = {"target_best": SUMMARY_FORMATS}


def report_table(name, ext):
    """One table file's output path, flagged for the report when it is HTML or CSV."""
    path = REPORT_TABLES.replace("{name}", name).replace("{ext}", ext)
    if ext not in REPORT_SHOWN:
        return path
    return report(path, caption=f"../report/{name}.rst", category=REPORT_SHOWN[ext], subcategory="{model}",
                  labels={"model": "{model}", "table": name, "format": ext})


def report_outputs(files):
    """Named outputs {name_ext: path} for a {name: formats} mapping."""
    return {f"{name}_{ext}": report_table(name, ext) for name, formats in files.items() for ext in formats}


def report_targets(models):
    """Every table, summary and heatmap folder of the given models (for `rule all`)."""
    files = {**REPORT_TABLE_FILES, **REPORT_SUMMARY_FILES}
    targets = []
    for model in models:
        targets += [REPORT_TABLES.format(model=model, name=n, ext=e) for n, exts in files.items() for e in exts]
        targets.append(REPORT_HEATMAPS.format(model=model))
    return targets


rule report_tables:
    input:
        REPORT_METRICS,
    output:
        aggregated="results/tables/{model}/aggregated.csv",
        **report_outputs(REPORT_TABLE_FILES),
    log:
        "logs/report/{model}/tables.log",
    wildcard_constraints:
        model="[^/]+",
    shell:
        "langprune report tables --metrics {input:q} --out-dir $(dirname {output.aggregated:q}) > {log:q} 2>&1"


rule report_summary:
    input:
        REPORT_METRICS,
    output:
        columns="results/tables/{model}/target_best_columns.csv",
        **report_outputs(REPORT_SUMMARY_FILES),
    log:
        "logs/report/{model}/summary.log",
    wildcard_constraints:
        model="[^/]+",
    shell:
        "langprune report summary --metrics {input:q} --out-dir $(dirname {output.columns:q}) > {log:q} 2>&1"


rule report_figures:
    input:
        REPORT_METRICS,
    output:
        report(directory(REPORT_HEATMAPS), patterns=["{setting}/{figure}.png"], caption="../report/heatmap.rst",
               category="Heatmaps", subcategory="{model}",
               labels={"model": "{model}", "setting": "{setting}", "figure": "{figure}"}),
    log:
        "logs/report/{model}/figures.log",
    wildcard_constraints:
        model="[^/]+",
    shell:
        "langprune report figures --metrics {input:q} --out-dir {output:q} > {log:q} 2>&1"
