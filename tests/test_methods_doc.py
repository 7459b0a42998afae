"""`langprune methods` prints the registry; docs/methods.md holds that output, so it cannot go stale."""

from __future__ import annotations

import re
from pathlib import Path

from langprune import registry
from langprune.cli import main
from langprune.cli.methods import render

REPO = Path(__file__).resolve().parents[1]


def test_docs_hold_the_commands_output(capsys):
    assert main(["methods"]) == 0
    printed = capsys.readouterr().out.strip()
    doc = (REPO / "docs" / "methods.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- langprune methods -->\n(.*?)\n<!-- end langprune methods -->", doc, re.S)
    assert block, "docs/methods.md lost its langprune methods block"
    assert block.group(1).strip() == printed


def test_every_registered_method_and_allocation_is_a_row_with_its_flags():
    table = render()
    for spec in registry.METHODS.values():
        row = next(line for line in table.splitlines() if line.startswith(f"| `{spec.name}` |"))
        assert all(f"`{p.flag}`" in row for p in spec.params)
    for spec in registry.ALLOCATIONS.values():
        row = next(line for line in table.splitlines() if line.startswith(f"| `{spec.name}` |"))
        assert all(f"`{p.flag}`" in row for p in spec.all_params)
