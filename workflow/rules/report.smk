# Aggregation and report: the tidy metrics table of each model -> paper-layout tables,
# the "target language best" summary, heatmaps and the paper comparison. Every table and
# figure is flagged for `snakemake --report` with a caption from workflow/report/.
# Its final outputs, for all_targets() in common.smk: report_targets(models).

from langprune import variant

REPORT_CONDA_ENV = "../envs/langprune.yaml"
REPORT_METRICS = variant.METRICS_TABLE
REPORT_HEATMAPS = variant.HEATMAP_DIR
# Table files per rule: {table name: formats}, written as results/tables/{model}/<name>.<format>
# (langprune.report's TABLES, paper comparison and summary; tests/test_workflow_end_to_end.py checks they agree).
REPORT_TABLE_FORMATS = ["csv", "md", "tex", "html"]
REPORT_TABLE_FILES = {
    **{
        name: REPORT_TABLE_FORMATS
        for name in [
            "table1_perplexity",
            "table1_bits_per_byte",
            "table2_tasks",
            "table4_mixes_tasks",
            "table4_mixes_perplexity",
        ]
    },
    "paper_comparison": ["csv", "md", "html"],
}
REPORT_SUMMARY_FILES = {"target_best": ["csv", "md", "html"]}
# Significance tables (langprune.report.significance's SIGNIFICANCE_FORMATS); the figures read
# the table-level test from table_level.csv beside significance.csv.
REPORT_SIGNIFICANCE = "results/tables/{model}/significance.csv"
REPORT_TABLE_LEVEL = "results/tables/{model}/table_level.csv"
REPORT_SIGNIFICANCE_FILES = {name: ["csv", "md", "html"] for name in ["significance", "seed_intervals", "table_level"]}
# Test settings as flags; a key the config leaves out keeps the command's default (the schema's).
SIGNIFICANCE_FLAGS = " ".join(
    f"--{key.replace('_', '-')} {','.join(map(str, value)) if isinstance(value, list) else value}"
    for key, value in config.get("significance", {}).items()
)
# Formats shown in the report: HTML renders inline, CSV is the download.
REPORT_SHOWN = {"html": "Tables", "csv": "Table data (CSV)"}
# (A line may not start with `report(` outside a rule: Snakemake would read the `report:` keyword.)
REPORT_OUTPUTS = {
    (name, ext): (
        f"results/tables/{{model}}/{name}.{ext}"
        if ext not in REPORT_SHOWN
        else report(
            f"results/tables/{{model}}/{name}.{ext}",
            caption=f"../report/{name}.rst",
            category=REPORT_SHOWN[ext],
            subcategory="{model}",
            labels={"model": "{model}", "table": name, "format": ext},
        )
    )
    for files in (REPORT_TABLE_FILES, REPORT_SUMMARY_FILES, REPORT_SIGNIFICANCE_FILES)
    for name, formats in files.items()
    for ext in formats
}
# Every table, summary and heatmap folder of one model, with a {model} wildcard.
REPORT_TARGETS = [f"results/tables/{{model}}/{name}.{ext}" for name, ext in REPORT_OUTPUTS] + [REPORT_HEATMAPS]
# Every report output of the given models (a lambda, as Snakemake's linter asks of one-liners).
report_targets = lambda models: expand(REPORT_TARGETS, model=models)


rule report_tables:
    input:
        REPORT_METRICS,
    output:
        **{f"{n}_{e}": REPORT_OUTPUTS[n, e] for n, formats in REPORT_TABLE_FILES.items() for e in formats},
        aggregated="results/tables/{model}/aggregated.csv",
    log:
        "logs/report/{model}/tables.log",
    wildcard_constraints:
        model="[^/]+",
    conda:
        REPORT_CONDA_ENV
    shell:
        "langprune report tables --metrics {input:q} --out-dir $(dirname {output.aggregated:q}) > {log:q} 2>&1"


rule report_significance:
    input:
        REPORT_METRICS,
    output:
        **{f"{n}_{e}": REPORT_OUTPUTS[n, e] for n, formats in REPORT_SIGNIFICANCE_FILES.items() for e in formats},
    log:
        "logs/report/{model}/significance.log",
    wildcard_constraints:
        model="[^/]+",
    conda:
        REPORT_CONDA_ENV
    params:
        flags=SIGNIFICANCE_FLAGS,
    shell:
        "langprune report significance --metrics {input:q} --out-dir $(dirname {output.significance_csv:q}) "
        "{params.flags} > {log:q} 2>&1"


rule report_summary:
    input:
        metrics=REPORT_METRICS,
        significance=REPORT_SIGNIFICANCE,
    output:
        **{f"{n}_{e}": REPORT_OUTPUTS[n, e] for n, formats in REPORT_SUMMARY_FILES.items() for e in formats},
        columns="results/tables/{model}/target_best_columns.csv",
    log:
        "logs/report/{model}/summary.log",
    wildcard_constraints:
        model="[^/]+",
    conda:
        REPORT_CONDA_ENV
    shell:
        "langprune report summary --metrics {input.metrics:q} --significance {input.significance:q} "
        "--out-dir $(dirname {output.columns:q}) > {log:q} 2>&1"


rule report_figures:
    input:
        metrics=REPORT_METRICS,
        significance=REPORT_SIGNIFICANCE,
        table_level=REPORT_TABLE_LEVEL,
    output:
        report(
            directory(REPORT_HEATMAPS),
            patterns=["{setting}/{figure}.png"],
            caption="../report/heatmap.rst",
            category="Heatmaps",
            subcategory="{model}",
            labels={"model": "{model}", "setting": "{setting}", "figure": "{figure}"},
        ),
    log:
        "logs/report/{model}/figures.log",
    wildcard_constraints:
        model="[^/]+",
    conda:
        REPORT_CONDA_ENV
    shell:
        "langprune report figures --metrics {input.metrics:q} --significance {input.significance:q} "
        "--out-dir {output:q} > {log:q} 2>&1"
