"""The benchmark's GPU path, dry-run on the CPU with shrunken Llama-3-8B shapes."""

from __future__ import annotations

import pytest

from conftest import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("bench_prune")


def test_gpu_path_logic_on_cpu(bench):
    shape = {**bench.LLAMA3_8B, "hidden": 128, "intermediate": 256, "heads": 4, "kv_heads": 2, "vocab": 500,
             "layers": 2}
    for offload in (False, True):
        row = bench.gpu_run("wanda", shape, nsamples=3, seqlen=16, batch_size=2, device="cpu", offload=offload)
        assert row["layers"] == 2 and row["s_per_layer"] > 0 and 0 < row["mean_rel_error"] < 1
        assert row["projected_32_layers_min"] >= row["s_per_layer"] * 32 / 60


def test_llama3_8b_shapes_match_the_published_config(bench):
    assert bench.LLAMA3_8B == dict(hidden=4096, layers=32, heads=32, kv_heads=8, intermediate=14336, vocab=128256)
