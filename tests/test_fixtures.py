"""The shared tiny models load and run: a guard for every other test's fixtures."""

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def test_tiny_models_run(tiny_llama_dir, tiny_cohere_dir):
    for path in (tiny_llama_dir, tiny_cohere_dir):
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path)
        ids = tok("Alle Menschen sind frei", return_tensors="pt").input_ids
        out = model(ids)
        assert out.logits.shape == (1, ids.shape[1], model.config.vocab_size)
        assert torch.isfinite(out.logits).all()
