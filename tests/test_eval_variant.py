"""One model load per variant: `langprune evaluate variant` writes what the per-benchmark commands write."""

from __future__ import annotations

import json
import re

import pytest
import torch
from safetensors.torch import save_file

from langprune.cli import main
from langprune.io import read_json

pytestmark = pytest.mark.usefixtures("private_hash_cache")


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_llama_dir, text_splits):
    root = tmp_path_factory.mktemp("variant")
    shard = root / "calib.safetensors"
    ids = torch.randint(3, 320, (4, 32), generator=torch.Generator().manual_seed(0))
    save_file({"input_ids": ids}, str(shard), metadata={"langprune": json.dumps({"languages": ["de"]})})
    model = str(tiny_llama_dir)
    assert main(["prune", "--model", model, "--method", "magnitude", "--structure", "2:4",
                 "--out", str(root / "mag24")]) == 0
    assert main(["prune", "--model", model, "--method", "magnitude", "--sparsity", "0.7",
                 "--out", str(root / "mag70")]) == 0
    assert main(["prune", "--model", model, "--calibration", str(shard), "--method", "sparsegpt", "--sparsity", "0.5",
                 "--no-error", "--out", str(root / "sgpt")]) == 0
    assert main(["evaluate", "make-mc", "--source", f"text:{text_splits['eval']}", "--languages", "de,en",
                 "--n-items", "6", "--out", str(root / "mc")]) == 0
    runs = [f"perplexity --source text:{text_splits['eval']} --languages de,en --seqlen 16 --max-tokens 64 "
            f"--out perplexity.json",
            f"tasks --tasks udhr_mc --languages de,en --task-data {root / 'mc'} --limit 4 --batch-size 2 "
            f"--out udhr_mc.json"]
    return {"root": root, "model": model, "runs": runs}


def test_shared_base_switches_checkpoints_exactly(setup):
    """Dense -> sgpt -> 2:4 -> dense in one process equals loading each from disk."""
    from langprune.checkpoint import load_pruned_model
    from langprune.evaluate.modelload import shared_base

    root, model = setup["root"], setup["model"]
    with shared_base() as base:
        for ckpt in [None, root / "sgpt", root / "mag24", None, root / "sgpt"]:
            got = base.model_for(model, None if ckpt is None else str(ckpt), dtype=None, device="cpu",
                                 revision=None).state_dict()
            want = load_pruned_model(model, ckpt).state_dict()
            assert all(torch.equal(got[k], want[k]) for k in want), ckpt
        assert base.loads == 1


def test_one_load_writes_every_benchmark_of_every_variant(setup, monkeypatch, tmp_path):
    import langprune.checkpoint
    import langprune.evaluate.modelload
    import langprune.models

    root, model, runs = setup["root"], setup["model"], setup["runs"]
    loads = []
    real = langprune.models.load_model
    for module in (langprune.checkpoint, langprune.evaluate.modelload):  # each binds load_model at import
        monkeypatch.setattr(module, "load_model", lambda *a, **k: loads.append(a) or real(*a, **k))
    variants = {"dense": tmp_path / "dense", str(root / "mag24"): tmp_path / "mag24",
                str(root / "mag70"): tmp_path / "m70"}
    argv = ["evaluate", "variant", "--model", model, "--tag", "model=tiny"]
    for ckpt, out in variants.items():
        argv += ["--checkpoint", ckpt, "--out-dir", str(out)]
    for run in runs:
        argv += ["--run", run]
    assert main(argv) == 0
    assert len(loads) == 1
    for ckpt, out in variants.items():  # the same files as one `langprune evaluate` process per benchmark
        for run, name in zip(runs, ["perplexity.json", "udhr_mc.json"]):
            alone = tmp_path / "alone" / out.name
            flags = ["--checkpoint", ckpt] if ckpt != "dense" else []
            words = run.split()
            words[words.index("--out") + 1] = str(alone / name)
            assert main(["evaluate", *words, "--model", model, *flags, "--tag", "model=tiny"]) == 0
            together, separate = read_json(out / name), read_json(alone / name)
            assert together["checkpoint"] == (None if ckpt == "dense" else ckpt)
            for key in ("records", "settings", "tags", "checkpoint_hash"):
                assert together[key] == separate[key], (ckpt, name, key)


@pytest.mark.parametrize("extra,message", [
    (["--checkpoint", "a", "--checkpoint", "b", "--out-dir", "x"], "2 --checkpoint value.*1 --out-dir"),
    (["--out-dir", "x", "--run", "tasks --tasks arc --model m --out a.json"], "sets --model"),
    (["--out-dir", "x", "--run", "gather a.json --out b.csv"], "must start with perplexity or tasks"),
    (["--out-dir", "x", "--run", "tasks --tasks arc --languages de"], "needs --out FILE"),
])
def test_bad_variant_arguments_are_one_line_errors(extra, message, capsys):
    argv = ["evaluate", "variant", "--model", "m", *extra]
    if "--run" not in extra:
        argv += ["--run", "tasks --tasks arc --languages de --out arc.json"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("langprune evaluate: error:") and re.search(message, err)
