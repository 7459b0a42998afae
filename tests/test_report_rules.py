"""workflow/rules/report.smk as Snakemake reads it: lint-clean, and one job per model for each rule."""

from __future__ import annotations

import re
from pathlib import Path

from langprune.report import figures, paper, significance, tables
from test_report_browser import REPORT_RULES, snakemake


def standalone(tmp_path, models):
    (tmp_path / "Snakefile").write_text(f'include: "{REPORT_RULES}"\n\n'
                                        f"rule all:\n    input:\n        report_targets({models!r}),\n")
    return tmp_path


def test_report_rules_are_lint_clean(tmp_path):
    done = snakemake(standalone(tmp_path, ["toy"]), "--lint", check=False)
    output = done.stdout + done.stderr
    flagged = re.findall(r"Lints for (?:snakefile (\S+):|rule \w+ \(line \d+, (\S+)\):)", output)
    assert not [p for pair in flagged for p in pair if p.endswith("report.smk")], output[-3000:]


def test_rule_outputs_are_the_files_the_package_writes():
    """report.smk spells its table files out (no package import at parse time); they must be
    the files `langprune report` writes. Its header up to REPORT_SHOWN is plain Python."""
    header = Path(REPORT_RULES).read_text().split("# Formats shown in the report")[0]
    names: dict = {"config": {}}
    exec(header, names)  # noqa: S102 - the project's own rule file
    assert names["REPORT_TABLE_FILES"] == {**{name: tables.TABLE_FORMATS for name in tables.TABLE_NAMES},
                                           "paper_comparison": paper.COMPARISON_FORMATS}
    assert names["REPORT_SUMMARY_FILES"] == {"target_best": figures.SUMMARY_FORMATS}
    assert names["REPORT_SIGNIFICANCE_FILES"] == {"significance": significance.SIGNIFICANCE_FORMATS,
                                                  "seed_intervals": significance.SIGNIFICANCE_FORMATS,
                                                  significance.TABLE_LEVEL_FILE: significance.SIGNIFICANCE_FORMATS}
    assert names["REPORT_TABLE_LEVEL"].endswith(f"/{significance.TABLE_LEVEL_FILE}.csv")


def test_one_job_per_model_and_rule(tmp_path):
    workdir = standalone(tmp_path, ["a", "b"])
    for model in ("a", "b"):
        (workdir / "results" / "tables" / model).mkdir(parents=True)
        (workdir / "results" / "tables" / model / "metrics.csv").write_text("model\n")
    done = snakemake(workdir, "--dry-run")
    counts = dict(re.findall(r"^(report_\w+)\s+(\d+)$", done.stdout, flags=re.M))
    assert counts == {"report_tables": "2", "report_significance": "2", "report_summary": "2", "report_figures": "2"}
