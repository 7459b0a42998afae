"""`langprune` command line: argument parsing only.

Each submodule registers its subcommands; each subcommand calls one package function.
Heavy imports (torch, transformers) happen inside those functions so `--help` is fast.
Every argument a subcommand writes to is declared with ``outputs.add_output`` and checked
by the output guard before the subcommand's function runs.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import sys

from ..errors import LangpruneError
from ..io import running
from .outputs import guard, mark_command_words

# One module per stage of the data flow; each defines ``register(subparsers)``.
COMMAND_MODULES = ["model", "prune", "data", "evaluate", "toy", "report", "analysis", "config", "plan", "methods",
                   "prefetch"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="langprune", description=__doc__.splitlines()[0])
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"langprune {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    mark_command_words(parser)
    return parser


# Python's cyclic garbage collector, run less often: a 262k-token tokenizer, transformers' model classes
# and lm-eval's task index are hundreds of thousands of long-lived objects, and with the default
# thresholds (700, 10, 10) the full collections that rescan them took ~8% of a Gemma evaluation job.
# Cycles are still collected; results cannot change.
GC_THRESHOLDS = (10_000, 50, 1_000)


def main(argv: list[str] | None = None) -> int:
    gc.set_threshold(*GC_THRESHOLDS)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # the command line as given, for outputs that record how they were made
    try:
        with running(guard(args)):  # every declared output checked before any work
            result = args.func(args)
    except LangpruneError as exc:
        # One line, whatever the wrapped library put in its message.
        print(f"langprune {args.command}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
