"""Output arguments, declared once per subcommand and checked by the one output guard.

A subcommand declares every argument it writes to with :func:`add_output`, which also
gives it ``--force`` with the same meaning everywhere. Before the command runs,
:func:`guard` checks each declared output with :func:`langprune.io.check_output` against
everything the command reads (every other argument that names an existing path), and
returns the run's :class:`~langprune.io.RunOutputs`, under which every atomic write is
checked again and a write outside the declared outputs is refused. Torch-free: artifact
kinds are named as ``"module:NAME"`` and imported only when a command runs.
"""

from __future__ import annotations

import argparse
import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from ..errors import LangpruneError
from ..io import ArtifactKind, RunOutputs, check_output, real_inputs

DECLARED = "_declared_outputs"  # namespace attribute: the subcommand's OutputArgs
COMMAND_WORDS = "_command_words"  # namespace attribute: the dests that hold subcommand names, not paths
FORCE_HELP = ("replace whatever is at the output (by default only an earlier artifact of the same kind, recognised "
              "by its format marker); never an input of this command")
# What an output argument is called; one that is not declared through add_output fails the CLI test.
OUTPUT_DESTS = ("out", "out_dir", "output")


@dataclass(frozen=True)
class OutputArg:
    """One declared output argument: its namespace name, its flag, and the kind of artifact it writes."""

    dest: str
    flag: str
    kind: ArtifactKind | str  # or "module:NAME" under langprune, imported when the command runs

    def artifact_kind(self) -> ArtifactKind:
        if isinstance(self.kind, ArtifactKind):
            return self.kind
        module, _, name = self.kind.partition(":")
        return getattr(importlib.import_module(f"langprune.{module}"), name)


def add_output(parser: argparse.ArgumentParser, flag: str, *, kind: ArtifactKind | str,
               **kwargs: Any) -> argparse.Action:
    """``parser.add_argument(flag, **kwargs)`` for an argument the command writes to, plus ``--force``."""
    action = parser.add_argument(flag, **kwargs)
    declared = [*(parser.get_default(DECLARED) or []), OutputArg(action.dest, flag, kind)]
    parser.set_defaults(**{DECLARED: declared})
    if "--force" not in parser._option_string_actions:
        parser.add_argument("--force", action="store_true", help=FORCE_HELP)
    return action


def mark_command_words(parser: argparse.ArgumentParser) -> None:
    """Record which namespace entries name subcommands, so a file called like one is no input."""
    dests, pending = [], [parser]
    while pending:
        for action in pending.pop()._actions:
            if isinstance(action, argparse._SubParsersAction):
                dests.append(action.dest)
                pending.extend(action.choices.values())
    parser.set_defaults(**{COMMAND_WORDS: dests})


def declared_outputs(parser: argparse.ArgumentParser) -> list[OutputArg]:
    return list(parser.get_default(DECLARED) or [])


def looks_like_output(action: argparse.Action) -> bool:
    return action.dest in OUTPUT_DESTS or action.dest.startswith("out_")


def undeclared_outputs(parser: argparse.ArgumentParser) -> list[str]:
    """Output-looking arguments of ``parser`` that bypass :func:`add_output` (a bug the CLI test catches)."""
    declared = {out.dest for out in declared_outputs(parser)}
    return [action.option_strings[0] if action.option_strings else action.dest
            for action in parser._actions if looks_like_output(action) and action.dest not in declared]


def _paths(value: Any) -> Iterator[str]:
    """The strings in an argument's value that may name a path (``text:DIR`` names DIR)."""
    if isinstance(value, str):
        yield value
        if ":" in value:
            yield value.split(":", 1)[1]
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _paths(item)


def command_inputs(args: argparse.Namespace) -> list[str]:
    """Every argument value of the command that names an existing path and is not a declared output."""
    skip = {out.dest for out in getattr(args, DECLARED, None) or []} | set(getattr(args, COMMAND_WORDS, ()))
    return [path for dest, value in sorted(vars(args).items())
            if dest not in skip and dest not in (DECLARED, COMMAND_WORDS, "func", "argv")  # argv: the whole line
            for path in _paths(value) if path and os.path.lexists(path)]


def output_values(args: argparse.Namespace, out: OutputArg) -> list[str]:
    value = getattr(args, out.dest, None)
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]


def guard(args: argparse.Namespace, extra_inputs: list[str] = ()) -> RunOutputs:
    """Check every declared output of the parsed command before it runs; the run's outputs and inputs.

    ``extra_inputs`` are the inputs of an enclosing command (`evaluate variant`'s model and checkpoints).
    """
    inputs = [*command_inputs(args), *extra_inputs]
    force = bool(getattr(args, "force", False))
    written: dict[Path, str] = {}
    for out in getattr(args, DECLARED, None) or []:
        kind = out.artifact_kind()
        for value in output_values(args, out):
            real = Path(os.path.realpath(value))
            if real in written:
                raise LangpruneError(f"{out.flag} '{value}' is also given as {written[real]}: two outputs of one "
                                     f"command would overwrite each other; give each its own path")
            check_output(value, kind, force=force, inputs=inputs, flag=out.flag)
            written[real] = f"{out.flag} '{value}'"
    return RunOutputs(outputs=tuple(written), inputs=real_inputs(inputs), force=force)
