"""docs/cli.md lists every `langprune` subcommand with its one-line help, as the parser declares them."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from langprune.cli import build_parser

REPO = Path(__file__).resolve().parents[1]


def command_table() -> str:
    """Markdown table of every leaf subcommand and its help, in the parser's order."""

    def leaves(parser: argparse.ArgumentParser, path: list[str]):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                helps = {choice.dest: choice.help for choice in action._choices_actions}
                for name, sub in action.choices.items():
                    if any(isinstance(a, argparse._SubParsersAction) for a in sub._actions):
                        yield from leaves(sub, [*path, name])
                    else:
                        yield " ".join([*path, name]), helps[name]

    rows = [f"| `langprune {command}` | {text.replace('|', chr(92) + '|')} |"
            for command, text in leaves(build_parser(), [])]
    return "\n".join(["| command | what it does |", "|---|---|", *rows])


def test_docs_list_every_subcommand_with_its_help():
    doc = (REPO / "docs" / "cli.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- langprune commands -->\n(.*?)\n<!-- end langprune commands -->", doc, re.S)
    assert block, "docs/cli.md lost its command table"
    expected = command_table()
    assert block.group(1).strip() == expected, f"docs/cli.md's table is stale; it should read:\n{expected}"
