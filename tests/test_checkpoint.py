"""Sparse checkpoints: round trips, base identity, sizes, atomicity, and the CLI around them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

from conftest import build_model
from langprune.bitmasks import PackedMasks, pack_mask, unpack_mask
from langprune.checkpoint import (
    MANIFEST,
    MASKS,
    VALUES,
    applied,
    apply_checkpoint,
    checkpoint_bytes,
    export_model,
    iter_masks,
    load_pruned_model,
    read_manifest,
    read_masks,
)
from langprune.cli import main
from langprune.errors import LangpruneError
from langprune.prune import PruneRequest, prune_to_checkpoint

pytestmark = pytest.mark.usefixtures("private_hash_cache")


@pytest.fixture(scope="module")
def shard(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("shard") / "calib.safetensors"
    ids = torch.randint(3, 320, (6, 32), generator=torch.Generator().manual_seed(0))
    save_file({"input_ids": ids}, str(path), metadata={"langprune": json.dumps({"languages": ["de"]})})
    return path


def _linear_bytes_bf16(manifest) -> int:
    return sum(2 * torch.Size(info["shape"]).numel() for info in manifest["tensors"].values())


def _payload_bytes(path: Path) -> int:
    """Tensor bytes of a safetensors file, without its JSON header (which dominates only for tiny models)."""
    with open(path, "rb") as f:
        header = int.from_bytes(f.read(8), "little")
    return path.stat().st_size - 8 - header


def _assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for name in sa:
        assert sa[name].dtype == sb[name].dtype and torch.equal(sa[name], sb[name]), name


def test_pack_unpack_round_trip():
    keep = torch.rand(13, 7, generator=torch.Generator().manual_seed(0)) > 0.4
    packed = pack_mask(keep)
    assert packed.dtype == torch.uint8 and packed.numel() == (13 * 7 + 7) // 8
    assert torch.equal(unpack_mask(packed, (13, 7)), keep)
    masks = PackedMasks()
    masks.add("w", keep)
    assert torch.equal(masks["w"], keep) and masks.kept["w"] == int(keep.sum())


@pytest.mark.parametrize("arch,method,structure", [("llama", "sparsegpt", "unstructured"), ("cohere", "wanda", "2:4"),
                                                   ("llama", "magnitude", "4:8")])
def test_save_load_export_round_trip_bit_exact(tmp_path, tiny_llama_dir, tiny_cohere_dir, shard, arch, method,
                                               structure):
    base = str(tiny_llama_dir if arch == "llama" else tiny_cohere_dir)
    sparsity = 0.5 if structure == "unstructured" else None
    outcome = prune_to_checkpoint(PruneRequest(base, tmp_path / "ckpt", method, sparsity=sparsity,
                                               structure=structure, calibration=shard, batch_size=4,
                                               dtype="bfloat16", progress=False, tags={"calib": "de"}))
    manifest = read_manifest(outcome.path)
    assert manifest["method"] == method and manifest["structure"] == structure and manifest["sparsity"] == 0.5
    assert manifest["tags"] == {"calib": "de"} and manifest["calibration"]["shard"] == {"languages": ["de"]}
    assert len(manifest["layers"]) == 2 and all(layer["seconds"] >= 0 for layer in manifest["layers"])
    assert (VALUES in checkpoint_bytes(outcome.path)) == (method == "sparsegpt")

    loaded = load_pruned_model(base, outcome.path)
    _assert_same_weights(outcome.model, loaded)
    export_model(outcome.path, tmp_path / "dense")
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "dense")
    _assert_same_weights(outcome.model, exported)
    assert (tmp_path / "dense" / "tokenizer.json").is_file()

    masks = read_masks(outcome.path)
    for name, keep in masks.items():
        assert torch.equal(keep, outcome.result.masks[name])


def test_applied_restores_the_base_and_iter_masks_reads_one_weight(tmp_path, tiny_llama_dir, shard):
    outcome = prune_to_checkpoint(PruneRequest(str(tiny_llama_dir), tmp_path / "ckpt", "sparsegpt", sparsity=0.5,
                                               calibration=shard, dtype="float32", progress=False))
    base = load_pruned_model(str(tiny_llama_dir), None, dtype="float32")
    before = {name: p.detach().clone() for name, p in base.named_parameters()}
    with applied(base, outcome.path) as pruned:
        _assert_same_weights(outcome.model, pruned)
    after = dict(base.named_parameters())
    assert all(torch.equal(before[name], after[name]) for name in before)
    name = sorted(read_manifest(outcome.path)["tensors"])[-1]
    expected = [(name, outcome.result.masks[name].shape)]
    assert [(n, keep.shape) for n, keep in iter_masks(outcome.path, [name])] == expected
    assert torch.equal(next(iter(dict(iter_masks(outcome.path, [name])).values())), outcome.result.masks[name])


def test_size_targets(tmp_path, tiny_llama_dir, shard):
    for method in ("wanda", "sparsegpt"):
        out = prune_to_checkpoint(PruneRequest(str(tiny_llama_dir), tmp_path / method, method, sparsity=0.5,
                                               calibration=shard, dtype="bfloat16", progress=False)).path
        dense = _linear_bytes_bf16(read_manifest(out))
        sizes = {name: _payload_bytes(out / name) for name in checkpoint_bytes(out)}
        assert sizes[MASKS] <= dense / 16
        if method == "sparsegpt":
            assert sizes[MASKS] + sizes[VALUES] <= 0.6 * dense


def test_base_mismatch_is_rejected(tmp_path, tiny_llama_dir, shard):
    ckpt = prune_to_checkpoint(PruneRequest(str(tiny_llama_dir), tmp_path / "ckpt", "wanda", sparsity=0.5,
                                            calibration=shard, progress=False)).path
    other = build_model(tmp_path / "other", "llama", seed=1)
    with pytest.raises(LangpruneError, match="does not match the checkpoint"):
        load_pruned_model(str(other), ckpt)
    mismatched_shape = AutoModelForCausalLM.from_pretrained(build_model(tmp_path / "wide", "llama", hidden=32))
    with pytest.raises(LangpruneError, match="has a mask for"):
        apply_checkpoint(mismatched_shape, ckpt)


def test_interrupted_write_leaves_no_checkpoint(tmp_path, tiny_llama_dir, monkeypatch):
    import types

    import langprune.checkpoint as checkpoint

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    # Dies after the tensor files are written, while writing the manifest.
    monkeypatch.setattr(checkpoint, "json", types.SimpleNamespace(dumps=crash))
    with pytest.raises(KeyboardInterrupt):
        prune_to_checkpoint(PruneRequest(str(tiny_llama_dir), tmp_path / "out" / "ckpt", "magnitude", sparsity=0.5,
                                         progress=False))
    assert list((tmp_path / "out").iterdir()) == []  # neither the checkpoint nor a temporary is left
    with pytest.raises(LangpruneError, match="manifest.json is missing"):
        read_manifest(tmp_path / "out" / "ckpt")


def test_cli_prune_and_export(tmp_path, tiny_llama_dir, shard, capsys):
    ckpt = tmp_path / "ckpt"
    rc = main(["prune", "--model", str(tiny_llama_dir), "--calibration", str(shard), "--method", "wanda",
               "--sparsity", "0.5", "--out", str(ckpt), "--batch-size", "2", "--tag", "calib=de", "--tag", "seed=0"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "rel. error" in out and "sparsity" in out
    assert read_manifest(ckpt)["tags"] == {"calib": "de", "seed": "0"}
    assert main(["export", str(ckpt), "--out", str(tmp_path / "dense")]) == 0
    assert (tmp_path / "dense" / "config.json").is_file()
    rc = main(["prune", "--model", str(tiny_llama_dir), "--method", "magnitude", "--structure", "2:4",
               "--out", str(tmp_path / "mag")])
    assert rc == 0 and read_manifest(tmp_path / "mag")["calibration"] is None
    rc = main(["prune", "--model", str(tiny_llama_dir), "--calibration", str(shard), "--method", "sparsegpt",
               "--structure", "4:8", "--no-error", "--offload", "--out", str(tmp_path / "sgpt")])
    layers = read_manifest(tmp_path / "sgpt")["layers"]
    assert rc == 0 and all(layer["rel_error"] is None and layer["sparsity"] == 0.5 for layer in layers)


@pytest.mark.parametrize("extra,message", [
    (["--method", "wanda", "--sparsity", "0.5"], "needs --calibration"),
    (["--method", "obs", "--sparsity", "0.5"], "--method: invalid choice: 'obs'"),
    (["--method", "magnitude", "--sparsity", "1.5"], "--sparsity: '1.5' is not a number in \\(0, 1\\)"),
    (["--method", "magnitude", "--structure", "3:2"], "0 < N < M"),
    (["--method", "magnitude", "--structure", "2:4", "--sparsity", "0.6"], "contradicts"),
    (["--method", "magnitude", "--sparsity", "0.5", "--batch-size", "0"], "--batch-size"),
    (["--method", "magnitude", "--sparsity", "0.5", "--dtype", "int3"], "--dtype 'int3'"),
    (["--method", "magnitude", "--sparsity", "0.5", "--device", "tpu"], "--device 'tpu'"),
    (["--method", "wanda", "--sparsity", "0.5", "--calibration", "missing.safetensors"], "does not exist"),
    (["--method", "wanda", "--sparsity", "0.5", "--calibration", "BAD"], "no tensor 'input_ids'"),
    (["--method", "wanda", "--sparsity", "0.5", "--calibration", "FLOAT"], "must be a non-empty int64"),
    (["--method", "wanda", "--sparsity", "0.5", "--calibration", "VOCAB"], "outside \\[0, 320\\)"),
    (["--method", "wanda", "--sparsity", "0.5", "--calibration", "TEXT"], "not a safetensors file"),
])
def test_cli_bad_arguments_are_one_line_errors(tmp_path, tiny_llama_dir, capsys, extra, message):
    bad = {"BAD": {"tokens": torch.zeros(2, 4, dtype=torch.int64)}, "FLOAT": {"input_ids": torch.zeros(2, 4)},
           "VOCAB": {"input_ids": torch.full((2, 4), 999, dtype=torch.int64)}}
    for name, tensors in bad.items():
        save_file(tensors, str(tmp_path / name))
    (tmp_path / "TEXT").write_text("not a shard")
    extra = [str(tmp_path / e) if e in (*bad, "TEXT") else e for e in extra]
    try:
        rc = main(["prune", "--model", str(tiny_llama_dir), "--out", str(tmp_path / "ckpt"), *extra])
    except SystemExit as exc:  # a flag refused by its type, at parse time
        rc = exc.code
    errors = [line for line in capsys.readouterr().err.splitlines() if ": error: " in line]
    assert rc == 2 and len(errors) == 1 and errors[0].startswith("langprune prune: error: ")
    assert re.search(message, errors[0]), errors
    assert not (tmp_path / "ckpt").exists()


def test_cli_bad_tag_and_bad_checkpoint(tmp_path, tiny_llama_dir, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["prune", "--model", str(tiny_llama_dir), "--method", "magnitude", "--sparsity", "0.5",
              "--out", str(tmp_path / "c"), "--tag", "novalue"])
    assert exc.value.code == 2 and "KEY=VALUE" in capsys.readouterr().err
    (tmp_path / "fake").mkdir()
    (tmp_path / "fake" / "manifest.json").write_text(json.dumps({"format": "other"}))
    assert main(["export", str(tmp_path / "fake"), "--out", str(tmp_path / "d")]) == 2
    assert "format" in capsys.readouterr().err


def test_a_weight_updating_checkpoint_without_values_is_refused(tmp_path, tiny_llama_dir, shard):
    """SparseGPT's manifest records that kept weights changed; a copy stripped of the values is refused,
    and so is a manifest from before `updates_weights` was recorded (judged by its method)."""
    ckpt = prune_to_checkpoint(PruneRequest(str(tiny_llama_dir), tmp_path / "ckpt", "sparsegpt", sparsity=0.5,
                                            calibration=shard, progress=False)).path
    manifest = json.loads((ckpt / MANIFEST).read_text())
    assert manifest["updates_weights"] is True
    (ckpt / VALUES).unlink()
    del manifest["files"][VALUES]
    del manifest["manifest_sha256"]  # edited by hand: only an earlier version's manifest has no digest
    for legacy in (False, True):
        if legacy:
            del manifest["updates_weights"]
        (ckpt / MANIFEST).write_text(json.dumps(manifest))
        with pytest.raises(LangpruneError, match="updates the kept weights, but has no values"):
            read_manifest(ckpt)
