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
    (["--out-dir", "x", "--run", "gather a.json --out b.csv"], "must start with perplexity, tasks or hidden"),
    (["--out-dir", "x", "--run", "tasks --tasks arc --languages de"], "needs --out FILE"),
])
def test_bad_variant_arguments_are_one_line_errors(extra, message, capsys):
    argv = ["evaluate", "variant", "--model", "m", *extra]
    if "--run" not in extra:
        argv += ["--run", "tasks --tasks arc --languages de --out arc.json"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("langprune evaluate: error:") and re.search(message, err)


def _states(path):
    from langprune.analysis.states import read_states

    tensors, meta = read_states(path)
    return tensors, {k: v for k, v in meta.items() if k != "reference"}


def test_probe_states_from_the_evaluation_job_equal_the_analysis_pass(setup, text_splits, tmp_path, monkeypatch):
    """A `hidden` run inside `evaluate variant` (one load for probe pass and benchmarks) writes the
    same probe-states file, value for value, as `langprune analyze hidden` on its own."""
    import langprune.evaluate.modelload

    root, model, runs = setup["root"], setup["model"], setup["runs"]
    probe = f"--probe text:{text_splits['eval']} --languages de,en,zh --max-passages 3 --max-length 24 --batch-size 2"
    alone = tmp_path / "alone"
    assert main(["analyze", "hidden", "--model", model, *probe.split(), "--tag", "model=tiny",
                 "--out", str(alone / "dense.safetensors")]) == 0
    assert main(["analyze", "hidden", "--model", model, *probe.split(), "--tag", "model=tiny",
                 "--reference", str(alone / "dense.safetensors"), "--checkpoint", str(root / "sgpt"),
                 str(root / "mag24"), "--out", str(alone / "sgpt.safetensors"), str(alone / "mag24.safetensors")]) == 0

    loads = []
    real = langprune.evaluate.modelload.load_model
    monkeypatch.setattr(langprune.evaluate.modelload, "load_model", lambda *a, **k: loads.append(a) or real(*a, **k))
    together = tmp_path / "together"
    assert main(["evaluate", "variant", "--model", model, "--tag", "model=tiny", "--out-dir", str(together / "dense"),
                 "--run", f"hidden {probe} --out states.safetensors", *[w for r in runs for w in ("--run", r)]]) == 0
    argv = ["evaluate", "variant", "--model", model, "--tag", "model=tiny"]
    for name in ("sgpt", "mag24"):
        argv += ["--checkpoint", str(root / name), "--out-dir", str(together / name)]
    reference = together / "dense" / "states.safetensors"
    argv += ["--run", f"hidden {probe} --reference {reference} --out states.safetensors", "--run", runs[1]]
    assert main(argv) == 0
    assert len(loads) == 2  # one per `evaluate variant`, the probe passes included
    for name in ("dense", "sgpt", "mag24"):
        (want, want_meta), (got, got_meta) = _states(alone / f"{name}.safetensors"), _states(together / name /
                                                                                              "states.safetensors")
        assert got_meta == want_meta and sorted(got) == sorted(want), name
        assert all(torch.equal(got[k], want[k]) for k in want), name
    assert (together / "sgpt" / "udhr_mc.json").is_file()


def test_bfloat16_evaluation_runs_close_to_float32(setup, text_splits, tmp_path):
    """`--dtype bfloat16` (what `evaluation.dtype` passes) loads, scores and probes the model in bfloat16."""
    model, runs = setup["model"], setup["runs"]
    probe = f"--probe text:{text_splits['eval']} --languages de,en --max-passages 3 --max-length 24"
    docs = {}
    for dtype in ("float32", "bfloat16"):
        out = tmp_path / dtype
        assert main(["evaluate", "variant", "--model", model, "--dtype", dtype,
                     "--out-dir", str(out), "--run", f"hidden {probe} --out states.safetensors",
                     *[w for r in runs for w in ("--run", r)]]) == 0
        docs[dtype] = {name: read_json(out / name) for name in ("perplexity.json", "udhr_mc.json")}
        docs[dtype]["states"] = _states(out / "states.safetensors")[0]
    assert docs["bfloat16"]["perplexity.json"]["settings"]["dtype"] == "bfloat16"
    assert docs["bfloat16"]["perplexity.json"]["records"] != docs["float32"]["perplexity.json"]["records"]
    for want, got in zip(docs["float32"]["perplexity.json"]["records"], docs["bfloat16"]["perplexity.json"]["records"]):
        assert got["value"] == pytest.approx(want["value"], rel=0.05)
    assert [r["n"] for r in docs["bfloat16"]["udhr_mc.json"]["records"]] == [4, 4]
    for key, want in docs["float32"]["states"].items():  # pooled in float32; a few neurons near 0 flip sign
        got, atol = docs["bfloat16"]["states"][key], 0.05 if want.is_floating_point() else 2
        assert got.dtype == want.dtype and torch.allclose(got.double(), want.double(), rtol=0.05, atol=atol), key
