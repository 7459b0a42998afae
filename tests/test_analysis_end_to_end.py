"""The analyze stage on a tiny random Llama with real wanda checkpoints: files, shapes, CLI, determinism."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

from conftest import SAMPLE_TEXT
from langprune.analysis.drift import run_drift
from langprune.analysis.features import run_features
from langprune.analysis.hidden import run_hidden
from langprune.analysis.masks import run_masks
from langprune.analysis.neurons import run_neurons
from langprune.analysis.states import read_states
from langprune.cli import main
from langprune.errors import LangpruneError

LANGS = ["de", "en", "sw"]
RUNS = [("de", 0), ("de", 1), ("en", 0)]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_llama_dir):
    """Probe text, three wanda checkpoints (de seeds 0/1, en seed 0) and the dense probe states."""
    from transformers import AutoTokenizer

    from langprune.prune import PruneRequest, prune_to_checkpoint

    root = tmp_path_factory.mktemp("analysis")
    env = pytest.MonkeyPatch()
    env.setenv("LANGPRUNE_CACHE", str(root / "cache"))  # keep base-weight hashes out of the home cache
    probe = root / "probe"
    probe.mkdir()
    for lang in LANGS:  # two parallel passages per language
        text = SAMPLE_TEXT[lang]
        (probe / f"{lang}.txt").write_text(f"{text}\n\n{text} {text}\n", encoding="utf-8")
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    checkpoints = []
    for calib, seed in RUNS:
        ids = torch.tensor(tokenizer(SAMPLE_TEXT[calib] * 8)["input_ids"])
        start = torch.randint(0, len(ids) - 32 * 4, (1,), generator=torch.Generator().manual_seed(seed)).item()
        shard = root / f"{calib}{seed}.safetensors"
        save_file({"input_ids": ids[start:start + 32 * 4].reshape(4, 32).contiguous()}, str(shard),
                  metadata={"langprune": json.dumps({"languages": [calib]})})
        out = root / "ckpt" / calib / f"seed{seed}"
        prune_to_checkpoint(PruneRequest(
            str(tiny_llama_dir), out, "wanda", sparsity=0.5, calibration=shard, seed=seed, progress=False,
            tags={"model": "tiny", "method": "wanda", "structure": "unstructured", "sparsity": "0.5", "calib": calib,
                  "seed": str(seed)}))
        checkpoints.append(str(out))
    dense = root / "dense.safetensors"
    common = dict(model=str(tiny_llama_dir), probe=f"text:{probe}", languages=LANGS, max_length=64, batch_size=2)
    run_hidden(outs=[str(dense)], tags={"model": "tiny"}, **common)
    pruned = [str(root / f"pruned{i}.safetensors") for i in range(len(RUNS))]
    run_hidden(outs=pruned, checkpoints=checkpoints, reference=str(dense), **common)
    yield {"root": root, "dense": str(dense), "pruned": pruned, "checkpoints": checkpoints, "common": common}
    env.undo()


def test_probe_states_hold_what_each_analysis_needs(setup):
    tensors, meta = read_states(setup["dense"])
    assert meta["tags"]["method"] == "dense" and meta["n_passages"] == 2
    assert tensors["layers.de"].shape == (2, 2, 64)  # layers x passages x hidden
    assert tensors["final.en"].shape == (2, 64)
    assert tensors["active.sw"].shape == (2, 128) and int(tensors["tokens.sw"]) > 0
    tensors, meta = read_states(setup["pruned"][2])
    assert meta["tags"]["calib"] == "en" and meta["tags"]["seed"] == "0"
    assert "layers.de" not in tensors and tensors["drift.de"].shape == (2,)
    assert bool((tensors["drift.de"] > 0).all())


def test_dense_states_are_deterministic(setup, tmp_path):
    again = tmp_path / "dense.safetensors"
    run_hidden(outs=[str(again)], tags={"model": "tiny"}, **setup["common"])
    first, _ = read_states(setup["dense"])
    second, _ = read_states(again)
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_features_drift_masks_neurons_tables(setup):
    out = setup["root"] / "out"
    run_features(dense=setup["dense"], inputs=setup["pruned"], out_table=str(out / "f.csv"),
                 out_figure=str(out / "f.png"), out_summary=str(out / "f.txt"), out_check=str(out / "fc.csv"))
    features = pd.read_csv(out / "f.csv")
    assert len(features) == len(RUNS) * len(LANGS) * 2 and (features["change"] > 0).all()
    assert (features["rank"] == len(LANGS) - 1).all()
    assert "claim" in (out / "f.txt").read_text()

    run_drift(inputs=setup["pruned"], out_table=str(out / "d.csv"), out_figure=str(out / "d.png"),
              out_summary=str(out / "d.txt"), out_benefit=str(out / "db.csv"))
    drift = pd.read_csv(out / "d.csv")
    assert sorted(drift["layer"].unique()) == [1, 2] and len(drift) == len(RUNS) * len(LANGS) * 2
    assert "layer" in (out / "d.txt").read_text()

    run_masks(checkpoints=setup["checkpoints"], out_table=str(out / "m.csv"), out_matrix=str(out / "mm.csv"),
              out_layers=str(out / "ml.csv"), out_types=str(out / "mt.csv"), out_figure=str(out / "m.png"))
    masks = pd.read_csv(out / "m.csv")
    assert set(masks["linear_type"]) == {"q", "k", "v", "o", "gate", "up", "down"}
    assert set(masks["pair"]) == {"same-language", "cross-language"}
    assert masks["iou"].between(0, 1).all() and (masks["iou"] > 0.2).all()

    run_neurons(dense=setup["dense"], checkpoints=setup["checkpoints"], top_rate=0.1, out_table=str(out / "n.csv"),
                out_neurons=str(out / "nl.csv"), out_figure=str(out / "n.png"), out_summary=str(out / "n.txt"))
    neurons = pd.read_csv(out / "n.csv")
    all_mlp = neurons[(neurons.neuron_language == "all") & (neurons.linear_type == "mlp")]
    assert all_mlp["pruned_share"].round(6).eq(0.5).all()  # wanda prunes exactly half of every row
    for png in ("f.png", "d.png", "m.png", "n.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_runs_and_reports_user_errors(setup, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["analyze", "drift", *setup["pruned"], "--languages", "en,de,sw", "--out-table", str(out / "d.csv"),
                 "--out-figure", str(out / "d.png"), "--out-summary", str(out / "d.txt")]) == 0
    assert main(["analyze", "drift", setup["dense"], "--out-table", str(out / "x.csv"), "--out-figure",
                 str(out / "x.png"), "--out-summary", str(out / "x.txt")]) == 2
    assert "--reference" in capsys.readouterr().err
    with pytest.raises(LangpruneError, match="other probe text"):
        run_hidden(outs=[str(out / "p.safetensors")], checkpoints=setup["checkpoints"][:1], reference=setup["dense"],
                   **{**setup["common"], "max_length": 32})


@pytest.mark.parametrize("arch", ["llama", "cohere"])  # the paper's two model families
def test_hooked_states_match_the_model_outputs_and_ignore_padding(arch, request):
    from langprune.analysis.hidden import collect_states
    from langprune.checkpoint import load_pruned_model
    from langprune.models import load_tokenizer

    model_dir = str(request.getfixturevalue(f"tiny_{arch}_dir"))
    model, tokenizer = load_pruned_model(model_dir), load_tokenizer(model_dir)
    passages = [SAMPLE_TEXT["en"], SAMPLE_TEXT["de"][:30], SAMPLE_TEXT["sw"] * 2]
    batched = collect_states(model, tokenizer, passages, batch_size=3, activations=True)
    single = collect_states(model, tokenizer, passages, batch_size=1, activations=True)
    assert torch.allclose(batched["layers"], single["layers"], atol=1e-5)  # padding does not leak into the mean
    assert torch.equal(batched["active"], single["active"]) and int(batched["tokens"]) == int(single["tokens"])
    ids = tokenizer(passages[0], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        hidden = model(input_ids=ids, output_hidden_states=True).hidden_states
    expected = torch.stack([h[0].float().mean(0) for h in hidden[1:]])  # tiny tokenizer adds no BOS
    assert torch.allclose(single["layers"][:-1, 0], expected[:-1], atol=1e-5)
    assert torch.allclose(single["final"][0], expected[-1], atol=1e-5)


def test_dense_model_against_its_own_reference_has_no_drift(setup, tiny_llama_dir):
    from langprune.analysis.hidden import probe_tensors, read_probe
    from langprune.checkpoint import load_pruned_model
    from langprune.models import load_tokenizer

    reference, _ = read_states(setup["dense"])
    texts = read_probe(setup["common"]["probe"], LANGS)
    tensors = probe_tensors(load_pruned_model(str(tiny_llama_dir)), load_tokenizer(str(tiny_llama_dir)), texts,
                            reference, max_length=64, batch_size=4)  # all languages share batches here
    for lang in LANGS:
        assert torch.allclose(tensors[f"final.{lang}"], reference[f"final.{lang}"], atol=1e-5)
        assert float(tensors[f"drift.{lang}"].max()) < 1e-4
