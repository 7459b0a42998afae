"""`langprune prune` with RIA, DSnoT and OWL allocation: manifests record every hyperparameter."""

from __future__ import annotations

import json
import re

import pytest
import torch
from safetensors.torch import save_file

from langprune.checkpoint import read_manifest
from langprune.cli import main


@pytest.fixture(autouse=True)
def _private_hash_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LANGPRUNE_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def shard(tmp_path_factory):
    path = tmp_path_factory.mktemp("shard") / "calib.safetensors"
    ids = torch.randint(3, 320, (4, 32), generator=torch.Generator().manual_seed(0))
    save_file({"input_ids": ids}, str(path), metadata={"langprune": json.dumps({"languages": ["de"]})})
    return path


def test_ria_with_owl_allocation_records_its_settings(tmp_path, tiny_llama_dir, shard):
    ckpt = tmp_path / "ria"
    assert main(["prune", "--model", str(tiny_llama_dir), "--calibration", str(shard), "--method", "ria",
                 "--sparsity", "0.6", "--allocation", "owl", "--owl-lambda", "0.05", "--ria-a", "0.7",
                 "--out", str(ckpt), "--batch-size", "2"]) == 0
    manifest = read_manifest(ckpt)
    assert manifest["method"] == "ria" and manifest["method_params"] == {"a": 0.7, "per_outneuron": False}
    owl = manifest["allocation"]
    assert owl["name"] == "owl" and owl["M"] == 5.0 and owl["lambda"] == 0.05 and len(owl["outlier_ratios"]) == 2
    assert sum(owl["layer_sparsity"]) / 2 == pytest.approx(0.6)
    for layer, target in zip(manifest["layers"], owl["layer_sparsity"]):
        assert layer["sparsity"] == pytest.approx(target, abs=2e-3)


def test_dsnot_records_its_defaults_and_overrides(tmp_path, tiny_llama_dir, shard):
    ckpt = tmp_path / "dsnot"
    assert main(["prune", "--model", str(tiny_llama_dir), "--calibration", str(shard), "--method", "dsnot",
                 "--sparsity", "0.5", "--dsnot-max-cycles", "5", "--out", str(ckpt)]) == 0
    manifest = read_manifest(ckpt)
    assert manifest["method_params"] == {"initial": "wanda", "max_cycles": 5, "update_threshold": 0.1,
                                         "pow_of_var_regrowing": 1.0, "skip": "mlp"}
    assert manifest["allocation"] == {"name": "uniform"}


@pytest.mark.parametrize("extra,message", [
    (["--method", "wanda", "--sparsity", "0.5", "--ria-a", "1"], "--ria-a applies to --method ria"),
    (["--method", "wanda", "--structure", "2:4", "--allocation", "owl"], "needs unstructured sparsity"),
    (["--method", "magnitude", "--sparsity", "0.5", "--allocation", "owl", "--no-calibration"],
     "--allocation owl needs --calibration"),
    (["--method", "wanda", "--sparsity", "0.95", "--allocation", "owl", "--owl-lambda", "0.1"], ">= 1"),
    (["--method", "dsnot", "--sparsity", "0.5", "--dsnot-initial", "sparsegpt"], "--dsnot-initial 'sparsegpt'"),
    (["--method", "dsnot", "--structure", "2:4"], "unstructured masks only"),
])
def test_bad_method_settings_are_one_line_errors(tmp_path, tiny_llama_dir, shard, capsys, extra, message):
    calibration = [] if "--no-calibration" in extra else ["--calibration", str(shard)]
    extra = [e for e in extra if e != "--no-calibration"]
    rc = main(["prune", "--model", str(tiny_llama_dir), "--out", str(tmp_path / "ckpt"), *calibration, *extra])
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert rc == 2 and len(errors) == 1 and errors[0].startswith("langprune prune: error: ")
    assert re.search(message, errors[0]), errors
    assert not (tmp_path / "ckpt").exists()


def test_cached_owl_ratios_give_the_in_process_masks(tmp_path, tiny_llama_dir, shard):
    """`langprune owl-ratios` once, then any number of OWL runs without their dense pass: same checkpoint."""
    ratios = tmp_path / "ratios.json"
    assert main(["owl-ratios", "--model", str(tiny_llama_dir), "--calibration", str(shard), "--out", str(ratios),
                 "--batch-size", "2"]) == 0
    record = json.loads(ratios.read_text())
    assert record["kind"] == "owl-ratios" and record["M"] == 5.0 and len(record["outlier_ratios"]) == 2
    common = ["prune", "--model", str(tiny_llama_dir), "--calibration", str(shard), "--method", "wanda",
              "--sparsity", "0.6", "--allocation", "owl", "--owl-lambda", "0.05", "--batch-size", "2"]
    assert main([*common, "--out", str(tmp_path / "here")]) == 0
    assert main([*common, "--owl-ratios", str(ratios), "--out", str(tmp_path / "cached")]) == 0
    here, cached = read_manifest(tmp_path / "here"), read_manifest(tmp_path / "cached")
    assert cached["allocation"]["outlier_ratios"] == here["allocation"]["outlier_ratios"]
    assert cached["allocation"]["layer_sparsity"] == here["allocation"]["layer_sparsity"]
    assert cached["files"]["masks.safetensors"] == here["files"]["masks.safetensors"]
    assert cached["allocation"]["seconds"] == 0.0 and "ratios_file" not in here["allocation"]
    assert cached["allocation"]["ratios_file"]["path"] == str(ratios)


def test_stale_or_misplaced_owl_ratios_are_refused(tmp_path, tiny_llama_dir, shard, capsys):
    ratios = tmp_path / "ratios.json"
    assert main(["owl-ratios", "--model", str(tiny_llama_dir), "--calibration", str(shard), "--out", str(ratios)]) == 0
    other = tmp_path / "other.safetensors"
    save_file({"input_ids": torch.randint(3, 320, (4, 32), generator=torch.Generator().manual_seed(9))}, str(other))
    base = ["prune", "--model", str(tiny_llama_dir), "--method", "wanda", "--sparsity", "0.5",
            "--owl-ratios", str(ratios), "--out", str(tmp_path / "c")]
    for extra, message in [
        (["--calibration", str(other), "--allocation", "owl"], "computed for another calibration shard"),
        (["--calibration", str(shard), "--allocation", "owl", "--owl-m", "3"], "computed for another M"),
        (["--calibration", str(shard)], "--owl-ratios applies to --allocation owl"),
    ]:
        assert main([*base, *extra]) == 2
        errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
        assert len(errors) == 1 and errors[0].startswith("langprune prune: error: ") and message in errors[0], errors
        assert "computed for" not in message or "recompute it with `langprune owl-ratios`" in errors[0]
        assert not (tmp_path / "c").exists()
