"""Perplexity and bits-per-byte: equal to a hand computation; budgets, errors, pruned checkpoints."""

from __future__ import annotations

import math

import pytest
import torch

from langprune.cli import main
from langprune.errors import LangpruneError
from langprune.evaluate.perplexity import evaluate_perplexity, make_windows
from langprune.evaluate.units import record_fingerprint, window_fingerprint
from langprune.io import read_json
from langprune.models import bos_prefix

SEQLEN, BUDGET = 16, 70


def hand_metrics(model_dir, text: str, seqlen: int, budget: int) -> tuple[float, float, int]:
    """Perplexity, bits-per-byte and predicted-token count, written out the long way."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    ids = tok(text, add_special_tokens=False)["input_ids"][:budget]
    nll, tokens, nbytes = 0.0, 0, 0
    for k in range(len(ids) // seqlen):
        window = torch.tensor([ids[k * seqlen:(k + 1) * seqlen]])
        with torch.no_grad():
            loss = model(input_ids=window, labels=window).loss.item()  # mean over seqlen-1 predictions
        nll += loss * (seqlen - 1)
        tokens += seqlen - 1
        nbytes += len(tok.decode(window[0, 1:].tolist()).encode("utf-8"))
    return math.exp(nll / tokens), nll / (math.log(2) * nbytes), tokens


@pytest.fixture(scope="module")
def ascii_eval_dir(tmp_path_factory):
    from conftest import SAMPLE_TEXT

    root = tmp_path_factory.mktemp("ascii")
    (root / "en.txt").write_text(f"{SAMPLE_TEXT['en']}\n\n{SAMPLE_TEXT['en'][::-1]}\n\n{SAMPLE_TEXT['en'].upper()}\n")
    return root


def test_perplexity_and_bits_per_byte_equal_a_hand_computation(tmp_path, tiny_llama_dir, ascii_eval_dir):
    out = tmp_path / "ppl.json"
    assert main(["evaluate", "perplexity", "--model", str(tiny_llama_dir), "--source", f"text:{ascii_eval_dir}",
                 "--languages", "en", "--seqlen", str(SEQLEN), "--max-tokens", str(BUDGET), "--tag", "model=tiny",
                 "--out", str(out)]) == 0
    doc = read_json(out)
    values = {r["metric"]: r for r in doc["records"]}
    text = (ascii_eval_dir / "en.txt").read_text().strip()
    ppl, bpb, tokens = hand_metrics(tiny_llama_dir, text, SEQLEN, BUDGET)
    assert tokens == (BUDGET // SEQLEN) * (SEQLEN - 1) == values["perplexity"]["n"]
    assert values["perplexity"]["value"] == pytest.approx(ppl, rel=1e-5)
    assert values["bits_per_byte"]["value"] == pytest.approx(bpb, rel=1e-5)
    assert doc["checkpoint"] is None and doc["checkpoint_hash"] is None and doc["tags"] == {"model": "tiny"}
    assert all(r["benchmark"] == "perplexity" and r["available"] for r in doc["records"])
    units = values["perplexity"]["units"]  # per window: they add up to the aggregate
    assert units["unit"] == "window" and len(units["nll"]) == BUDGET // SEQLEN
    assert sum(units["tokens"]) == tokens and sum(units["bytes"]) == values["perplexity"]["scored_bytes"]
    assert math.fsum(units["nll"]) == values["perplexity"]["nll"]
    # each window's fingerprint is the hash of its token ids; both records name the same data
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    windows = make_windows(text, tok, SEQLEN, BUDGET, "en", bos_prefix(tok)).input_ids
    assert units["fingerprints"] == [window_fingerprint(w) for w in windows]
    assert values["perplexity"]["fingerprint"] == values["bits_per_byte"]["fingerprint"] == record_fingerprint(units)
    assert len(set(units["fingerprints"])) == len(windows)


def test_windows_do_not_overlap_and_respect_the_budget(tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    text = "Alle Menschen sind frei und gleich an Würde und Rechten geboren. " * 10
    ids = tok(text, add_special_tokens=False)["input_ids"]
    windows = make_windows(text, tok, 8, 50, "de")
    assert windows.input_ids == [ids[i * 8:(i + 1) * 8] for i in range(6)]
    with pytest.raises(LangpruneError, match="'de' has \\d+ tokens .*--seqlen 5000"):
        make_windows(text, tok, 5000, 10000, "de")


def test_evaluating_calibration_text_is_an_error(tmp_path, tiny_llama_dir, text_splits):
    shard = tmp_path / "calib.safetensors"
    assert main(["calibrate", "--tokenizer", str(tiny_llama_dir), "--source", f"text:{text_splits['calib']}",
                 "--languages", "ru", "--nsamples", "4", "--seqlen", "32", "--packing", "concat",
                 "--out", str(shard)]) == 0
    common = dict(languages=["ru"], seqlen=16, max_tokens=10**6, calibration=[str(shard)])  # reads all documents
    with pytest.raises(LangpruneError, match="'ru' overlaps calibration shard"):
        evaluate_perplexity(str(tiny_llama_dir), f"text:{text_splits['calib']}", out=tmp_path / "x.json", **common)
    evaluate_perplexity(str(tiny_llama_dir), f"text:{text_splits['eval']}", out=tmp_path / "ok.json", **common)
    assert read_json(tmp_path / "ok.json")["settings"]["calibration"] == [str(shard)]


def test_pruned_checkpoint_is_evaluated_in_memory(tmp_path, tiny_llama_dir, text_splits):
    ckpt = tmp_path / "ckpt"
    assert main(["prune", "--model", str(tiny_llama_dir), "--method", "magnitude", "--sparsity", "0.5",
                 "--tag", "calib=none", "--tag", "method=magnitude", "--out", str(ckpt)]) == 0
    args = ["evaluate", "perplexity", "--model", str(tiny_llama_dir), "--source", f"text:{text_splits['eval']}",
            "--languages", "de", "--seqlen", "16", "--max-tokens", "64"]
    assert main(args + ["--out", str(tmp_path / "dense.json")]) == 0
    assert main(args + ["--checkpoint", str(ckpt), "--tag", "seed=7", "--out", str(tmp_path / "pruned.json")]) == 0
    dense, pruned = read_json(tmp_path / "dense.json"), read_json(tmp_path / "pruned.json")
    assert pruned["checkpoint_hash"] and len(pruned["checkpoint_hash"]) == 64
    assert pruned["tags"] == {"calib": "none", "method": "magnitude", "seed": "7"}
    assert pruned["records"][0]["value"] != pytest.approx(dense["records"][0]["value"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "dense.json", "pruned.json"]  # no dense copy


def test_bad_budgets_and_languages_are_clear_errors(tmp_path, tiny_llama_dir, text_splits):
    with pytest.raises(LangpruneError, match="--max-tokens >= --seqlen"):
        evaluate_perplexity(str(tiny_llama_dir), f"text:{text_splits['eval']}", ["de"], 16, 8, tmp_path / "x")
    with pytest.raises(LangpruneError, match="xx not found"):
        evaluate_perplexity(str(tiny_llama_dir), f"text:{text_splits['eval']}", ["xx"], 16, 64, tmp_path / "x")


def test_uncached_hub_model_offline_is_a_clear_error_naming_it(tmp_path, text_splits, capsys):
    code = main(["evaluate", "perplexity", "--model", "no-such-org/no-such-model", "--source",
                 f"text:{text_splits['eval']}", "--languages", "de", "--seqlen", "16", "--max-tokens", "64",
                 "--out", str(tmp_path / "x.json")])
    err = capsys.readouterr().err
    first = err.splitlines()[0]
    assert code == 2 and first.startswith("langprune evaluate: error: tokenizer 'no-such-org/no-such-model'")
    assert "not in the Hugging Face cache" in first and "langprune prefetch --configfile" in first


@pytest.fixture(scope="module")
def bos_llama_dir(tmp_path_factory, tiny_llama_dir):
    """The tiny Llama with a tokenizer that starts every encoding with BOS, as Gemma's does."""
    import shutil

    from tokenizers.processors import TemplateProcessing
    from transformers import AutoTokenizer

    out = tmp_path_factory.mktemp("bos") / "model"
    shutil.copytree(tiny_llama_dir, out)
    tok = AutoTokenizer.from_pretrained(out)
    tok.backend_tokenizer.post_processor = TemplateProcessing(single=f"{tok.bos_token} $A",
                                                              special_tokens=[(tok.bos_token, tok.bos_token_id)])
    tok.save_pretrained(out)
    assert AutoTokenizer.from_pretrained(out)("x")["input_ids"][0] == tok.bos_token_id
    return out


