"""The benchmark's GPU path, dry-run on the CPU with shrunken Llama-3-8B shapes."""

from __future__ import annotations

import pytest

from conftest import load_benchmark
from langprune.plan import PRUNED_WEIGHTS_PER_SCALE, REFERENCE_SCALE


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


def test_llama3_8b_shape_is_the_model_the_plan_counts(bench):
    """The benchmark's Llama-3-8B shape and `langprune plan`'s count of pruned weights describe one
    model: its decoder linears are the weights the plan counts for a model of scale 8, and with the
    embeddings and norms it has the published 8.03 G parameters."""
    shape = bench.LLAMA3_8B
    head_dim = shape["hidden"] // shape["heads"]
    attention = shape["hidden"] * (2 * shape["hidden"] + 2 * shape["kv_heads"] * head_dim)  # q, o; k, v
    linears = shape["layers"] * (attention + 3 * shape["hidden"] * shape["intermediate"])  # + gate, up, down
    assert linears == pytest.approx(PRUNED_WEIGHTS_PER_SCALE * REFERENCE_SCALE, rel=1e-3)
    embeddings, norms = 2 * shape["vocab"] * shape["hidden"], (2 * shape["layers"] + 1) * shape["hidden"]
    assert linears + embeddings + norms == pytest.approx(8.03e9, rel=1e-3)
