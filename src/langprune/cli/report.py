"""`langprune report {tables,figures,summary}`: argument parsing only."""

from __future__ import annotations

import argparse

from ..ranges import NON_NEGATIVE_INT, OPEN_UNIT, Range
from ..report.common import MIN_RESAMPLES, TAIL_RESAMPLES


def _tables(args: argparse.Namespace) -> None:
    from ..report.tables import write_tables

    write_tables(args.metrics, args.out_dir)


def _figures(args: argparse.Namespace) -> None:
    from ..report.figures import write_figures

    write_figures(args.metrics, args.out_dir, model=args.model, significance=args.significance)


def _summary(args: argparse.Namespace) -> None:
    from ..report.figures import write_summary

    write_summary(args.metrics, args.out_dir, significance=args.significance)


def _significance(args: argparse.Namespace) -> None:
    from ..report.significance import SignificanceSettings, write_significance

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
        sub.add_argument("--out-dir", required=True, help="folder to write into (created if missing)")
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
