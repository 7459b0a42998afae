"""`langprune` command line: argument parsing only.

Each submodule registers its subcommands; each subcommand calls one package function.
Heavy imports (torch, transformers) happen inside those functions so `--help` is fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import LangpruneError

# One module per stage of the data flow; each defines ``register(subparsers)``.
COMMAND_MODULES = ["model", "prune", "data", "evaluate", "toy", "report", "analysis", "config", "prefetch"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="langprune", description=__doc__.splitlines()[0])
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"langprune {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = args.func(args)
    except LangpruneError as exc:
        # One line, whatever the wrapped library put in its message.
        print(f"langprune {args.command}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
