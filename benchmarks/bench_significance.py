"""What the paired significance tests cost: keeping per-unit results, and running the tests.

1. Perplexity: the evaluation loop that keeps one summed NLL per window (``window_nll``)
   against the aggregate-only loop it replaced (one ``reduction="sum"`` per batch), on the
   same model and windows; the metrics JSON's size with and without the units; and whether
   two evaluations keep identical units.
2. Tasks: ``langprune evaluate tasks`` with lm-eval's per-sample logs (what keeps per-item
   scores) against the same run with ``log_samples=False``; JSON size with and without units.
3. ``langprune report significance`` on a tidy metrics CSV (default: the toy run's).
4. The table-level matching test alone: enumerating all k! assignments for k = 7 and 9
   (no workflow outputs needed: ``--matching-only``).

Needs the toy workflow's outputs (results/toy/model, results/toy/text/eval, results/toy/mc,
results/tables/toy/metrics.csv); run it from the repository root after `snakemake`:

    .venv/bin/python benchmarks/bench_significance.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

MODEL = "results/toy/model"
EVAL_TEXT = "text:results/toy/text/eval"
MC = "results/toy/mc"
METRICS = "results/tables/toy/metrics.csv"
LANGUAGES = ["ar", "de", "en", "es", "ru", "sw", "zh"]


def timed(func, repeats: int) -> float:
    """Median wall seconds of ``repeats`` calls."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def aggregate_only_nll(model, windows, batch_size: int = 1) -> float:
    """The loop before units were kept: one summed cross-entropy per batch."""
    import torch
    import torch.nn.functional as F

    total = 0.0
    with torch.no_grad():
        for start in range(0, len(windows), batch_size):
            batch = torch.tensor(windows[start:start + batch_size], dtype=torch.long)
            logits = model(input_ids=batch).logits[:, :-1].float()
            nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1), reduction="sum")
            total += float(nll.double())
    return total


def units_of(path: Path) -> list:
    return [rec.get("units") for rec in json.loads(path.read_text())["records"]]


def json_sizes(path: Path) -> tuple[int, int]:
    """(bytes with units, bytes of the same JSON without them)."""
    doc = json.loads(path.read_text())
    for rec in doc["records"]:
        rec.pop("units", None)
    return path.stat().st_size, len(json.dumps(doc, indent=2).encode())


def bench_perplexity(repeats: int, out: Path) -> list[tuple]:
    from langprune.data.sources import parse_source
    from langprune.evaluate.modelload import load_evaluated_model
    from langprune.evaluate.perplexity import eval_text, evaluate_perplexity, make_windows, window_nll
    from langprune.models import load_tokenizer

    tokenizer = load_tokenizer(MODEL)
    source = parse_source(EVAL_TEXT)
    windows = [w for lang in LANGUAGES
               for w in make_windows(eval_text(source, lang, tokenizer, 8192), tokenizer, 128, 8192, lang).input_ids]
    model = load_evaluated_model(MODEL, None, dtype="float32", device="cpu")
    kept = timed(lambda: window_nll(model, windows), repeats)
    plain = timed(lambda: aggregate_only_nll(model, windows), repeats)
    evaluate_perplexity(MODEL, EVAL_TEXT, LANGUAGES, 128, 8192, str(out))
    first = units_of(out)
    evaluate_perplexity(MODEL, EVAL_TEXT, LANGUAGES, 128, 8192, str(out))
    identical = "yes" if units_of(out) == first else "NO"
    with_units, without = json_sizes(out)
    return [("perplexity: per-window NLL loop s", f"{kept:.3f}"), ("perplexity: aggregate-only loop s", f"{plain:.3f}"),
            ("perplexity: ratio", f"{kept / plain:.3f}"), ("perplexity JSON bytes with units", with_units),
            ("perplexity JSON bytes without units", without), ("windows", len(windows)),
            ("perplexity units identical in two runs", identical)]


def bench_tasks(repeats: int, out: Path) -> list[tuple]:
    from langprune.evaluate import harness

    real = harness.simple_evaluate  # patched where harness calls it (bound when harness is imported)

    def run(log_samples: bool) -> None:
        def patched(**kwargs):
            return real(**{**kwargs, "log_samples": log_samples})

        harness.simple_evaluate = patched
        try:
            harness.evaluate_tasks(MODEL, ["udhr_mc"], LANGUAGES, str(out), task_data=[MC], batch_size=16)
        finally:
            harness.simple_evaluate = real

    run(True)
    first = units_of(out)
    logged = timed(lambda: run(True), repeats)
    identical = "yes" if units_of(out) == first else "NO"
    with_units, without = json_sizes(out)
    plain = timed(lambda: run(False), repeats)
    return [("udhr_mc: with per-item logs s", f"{logged:.3f}"), ("udhr_mc: without s", f"{plain:.3f}"),
            ("udhr_mc: ratio", f"{logged / plain:.3f}"), ("udhr_mc JSON bytes with units", with_units),
            ("udhr_mc JSON bytes without units", without), ("udhr_mc units identical in two runs", identical)]


def bench_report(repeats: int, metrics: str, out_dir: Path) -> list[tuple]:
    from langprune.report.significance import SignificanceSettings, write_significance

    rows = []
    for resamples in (999, 9999):
        settings = SignificanceSettings(resamples=resamples)
        seconds = timed(lambda: write_significance(metrics, out_dir, settings), repeats)
        rows.append((f"report significance ({resamples} resamples) s", f"{seconds:.2f}"))
    return rows


def bench_matching(repeats: int) -> list[tuple]:
    import numpy as np

    from langprune.report.matching import all_assignments, matching_test

    rows = []
    for k in (7, 9):
        table = np.random.default_rng(k).normal(size=(k, k))
        start = time.perf_counter()
        all_assignments(k)
        build = time.perf_counter() - start
        calls = 200 if k == 7 else 5
        seconds = timed(lambda: [matching_test(table, False) for _ in range(calls)], repeats) / calls
        rows += [(f"table-level test, {k} languages ({len(all_assignments(k)):,} assignments): ms per table",
                  f"{seconds * 1e3:.2f}"),
                 (f"table-level test, {k} languages: building the assignments once, ms", f"{build * 1e3:.1f}")]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--metrics", default=METRICS, help="tidy metrics CSV for the report timing")
    parser.add_argument("--matching-only", action="store_true",
                        help="time only the table-level test (needs no workflow outputs)")
    args = parser.parse_args()
    rows = bench_matching(args.repeats)
    if not args.matching_only:
        import torch

        torch.set_num_threads(1)
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            rows += bench_perplexity(args.repeats, tmp / "ppl.json") + bench_tasks(args.repeats, tmp / "tasks.json")
            rows += bench_report(args.repeats, args.metrics, tmp / "sig")
    width = max(len(name) for name, _ in rows)
    print(f"| {'measure'.ljust(width)} | value |\n| {'-' * width} | ---: |")
    for name, value in rows:
        print(f"| {name.ljust(width)} | {value} |")


if __name__ == "__main__":
    main()
