"""`langprune methods`: the method registry as tables (argument parsing and rendering only)."""

from __future__ import annotations

import argparse

from .. import registry


def _cell(text: str) -> str:
    """Text inside a Markdown table cell: its own pipes escaped."""
    return str(text).replace("|", "\\|")


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _params(params) -> str:
    return "<br>".join(f"`{p.flag}` {p.default!r}: {_cell(p.help)} ({p.describe()})" for p in params) or "-"


def render() -> str:
    """Markdown tables of every registered method and allocation, straight from the registry."""
    lines = ["| method | what it does | calibration | language mix | structures | changes kept weights "
             "| hyperparameters (flag, default: meaning, allowed) |", "|---|---|---|---|---|---|---|"]
    for spec in registry.METHODS.values():
        structures = ("none (quantizes every weight)" if spec.quantizes
                      else "unstructured" if spec.unstructured_only else "unstructured, N:M")
        lines.append(f"| `{spec.name}` | {_cell(spec.summary)} | {_yes(spec.needs_calibration)} "
                     f"| {_yes(spec.needs_language_mix)} | {structures} | {_yes(spec.updates_weights)} "
                     f"| {_params(spec.params)} |")
    lines += ["", "| allocation | what it does | calibration | language mix | structures | parameters |",
              "|---|---|---|---|---|---|"]
    for spec in registry.ALLOCATIONS.values():
        structures = "unstructured" if spec.unstructured_only else "unstructured, N:M"
        lines.append(f"| `{spec.name}` | {_cell(spec.summary)} | {_yes(spec.needs_calibration)} "
                     f"| {_yes(spec.needs_language_mix)} | {structures} | {_params(spec.all_params)} |")
    return "\n".join(lines)


def run_methods(args: argparse.Namespace) -> int:
    print(render())
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "methods", help="every compression method and allocation with its traits and hyperparameters",
        description="Print the method registry as Markdown tables: what each method and sparsity allocation "
                    "needs (calibration text, a language mix), which structures it builds, whether it changes "
                    "the weights it keeps, and its hyperparameters with their flags, published defaults and "
                    "allowed values (docs/methods.md holds this output).")
    p.set_defaults(func=run_methods)
