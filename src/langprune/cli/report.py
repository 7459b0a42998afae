"""`langprune report {tables,figures,summary}`: argument parsing only."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..io import OUTPUT_FOLDER
from ..ranges import NON_NEGATIVE_INT, OPEN_UNIT, Range
from ..report.common import MIN_RESAMPLES, TAIL_RESAMPLES
from .outputs import add_output


def _check_files(out_dir: str, names: list[str]) -> None:
    """Before the report is computed: each file it writes into --out-dir may replace only an earlier
    report file (its sidecar marker matches), or anything but an input with --force."""
    from ..io import check_output

    for name in names:
        check_output(Path(out_dir) / name, flag="--out-dir")


def _named(stems: dict[str, list[str]]) -> list[str]:
    return [f"{stem}.{ext}" for stem, formats in stems.items() for ext in formats]


def _tables(args: argparse.Namespace) -> None:
    from ..report.paper import COMPARISON_FORMATS
    from ..report.tables import TABLE_FORMATS, TABLE_NAMES, write_tables

    _check_files(args.out_dir, _named({**{name: TABLE_FORMATS for name in TABLE_NAMES}, "aggregated": ["csv"],
                                       "paper_comparison": COMPARISON_FORMATS}))
    write_tables(args.metrics, args.out_dir)


def _figures(args: argparse.Namespace) -> None:
    from ..report.figures import write_figures

    write_figures(args.metrics, args.out_dir, model=args.model, significance=args.significance)


def _summary(args: argparse.Namespace) -> None:
    from ..report.figures import SUMMARY_FORMATS, write_summary

    _check_files(args.out_dir, _named({"target_best": SUMMARY_FORMATS, "target_best_columns": ["csv"]}))
    write_summary(args.metrics, args.out_dir, significance=args.significance)


def _significance(args: argparse.Namespace) -> None:
    from ..report.significance import SIGNIFICANCE_FORMATS, TABLE_LEVEL_FILE, SignificanceSettings, write_significance

    _check_files(args.out_dir, _named({name: SIGNIFICANCE_FORMATS
                                       for name in ("significance", "seed_intervals", TABLE_LEVEL_FILE)}))
    settings = SignificanceSettings(resamples=args.resamples, alpha=args.alpha, seed=args.seed,
                            seed_counts=tuple(args.seed_counts))
    write_significance(args.metrics, args.out_dir, settings)


def _counts(text: str) -> list[int]:
    try:
        return [int(k) for k in text.split(",") if k]
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a comma-separated list of numbers of seeds") from None


def register(subparsers) -> None:
    parser = subparsers.add_parser("report", help="tables, heatmaps and summaries from a tidy metrics CSV")
    commands = parser.add_subparsers(dest="report_command", required=True, metavar="WHAT")

    def add(name: str, help_text: str, func) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("--metrics", required=True, help="tidy metrics CSV from `langprune evaluate gather`")
        add_output(sub, "--out-dir", kind=OUTPUT_FOLDER, required=True,
                   help="folder to write into (created if missing); files of its own it replaces, others only "
                        "with --force")
        sub.set_defaults(func=func)
        return sub

    add("tables", "paper-layout tables (CSV, Markdown, LaTeX, HTML) and the paper comparison", _tables)
    figures = add("figures", "calibration x evaluation-language heatmaps (PNG), absolute and relative to dense",
                  _figures)
    figures.add_argument("--model", default=None, help="model to draw when the CSV holds several")
    summary = add("summary", "how often the target language was the best calibration ('k of n columns')", _summary)
    for sub in (figures, summary):
        sub.add_argument("--significance", default=None,
                         help="significance.csv of `langprune report significance`: mark significant wins")
    significance = add("significance", "paired bootstrap intervals and Holm-corrected p-values: own-language "
                       "calibration vs every other calibration set and vs the best other language (reads the "
                       "per-window/per-item results of the metrics JSONs the CSV was gathered from), and the exact "
                       "table-level test of the diagonal over all assignments of calibration to evaluation "
                       "languages (table_level.*)", _significance)
    significance.add_argument("--resamples", type=Range(int, minimum=MIN_RESAMPLES), default=9999,
                              help=f"bootstrap and permutation resamples (at least {MIN_RESAMPLES}: "
                                   f"{TAIL_RESAMPLES} beyond each end of the interval; more for alpha below 0.05)")
    significance.add_argument("--alpha", type=OPEN_UNIT, default=0.05,
                              help="significance level; the interval is 1 - alpha (default 0.05: 95%%)")
    significance.add_argument("--seed", type=NON_NEGATIVE_INT, default=0, help="random seed of the resampling")
    significance.add_argument("--seed-counts", type=_counts, default=[2, 4, 8],
                              help="numbers of calibration seeds to recompute the interval with (default 2,4,8)")
