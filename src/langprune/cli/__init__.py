"""`langprune` command line: argument parsing only.

Each submodule registers its subcommands; each subcommand calls one package function.
Heavy imports (torch, transformers) happen inside those functions so `--help` is fast.
Every argument a subcommand writes to is declared with ``outputs.add_output`` and checked
by the output guard before the subcommand's function runs.
"""

from __future__ import annotations

import argparse
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


def main(argv: list[str] | None = None) -> int:
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
