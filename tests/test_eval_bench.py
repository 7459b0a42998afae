"""The evaluation benchmark's synthetic items are read by lm-eval's real task configs, and both backends agree."""

from __future__ import annotations

import pytest

from conftest import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("bench_eval")


def test_family_table_on_a_tiny_model(bench, tmp_path):
    model = str(bench.build_assets(tmp_path, "tiny", "float32", "cpu"))
    data = bench.write_task_data(tmp_path, items=4)
    rows = bench.family_table(model, data, tmp_path, batch_size=2, device="cpu", dtype="float32", repeats=1)
    assert [r["family"] for r in rows] == list(bench.FAMILIES)
    for row in rows:
        assert row["identical"] and row["hflm_scoring_s"] > 0 and row["shared_scoring_s"] > 0
    assert {r["family"]: r["items"] for r in rows} == {"hellaswag": 4, "arc": 4, "belebele": 4, "mmlu": 4}
    runs = bench.benchmark_runs(tmp_path, data, limit=2, batch_size=2)
    assert list(runs) == ["perplexity", *bench.FAMILIES, "mkqa"] and all(r.endswith(".json") for r in runs.values())
