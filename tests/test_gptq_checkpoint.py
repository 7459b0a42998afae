"""Quantized checkpoints: GPTQ through the engine, packed codes on disk, verified reads, dequantized evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from conftest import build_model
from langprune.checkpoint import (
    MANIFEST,
    QUANTIZED,
    QUANTIZED_FORMAT,
    applied,
    iter_masks,
    iter_quantized,
    load_pruned_model,
    read_manifest,
)
from langprune.cli import main
from langprune.errors import LangpruneError
from langprune.prune import PruneRequest, prune_to_checkpoint
from langprune.quantized import QuantizedWeight, pack_codes, unpack_codes

pytestmark = pytest.mark.usefixtures("private_hash_cache")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """Input sizes 128 and 256, so groups of 128 fit every linear."""
    return build_model(tmp_path_factory.mktemp("llama128"), "llama", hidden=128, intermediate=256, layers=2, seed=3)


def calibration_ids() -> torch.Tensor:
    return torch.randint(3, 320, (8, 32), generator=torch.Generator().manual_seed(5))


@pytest.fixture(scope="module")
def shard(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("shard") / "calib.safetensors"
    save_file({"input_ids": calibration_ids()}, str(path), metadata={"langprune": json.dumps({"languages": ["de"]})})
    return path


def quantize_to_checkpoint(model_dir: Path, out: Path, shard: Path, **settings):
    """GPTQ through the pruning run (the engine, layer by layer) into a checkpoint; returns (model, result)."""
    outcome = prune_to_checkpoint(PruneRequest(model=str(model_dir), out=out, method="gptq", calibration=shard,
                                               method_params=settings, batch_size=4, progress=False))
    return outcome.model, outcome.result


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_codes_pack_at_their_width_and_back(bits):
    codes = torch.randint(0, 1 << bits, (37, 19), generator=torch.Generator().manual_seed(bits), dtype=torch.uint8)
    packed = pack_codes(codes, bits)
    assert packed.dtype == torch.uint8 and packed.numel() == (37 * 19 * bits + 7) // 8
    assert torch.equal(unpack_codes(packed, bits, (37, 19)), codes)


def test_four_bit_codes_pack_two_to_a_byte_high_nibble_first():
    assert pack_codes(torch.tensor([[1, 2, 15, 0]], dtype=torch.uint8), 4).tolist() == [0x12, 0xF0]


@pytest.mark.parametrize("settings", [dict(bits=4, group_size=128), dict(bits=3, group_size=0, symmetric=True),
                                      dict(bits=4, group_size=128, act_order=True)],
                         ids=["w4g128", "w3-per-row-sym", "w4g128-act"])
def test_checkpoint_round_trip_is_bit_exact(tmp_path, model_dir, settings, shard):
    ckpt = tmp_path / "ckpt"
    ours, result = quantize_to_checkpoint(model_dir, ckpt, shard, **settings)
    manifest = read_manifest(ckpt)
    assert manifest["format"] == QUANTIZED_FORMAT and "structure" not in manifest
    assert manifest["method_params"]["bits"] == settings["bits"] and len(manifest["tensors"]) == 2 * 7
    assert sorted(path.name for path in ckpt.iterdir()) == [MANIFEST, QUANTIZED]
    for name, weight in iter_quantized(ckpt):
        stored = result.quantized[name]
        assert torch.equal(weight.codes, stored.codes) and torch.equal(weight.scales, stored.scales)
        assert torch.equal(weight.zeros, stored.zeros)
    loaded = load_pruned_model(None, ckpt)  # the base named in the manifest, dequantized in memory
    ids = calibration_ids()
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, ours(ids).logits)
    # the base's other weights are untouched, the quantized ones hold 2**bits levels per group at most
    dense = AutoModelForCausalLM.from_pretrained(model_dir)
    changed = {name for name, p in loaded.named_parameters() if not torch.equal(p, dense.get_parameter(name))}
    assert changed == set(manifest["tensors"])
    name, quantized = next(iter_quantized(ckpt))
    first_group = loaded.get_parameter(name)[0, quantized.column_groups() == 0]
    assert len(torch.unique(first_group)) <= 1 << settings["bits"]


def test_applied_restores_the_base_and_masks_are_refused(tmp_path, model_dir, shard):
    ckpt = tmp_path / "ckpt"
    quantize_to_checkpoint(model_dir, ckpt, shard, bits=4, group_size=64)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    with applied(model, ckpt):
        assert not torch.equal(model.get_parameter("model.layers.1.self_attn.o_proj.weight"),
                               before["model.layers.1.self_attn.o_proj.weight"])
    assert all(torch.equal(p, before[name]) for name, p in model.named_parameters())
    with pytest.raises(LangpruneError, match="is quantized .gptq.: it has no pruning masks"):
        next(iter_masks(ckpt))


def test_size_against_dense_bf16(tmp_path, model_dir, shard):
    """4-bit codes + float32 scale and 4-bit zero point per 128 weights: (4 + 32/128 + 4/128) / 16 = 0.268."""
    ckpt = tmp_path / "ckpt"
    quantize_to_checkpoint(model_dir, ckpt, shard, bits=4, group_size=128)
    manifest = read_manifest(ckpt)
    dense_bf16 = sum(2 * torch.Size(info["shape"]).numel() for info in manifest["tensors"].values())
    payload = sum(t.numel() * t.element_size() for t in load_file(str(ckpt / QUANTIZED)).values())
    assert payload / dense_bf16 == pytest.approx((4 + 32 / 128 + 4 / 128) / 16)


def _rewrite(ckpt: Path, change) -> None:
    """Edit the quantized tensors and re-record their hash, so only the structural check can catch it."""
    tensors = load_file(str(ckpt / QUANTIZED))
    change(tensors)
    save_file(tensors, str(ckpt / QUANTIZED))
    manifest = json.loads((ckpt / MANIFEST).read_text())
    from langprune.io import sha256_file
    manifest["files"][QUANTIZED] = sha256_file(ckpt / QUANTIZED)
    (ckpt / MANIFEST).write_text(json.dumps(manifest))


NAME = "model.layers.0.self_attn.q_proj.weight"


@pytest.mark.parametrize("damage,message", [
    (lambda t: t.__setitem__(f"{NAME}.codes", t[f"{NAME}.codes"][:-1].clone()), "codes is U8 .* calls for U8"),
    (lambda t: t.__setitem__(f"{NAME}.scales", t[f"{NAME}.scales"].half()), "scales is F16"),
    (lambda t: t.pop(f"{NAME}.zeros"), "disagree on the quantized tensors"),
], ids=["truncated-codes", "half-scales", "missing-zeros"])
def test_every_read_verifies_the_quantized_tensors(tmp_path, model_dir, damage, message, shard):
    ckpt = tmp_path / "ckpt"
    quantize_to_checkpoint(model_dir, ckpt, shard, bits=4, group_size=128)
    _rewrite(ckpt, damage)
    with pytest.raises(LangpruneError, match=message) as caught:
        load_pruned_model(None, ckpt)
    assert "\n" not in str(caught.value) and "rebuild it" in str(caught.value)


def test_a_tampered_file_fails_its_hash(tmp_path, model_dir, shard):
    ckpt = tmp_path / "ckpt"
    quantize_to_checkpoint(model_dir, ckpt, shard, bits=3, group_size=128)
    with safe_open(str(ckpt / QUANTIZED), framework="pt") as handle:
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    tensors[f"{NAME}.codes"][0] ^= 1
    save_file(tensors, str(ckpt / QUANTIZED))
    with pytest.raises(LangpruneError, match="does not match the SHA-256"):
        read_manifest(ckpt)


def test_dequantize_follows_the_group_index():
    codes = torch.tensor([[0, 3, 1, 2]], dtype=torch.uint8)
    weight = QuantizedWeight(codes, torch.tensor([[1.0, 10.0]]), torch.tensor([[1, 2]], dtype=torch.uint8), 2, 2,
                             False, torch.tensor([1, 0, 0, 1], dtype=torch.int32))
    assert weight.dequantize().tolist() == [[-20.0, 2.0, 0.0, 0.0]]


def test_cli_quantizes_with_the_registry_flags(tmp_path, model_dir, shard, capsys):
    ckpt = tmp_path / "ckpt"
    rc = main(["prune", "--model", str(model_dir), "--method", "gptq", "--gptq-bits", "3", "--gptq-group-size", "64",
               "--gptq-symmetric", "--calibration", str(shard), "--out", str(ckpt), "--batch-size", "4"])
    assert rc == 0, capsys.readouterr().err
    manifest = read_manifest(ckpt)
    assert manifest["format"] == QUANTIZED_FORMAT and manifest["allocation"] == {"name": "uniform"}
    assert manifest["method_params"] == {"bits": 3, "group_size": 64, "symmetric": True, "act_order": False,
                                         "static_groups": False}
    assert manifest["command"][:3] == ["langprune", "prune", "--model"]
    assert all(info["bits"] == 3 and info["groups"] in (2, 4) for info in manifest["tensors"].values())


@pytest.mark.parametrize("flags,words", [
    (["--gptq-bits", "5"], ["argument --gptq-bits", "invalid choice: 5"]),
    (["--gptq-bits", "16"], ["argument --gptq-bits", "integer in [2, 8]"]),
    (["--gptq-group-size", "96"], ["--gptq-group-size 96 does not divide the 128 input columns of model.layers.0"]),
    (["--gptq-group-size", "0", "--gptq-static-groups"], ["--gptq-static-groups needs groups"]),
    (["--sparsity", "0.5"], ["--method gptq quantizes every weight", "drop --sparsity"]),
    (["--structure", "2:4"], ["drop --structure 2:4"]),
    (["--allocation", "owl"], ["--method gptq does not combine with --allocation owl"]),
], ids=["bits-5", "bits-16", "group-not-dividing", "static-without-groups", "sparsity", "structure", "owl"])
def test_cli_bad_quantization_settings_are_one_line_before_the_model_loads(tmp_path, model_dir, shard, capsys,
                                                                           monkeypatch, flags, words):
    import langprune.prune.run

    def never(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(langprune.prune.run, "load_model", never)
    try:
        rc = main(["prune", "--model", str(model_dir), "--method", "gptq", "--calibration", str(shard),
                   "--out", str(tmp_path / "ckpt"), *flags])
    except SystemExit as exc:  # argparse's own usage errors
        rc = exc.code
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error: " in line]
    assert rc == 2 and len(errors) == 1 and errors[0].startswith("langprune prune: error: "), err
    assert all(word in errors[0] for word in words), errors[0]
    assert not (tmp_path / "ckpt").exists()


# ------------------------------------------------------------------ export to compressed-tensors
def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits.float()


@pytest.fixture(scope="module")
def bf16_model_dir(tmp_path_factory, model_dir) -> Path:
    out = tmp_path_factory.mktemp("llama128-bf16")
    AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16).save_pretrained(out)
    return out


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("settings", [dict(bits=4, group_size=128), dict(bits=4, group_size=0, symmetric=True),
                                      dict(bits=3, group_size=128, act_order=True, static_groups=True),
                                      dict(bits=8, group_size=64, symmetric=True)],
                         ids=["w4g128", "w4-per-row-sym", "w3g128-act-static", "w8g64-sym"])
def test_compressed_tensors_export_loads_in_transformers(tmp_path, model_dir, bf16_model_dir, dtype, settings, shard):
    """Dequantized at load (CompressedTensorsConfig(dequantize=True)): the logits are ours, bit for bit.
    Run compressed (transformers' default): symmetric grids only (asymmetric zero points fail to load in this
    transformers/compressed-tensors pair), exact in float32; in bfloat16 the scales are held in bfloat16."""
    from compressed_tensors.compressors.pack_quantized.helpers import unpack_from_int32
    from safetensors.torch import load_file as load_tensors
    from transformers import CompressedTensorsConfig

    from langprune.checkpoint import export_model

    base = model_dir if dtype == "float32" else bf16_model_dir
    ckpt, out = tmp_path / "ckpt", tmp_path / "export"
    quantize_to_checkpoint(base, ckpt, shard, **settings)
    export_model(ckpt, out, format="compressed-tensors")
    config = json.loads((out / "config.json").read_text())["quantization_config"]
    assert config["format"] == "pack-quantized" and config["quant_method"] == "compressed-tensors"
    assert config["config_groups"]["group_0"]["weights"]["num_bits"] == settings["bits"]
    assert config["ignore"] == ["lm_head"]
    stored = load_tensors(str(out / "model.safetensors"))
    for name, weight in iter_quantized(ckpt):  # the packed codes are exactly ours
        module = name.removesuffix(".weight")
        signed = unpack_from_int32(stored[f"{module}.weight_packed"], weight.bits, weight.codes.shape)
        assert torch.equal(signed.to(torch.int16) + (1 << (weight.bits - 1)), weight.codes.to(torch.int16)), name
        assert stored[f"{module}.weight_scale"].dtype == torch.float32 and name not in stored
    ours, ids = load_pruned_model(None, ckpt), calibration_ids()
    expected = _logits(ours, ids)
    at_load = CompressedTensorsConfig(dequantize=True)
    dequantized = AutoModelForCausalLM.from_pretrained(out, quantization_config=at_load)
    assert dequantized.dtype == ours.dtype and torch.equal(_logits(dequantized.eval(), ids), expected)
    if settings.get("symmetric"):
        compressed = _logits(AutoModelForCausalLM.from_pretrained(out).eval(), ids)
        if dtype == "float32":
            assert torch.equal(compressed, expected)
        else:
            torch.testing.assert_close(compressed, expected, rtol=0.02, atol=0.02)


def test_export_sizes_on_disk(tmp_path, model_dir, shard):
    """Quantized linears take 4.3/16 of their bf16 bytes; the rest of the model is stored as it was."""
    from langprune.checkpoint import export_model

    ckpt = tmp_path / "ckpt"
    quantize_to_checkpoint(model_dir, ckpt, shard, bits=4, group_size=128, symmetric=True)
    export_model(ckpt, tmp_path / "dense")
    export_model(ckpt, tmp_path / "ct", format="compressed-tensors")
    dense = (tmp_path / "dense" / "model.safetensors").stat().st_size
    packed = (tmp_path / "ct" / "model.safetensors").stat().st_size
    linears = sum(4 * torch.Size(info["shape"]).numel() for info in read_manifest(ckpt)["tensors"].values())
    assert dense - packed == pytest.approx(linears * (1 - (4 + 32 / 128) / 32), rel=0.01)  # float32 base


@pytest.mark.parametrize("case,words", [
    ("sparse", ["--format compressed-tensors", "sparse checkpoint", "--format dense"]),
    ("act-order", ["--format compressed-tensors", "act-order", "--gptq-static-groups"]),
    ("format", ["--format 'gguf' is not one of: dense, compressed-tensors"]),
])
def test_export_refuses_what_the_format_cannot_hold(tmp_path, model_dir, capsys, case, words, shard):
    ckpt = tmp_path / "ckpt"
    if case == "sparse":  # an OWL-allocated unstructured mask
        prune_to_checkpoint(PruneRequest(model=str(model_dir), out=ckpt, method="wanda", sparsity=0.5,
                                         calibration=shard, allocation="owl", progress=False))
    else:
        quantize_to_checkpoint(model_dir, ckpt, shard, bits=4, group_size=64, act_order=True)
    capsys.readouterr()
    rc = main(["export", str(ckpt), "--out", str(tmp_path / "out"),
               "--format", "gguf" if case == "format" else "compressed-tensors"])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if ": error: " in line]
    assert rc == 2 and len(errors) == 1 and errors[0].startswith("langprune export: error: "), err
    assert all(word in errors[0] for word in words), errors[0]
    assert not (tmp_path / "out").exists()


def test_one_loaded_base_switches_between_quantized_sparse_and_dense(tmp_path, model_dir, shard):
    """Evaluation's shared base applies a quantized checkpoint like a sparse one and restores the base after."""
    from langprune.evaluate.modelload import load_evaluated_model, shared_base

    quantized, sparse = tmp_path / "gptq", tmp_path / "sparsegpt"
    quantize_to_checkpoint(model_dir, quantized, shard, bits=3, group_size=128)
    prune_to_checkpoint(PruneRequest(model=str(model_dir), out=sparse, method="sparsegpt", sparsity=0.5,
                                     calibration=shard, progress=False))
    ids = calibration_ids()
    expected = {ckpt: _logits(load_pruned_model(str(model_dir), ckpt), ids) for ckpt in (quantized, sparse, None)}
    with shared_base() as base:
        for ckpt in (None, quantized, sparse, quantized, None):
            model = load_evaluated_model(str(model_dir), None if ckpt is None else str(ckpt))
            assert torch.equal(_logits(model, ids), expected[ckpt]), ckpt
        assert base.loads == 1
