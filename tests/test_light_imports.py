"""The heavy libraries a light entry point loads: why the few function-local imports outside cli/ exist.

Each case imports one module in a fresh interpreter. `langprune --help` and the Snakefile's parse
(langprune.config) load none of them; the report and the metrics writer do not load torch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
HEAVY = ("torch", "transformers", "lm_eval", "datasets", "scipy", "pandas", "matplotlib")

CASES = {
    # module (and what runs after importing it): heavy libraries it may load
    "langprune.cli": ((), "langprune.cli.build_parser()"),
    "langprune.config": ((), ""),
    "langprune.grid": ((), ""),
    "langprune.plan": ((), ""),
    "langprune.evaluate.results": ((), ""),
    "langprune.report.tables": (("pandas",), ""),
    "langprune.report.significance": (("pandas",), ""),
    "langprune.report.matching": (("pandas",), ""),
    "langprune.report.figures": (("pandas", "matplotlib"), ""),
}


def loaded_heavy(module: str, then: str) -> list[str]:
    code = (f"import json, sys, {module}\n{then}\n"
            f"print(json.dumps(sorted(name for name in {HEAVY!r} if name in sys.modules)))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return json.loads(proc.stdout)


@pytest.mark.parametrize("module", sorted(CASES))
def test_light_module_loads_no_heavy_library_it_does_not_need(module):
    allowed, then = CASES[module]
    assert sorted(set(loaded_heavy(module, then)) - set(allowed)) == []
