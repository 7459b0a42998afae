"""SparseGPT's joint sparse + quantized mode (`--sparsegpt-bits`) against its authors' code.

The authors' ``SparseGPT.fasterprune`` with a ``Quantizer`` attached (what their ``opt.py
--sparsity .5 --wbits 4`` runs: per channel, asymmetric, no MSE search) runs from the unchanged
copy in tests/reference/sparsegpt (Apache-2.0), fed the same weight and Hessian as ours. N:M
masks are chosen the same way on both sides, so there the weights are identical bit for bit; an
unstructured threshold prunes one more weight per block of 128 columns in their code (``<=``
the score at index ``numel x sparsity``), so there only agreement is asserted, and that every
weight lies on its row's grid.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from conftest import build_model, random_layer, reference_job, reference_modules
from langprune import registry
from langprune.checkpoint import load_pruned_model, read_manifest
from langprune.errors import LangpruneError
from langprune.prune import PruneRequest, prune_to_checkpoint
from langprune.prune.methods import get_method, sparsegpt
from langprune.prune.quant_grid import round_to_grid, row_grid
from langprune.prune.stats import LinearStats
from langprune.prune.structure import n_of_m, unstructured

SPARSEGPT_DIR = Path(__file__).resolve().parent / "reference" / "sparsegpt"


@pytest.fixture(scope="module")
def reference():
    with reference_modules(SPARSEGPT_DIR, "quant", "sparsegpt") as modules:
        yield modules


def run_reference(reference, weight: torch.Tensor, hessian: torch.Tensor, bits: int, structure, monkeypatch):
    """Their fasterprune with a quantizer as their opt.py configures it; returns the layer's new weight."""
    quant, code = reference
    layer, job = reference_job(code.SparseGPT, quant, weight, hessian, bits, symmetric=False)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a, **k: None)  # device shim: the code is CUDA-first
    n, m = (structure.n, structure.m) if structure.is_nm else (0, 0)
    with contextlib.redirect_stdout(io.StringIO()):  # it prints its time and error
        job.fasterprune(structure.sparsity, prunen=n, prunem=m)
    return layer.weight.data


def on_grid(weight: torch.Tensor, original: torch.Tensor, bits: int) -> bool:
    """Every entry of ``weight`` is a value of its row's grid (taken from ``original``)."""
    scale, zero = row_grid(original.float(), (1 << bits) - 1, symmetric=False)
    return torch.equal(round_to_grid(weight, scale, zero, (1 << bits) - 1), weight)


@pytest.mark.parametrize("bits", [4, 3])
@pytest.mark.parametrize("structure", [n_of_m(2, 4), n_of_m(4, 8)], ids=["2:4", "4:8"])
def test_nm_joint_mode_is_bit_identical_to_the_authors_code(reference, monkeypatch, bits, structure):
    weight, hessian = random_layer(96, 384, seed=bits, dead=5)
    theirs = run_reference(reference, weight, hessian, bits, structure, monkeypatch)
    keep, ours = sparsegpt(weight, LinearStats("layer", hessian=hessian.clone()), structure, bits=bits)
    assert torch.equal(ours, theirs)
    assert torch.equal(keep.sum(dim=1), torch.full((96,), 384 * structure.n // structure.m))
    assert on_grid(ours, weight, bits) and not ours[~keep].any()


@pytest.mark.parametrize("bits", [4, 3])
def test_unstructured_joint_mode_agrees_with_the_authors_code(reference, monkeypatch, bits):
    weight, hessian = random_layer(96, 384, seed=10 + bits, dead=5)
    theirs = run_reference(reference, weight, hessian, bits, unstructured(0.5), monkeypatch)
    keep, ours = sparsegpt(weight, LinearStats("layer", hessian=hessian.clone()), unstructured(0.5), bits=bits)
    assert int((~keep).sum()) == weight.numel() // 2  # exactly the sparsity asked for
    # they prune one more weight per block of 128 columns; the zeros (pruned, or kept and rounded to 0)
    # and the values stay close
    assert ((theirs == 0) == (ours == 0)).float().mean() > 0.99
    assert (ours == theirs).float().mean() > 0.98
    assert on_grid(ours, weight, bits) and not ours[~keep].any()
    codes_per_row = max(len(torch.unique(row)) for row in ours)
    assert codes_per_row <= 1 << bits


def test_bits_zero_is_plain_sparsegpt_and_the_flag_is_the_registrys():
    weight, hessian = random_layer(32, 128, seed=0, dead=5)
    stats = LinearStats("layer", hessian=hessian)
    plain = sparsegpt(weight, stats, unstructured(0.5))
    default = get_method("sparsegpt").run(weight, stats, unstructured(0.5))
    assert all(torch.equal(a, b) for a, b in zip(plain, default))
    param = next(p for p in registry.method("sparsegpt").params if p.name == "bits")
    assert param.flag == "--sparsegpt-bits" and param.default == 0
    with pytest.raises(LangpruneError, match="--sparsegpt-bits 5: must be one of 0, 2, 3, 4, 8"):
        get_method("sparsegpt", bits=5)


def test_joint_checkpoint_holds_the_quantized_weights(tmp_path):
    """Through the engine into a sparse checkpoint: the manifest records the bits, and the model
    evaluation loads has every pruned linear's kept weights on a 4-bit grid per row."""
    model_dir = build_model(tmp_path / "model", "llama", hidden=64, intermediate=128, layers=1, seed=2)
    shard = tmp_path / "calib.safetensors"
    ids = torch.randint(3, 320, (8, 32), generator=torch.Generator().manual_seed(5))
    save_file({"input_ids": ids}, str(shard), metadata={"langprune": json.dumps({"languages": ["de"]})})
    out = tmp_path / "ckpt"
    prune_to_checkpoint(PruneRequest(model=str(model_dir), out=out, method="sparsegpt", sparsity=0.5,
                                     calibration=shard, method_params={"bits": 4}, batch_size=4, progress=False))
    manifest = read_manifest(out)
    assert manifest["method_params"] == {"bits": 4} and manifest["structure"] == "unstructured"
    model = load_pruned_model(None, str(out))
    linears = {name: module.weight.detach() for name, module in model.named_modules()
               if isinstance(module, torch.nn.Linear) and ".layers." in name}
    assert linears
    for name, weight in linears.items():
        kept = weight[weight != 0]
        assert (weight == 0).float().mean() >= 0.5, name
        per_row = max(len(torch.unique(row[row != 0])) for row in weight)
        assert per_row <= 15, name  # at most 2**4 codes, one of which is zero
        assert kept.numel() > 0
