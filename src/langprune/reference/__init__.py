"""The paper's reported numbers (arXiv 2408.14398, Tables 1-3), for comparing a run against them.

See README.md in this package for the citation and the columns of each table.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..errors import LangpruneError

HERE = Path(__file__).parent
TABLES = {"perplexity": "table1_perplexity.csv", "downstream": "table2_downstream_acc.csv",
          "mkqa": "table3_mkqa_f1.csv"}
# Value column of each table, and the langprune (benchmark, metric, scale) it corresponds to.
TIDY = {"perplexity": ("perplexity", "perplexity", "perplexity", 1.0),
        "downstream": ("accuracy", None, "acc", 0.01),
        "mkqa": ("f1", "mkqa", "f1", 0.01)}


def load_reference(table: str, tidy: bool = False):
    """One of the paper's tables as a ``pandas.DataFrame``; ``tidy`` maps it onto langprune's metric schema."""
    if table not in TABLES:
        raise LangpruneError(f"unknown reference table '{table}'; choose one of: {', '.join(TABLES)}")
    frame = pd.read_csv(HERE / TABLES[table])
    if not tidy:
        return frame
    column, benchmark, metric, scale = TIDY[table]
    out = pd.DataFrame({
        "model": frame["model"], "method": frame["method"],
        "calib": frame["calibration"].str.lower(),
        "benchmark": frame["task"] if benchmark is None else benchmark,
        "language": frame["eval_language"].str.lower(), "metric": metric,
        "value": frame[column] * scale,
    })
    return out
