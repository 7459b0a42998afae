"""`langprune report {tables,figures,summary}`: argument parsing only."""

from __future__ import annotations

import argparse


def _tables(args: argparse.Namespace) -> None:
    from ..report.tables import write_tables

    write_tables(args.metrics, args.out_dir)


def _figures(args: argparse.Namespace) -> None:
    from ..report.figures import write_figures

    write_figures(args.metrics, args.out_dir, model=args.model)


def _summary(args: argparse.Namespace) -> None:
    from ..report.figures import write_summary

    write_summary(args.metrics, args.out_dir)


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
    add("summary", "how often the target language was the best calibration ('k of n columns')", _summary)
