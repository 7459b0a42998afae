"""`langprune report significance` as a hostile user drives it: each case, what it must give.

Every case runs the real command on a small gathered grid (two calibrations, two seeds, two
languages). A case expects success (rc 0, the outputs written) or one `error:` line naming
the problem (rc 2), never a traceback, and a refusal writes nothing.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from langprune.cli import main
from test_report_significance import perplexity_doc

LANGUAGES = ("de", "en")


def grid(root: Path, seeds=2, text=lambda calib, seed: "udhr", tokens=(4, 6, 5)) -> Path:
    """Metrics JSONs of a de/en x de/en grid and their gathered table; returns the table."""
    root.mkdir(parents=True, exist_ok=True)
    files = [perplexity_doc(root, calib, seed, {lang: [10.0 + seed + 0.5 * (lang == calib), 20.0, 15.0]
                                                for lang in LANGUAGES}, tokens=tokens, text=text(calib, seed))
             for calib in LANGUAGES for seed in range(seeds)]
    table = root / "metrics.csv"
    assert main(["evaluate", "gather", *files, "--out", str(table)]) == 0
    return table


def set_window_nll(path: Path, language: str, window: int, value: float) -> None:
    doc = json.loads(path.read_text())
    record = next(r for r in doc["records"] if r["language"] == language and r["metric"] == "perplexity")
    record["units"]["nll"][window] = value
    path.write_text(json.dumps(doc))  # json writes NaN as NaN, as a broken evaluation would


def normal(tmp: Path) -> list[str]:
    return ["--metrics", str(grid(tmp / "g"))]


def one_seed(tmp: Path) -> list[str]:
    return ["--metrics", str(grid(tmp / "g", seeds=1))]


def header_only(tmp: Path) -> list[str]:
    table = grid(tmp / "g")
    table.write_text(table.read_text().splitlines()[0] + "\n")
    return ["--metrics", str(table)]


def missing_csv(tmp: Path) -> list[str]:
    return ["--metrics", str(tmp / "absent.csv")]


def out_dir_is_a_file(tmp: Path) -> list[str]:
    (tmp / "plain").write_text("a user's file\n")
    return ["--metrics", str(grid(tmp / "g")), "--out-dir", str(tmp / "plain")]


def seqlen_mismatch(tmp: Path) -> list[str]:
    table = grid(tmp / "g")
    perplexity_doc(tmp / "g", "en", 1, {lang: [10.0, 20.0] for lang in LANGUAGES}, tokens=(7, 8))
    return ["--metrics", str(table)]


def flags(*extra: str) -> Callable[[Path], list[str]]:
    return lambda tmp: normal(tmp) + list(extra)


def empty_csv(tmp: Path) -> list[str]:
    (tmp / "empty.csv").write_text("")
    return ["--metrics", str(tmp / "empty.csv")]


def binary_metrics(tmp: Path) -> list[str]:
    (tmp / "blob.csv").write_bytes(bytes(range(256)) * 8)
    return ["--metrics", str(tmp / "blob.csv")]


def metrics_json(tmp: Path) -> list[str]:
    grid(tmp / "g")
    return ["--metrics", str(tmp / "g" / "de-0.json")]


def nan_window(tmp: Path) -> list[str]:
    table = grid(tmp / "g")
    set_window_nll(tmp / "g" / "en-1.json", "de", 2, math.nan)
    return ["--metrics", str(table)]


def texts_differ_within_a_seed(tmp: Path) -> list[str]:
    return ["--metrics", str(grid(tmp / "g", text=lambda calib, seed: "other" if calib == "en" else "udhr"))]


def texts_differ_per_seed(tmp: Path) -> list[str]:
    return ["--metrics", str(grid(tmp / "g", text=lambda calib, seed: f"text{seed}"))]


def texts_differ_beside_a_run_without_fingerprints(tmp: Path) -> list[str]:
    table = grid(tmp / "g", text=lambda calib, seed: "other" if calib == "en" else "udhr")
    perplexity_doc(tmp / "g", "de", 0, {lang: [10.0 + 0.5 * (lang == "de"), 20.0, 15.0] for lang in LANGUAGES},
                   tokens=(4, 6, 5), fingerprints=False)  # the first run, as evaluated before fingerprints
    return ["--metrics", str(table)]


def nan_value_in_the_table(tmp: Path) -> list[str]:
    table = grid(tmp / "g")
    lines = table.read_text().splitlines()
    fields = lines[1].split(",")
    fields[9] = "nan"
    table.write_text("\n".join([lines[0], ",".join(fields), *lines[2:]]) + "\n")
    return ["--metrics", str(table)]


def malformed_units(tmp: Path) -> list[str]:
    table = grid(tmp / "g")
    doc = json.loads((tmp / "g" / "de-1.json").read_text())
    del doc["records"][0]["units"]["tokens"]
    (tmp / "g" / "de-1.json").write_text(json.dumps(doc))
    return ["--metrics", str(table)]


@dataclass(frozen=True)
class Case:
    name: str
    args: Callable[[Path], list[str]]
    rc: int
    says: str = ""  # a fragment of stderr (the error line, or a warning for rc 0)


CASES = [
    Case("normal run", normal, 0),
    Case("one seed", one_seed, 0),
    Case("header-only CSV", header_only, 0, "no per-unit results"),
    Case("missing CSV", missing_csv, 2, "absent.csv does not exist"),
    Case("--out-dir is a file", out_dir_is_a_file, 2, "plain"),
    Case("seqlen mismatch", seqlen_mismatch, 2, "first differing window: 0 (tokens 4 vs 7)"),
    Case("--alpha 0", flags("--alpha", "0"), 2, "argument --alpha: '0' is not a number in (0, 1)"),
    Case("--alpha 1", flags("--alpha", "1"), 2, "argument --alpha: '1' is not a number in (0, 1)"),
    Case("--alpha -0.5", flags("--alpha", "-0.5"), 2, "argument --alpha: '-0.5' is not a number in (0, 1)"),
    Case("--alpha nan", flags("--alpha", "nan"), 2, "argument --alpha: 'nan' is not a number in (0, 1)"),
    Case("--resamples 0", flags("--resamples", "0"), 2, "argument --resamples: '0' is not an integer >= 999"),
    Case("--resamples -5", flags("--resamples", "-5"), 2, "argument --resamples: '-5' is not an integer >= 999"),
    Case("--resamples abc", flags("--resamples", "abc"), 2, "argument --resamples: 'abc' is not an integer"),
    Case("--seed-counts 0", flags("--seed-counts", "0"), 2, "--seed-counts must be positive"),
    Case("--seed-counts a,b", flags("--seed-counts", "a,b"), 2, "not a comma-separated list"),
    Case("--seed-counts ''", flags("--seed-counts", ""), 0),
    Case("--seed-counts 2,,4", flags("--seed-counts", "2,,4"), 0),
    Case("--seed-counts 1000000", flags("--seed-counts", "1000000"), 0),
    Case("--seed -1", flags("--seed", "-1"), 2, "argument --seed: '-1' is not an integer >= 0"),
    Case("empty CSV", empty_csv, 2, "empty.csv is not a readable CSV"),
    Case("binary --metrics", binary_metrics, 2, "blob.csv is not a readable CSV"),
    Case("--resamples 1", flags("--resamples", "1"), 2, "argument --resamples: '1' is not an integer >= 999"),
    Case("--resamples 999 at alpha 0.01", flags("--resamples", "999", "--alpha", "0.01"), 2, "use at least 4999"),
    Case("metrics JSON as --metrics", metrics_json, 2, "is a metrics JSON, not the tidy table"),
    Case("one window's NLL NaN", nan_window, 2, "en-1.json: perplexity/de window 2 has NLL nan"),
    Case("per-unit results without token counts", malformed_units, 2,
         "de-1.json: perplexity/de per-unit results are malformed (KeyError: 'tokens')"),
    Case("a NaN value in the table", nan_value_in_the_table, 2, "perplexity of calibration de seed 0 is nan"),
    Case("texts differ within a seed", texts_differ_within_a_seed, 2,
         "calibration de seed 0 (%/de-0.json) and calibration en seed 0 (%/en-0.json) were evaluated on different "
         "perplexity/de windows; first differing window: 0 (fingerprint"),
    Case("texts differ beside a run without fingerprints", texts_differ_beside_a_run_without_fingerprints, 2,
         "calibration de seed 1 (%/de-1.json) and calibration en seed 0 (%/en-0.json) were evaluated on different "
         "perplexity/de windows; first differing window: 0 (fingerprint"),
    Case("texts differ per seed", texts_differ_per_seed, 2,
         "calibration de seed 0 (%/de-0.json) and calibration de seed 1 (%/de-1.json) were evaluated on different "
         "perplexity/de windows; first differing window: 0 (fingerprint"),
]


def run(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse's own errors (a flag's type)
        return int(exc.code)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case(case: Case, tmp_path, capsys):
    args = case.args(tmp_path)
    if "--out-dir" not in args:
        args += ["--out-dir", str(tmp_path / "out")]
    out = Path(args[args.index("--out-dir") + 1])
    before = sorted(out.rglob("*")) if out.is_dir() else None
    capsys.readouterr()
    rc = run(["report", "significance", *args, *([] if "--resamples" in args else ["--resamples", "999"])])
    err = capsys.readouterr().err
    assert rc == case.rc, err
    assert "Traceback" not in err
    assert case.says.replace("%", str(tmp_path / "g")) in " ".join(err.split())
    if rc == 0:
        assert {p.name for p in out.iterdir()} >= {f"{name}.{ext}" for name in ("significance", "seed_intervals",
                                                                                  "table_level")
                                                   for ext in ("csv", "md", "html")}
    else:
        assert len([line for line in err.splitlines() if "error:" in line]) == 1
        assert (sorted(out.rglob("*")) if out.is_dir() else None) == before  # a refusal writes nothing