def test_bos_windows_and_chunked_loss_equal_plain_transformers(tmp_path, bos_llama_dir, ascii_eval_dir, monkeypatch):
    """With a BOS tokenizer every window is BOS + seqlen-1 text tokens, all predicted; the loss,
    computed 3 tokens at a time here, equals transformers' own loss on the same windows."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import langprune.evaluate.perplexity as perplexity

    monkeypatch.setattr(perplexity, "LOGIT_CHUNK_BYTES", 3 * 4 * 320)
    out = tmp_path / "ppl.json"
    evaluate_perplexity(str(bos_llama_dir), f"text:{ascii_eval_dir}", ["en"], SEQLEN, BUDGET, out, batch_size=2)
    doc = read_json(out)
    values = {r["metric"]: r for r in doc["records"]}
    assert doc["settings"]["bos"] is True

    tok = AutoTokenizer.from_pretrained(bos_llama_dir)
    model = AutoModelForCausalLM.from_pretrained(bos_llama_dir).eval()
    ids = tok((ascii_eval_dir / "en.txt").read_text().strip(), add_special_tokens=False)["input_ids"][:BUDGET]
    step = SEQLEN - 1
    nll, tokens = 0.0, 0
    for k in range(len(ids) // step):
        window = torch.tensor([[tok.bos_token_id] + ids[k * step:(k + 1) * step]])
        with torch.no_grad():
            nll += model(input_ids=window, labels=window).loss.item() * step
        tokens += step
    assert values["perplexity"]["n"] == tokens == (BUDGET // step) * step
    assert values["perplexity"]["value"] == pytest.approx(math.exp(nll / tokens), rel=1e-4)


def test_shards_start_with_bos_exactly_when_the_tokenizer_does(tmp_path, bos_llama_dir, tiny_llama_dir, text_splits):
    from transformers import AutoTokenizer

    from langprune.data.shards import read_shard

    for model, bos in ((bos_llama_dir, True), (tiny_llama_dir, False)):
        shard = tmp_path / f"{bos}.safetensors"
        assert main(["calibrate", "--tokenizer", str(model), "--source", f"text:{text_splits['calib']}",
                     "--languages", "de", "--nsamples", "3", "--seqlen", "16", "--packing", "concat",
                     "--out", str(shard)]) == 0
        ids, meta = read_shard(shard)
        bos_id = AutoTokenizer.from_pretrained(model).bos_token_id
        assert meta["bos"] is bos and ids.shape == (3, 16)
        assert bool((ids[:, 0] == bos_id).all()) is bos and int((ids[:, 1:] == bos_id).sum()) == 0


def test_a_head_that_does_not_reproduce_the_logits_is_a_clear_error(tiny_llama_dir, monkeypatch):
    from transformers import AutoModelForCausalLM

    import langprune.evaluate.perplexity as perplexity

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    model.config.final_logit_softcapping = 0.5  # a transform the model's own forward does not apply
    with pytest.raises(LangpruneError, match="does not reproduce the model's logits"):
        perplexity.window_nll(model, [[3, 4, 5, 6]])
