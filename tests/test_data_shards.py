"""Calibration shards: shares of a mix, determinism, both packings and their errors, metadata."""

from __future__ import annotations

import json

import pytest
import torch

from langprune.cli import main
from langprune.data.shards import ShardSpec, allocate, build_shard, read_shard
from langprune.data.sources import Mc4Source, TextDirSource, mc4_data_files, parse_source, split_paragraphs
from langprune.errors import LangpruneError


def spec(tokenizer, source, languages, **kw) -> ShardSpec:
    base = dict(tokenizer=str(tokenizer), source=f"text:{source}", languages=languages, nsamples=6, seqlen=16,
                seed=0, packing="document")
    return ShardSpec(**{**base, **kw})


@pytest.mark.parametrize("nsamples, languages, weights, expected", [
    (128, ["de", "en"], None, {"de": 64, "en": 64}),
    (128, ["ar", "de", "en"], None, {"ar": 43, "de": 43, "en": 42}),
    (128, list("abcdefg"), None, dict(zip("abcdefg", [19, 19, 18, 18, 18, 18, 18]))),
    (10, ["de", "en"], [1, 3], {"de": 3, "en": 7}),
    (8, ["de", "en"], [0, 1], {"de": 0, "en": 8}),
])
def test_mixes_split_the_budget_in_shares(nsamples, languages, weights, expected):
    assert allocate(nsamples, languages, weights) == expected


def test_bad_weights_are_rejected():
    with pytest.raises(LangpruneError, match="--weights"):
        allocate(8, ["de", "en"], [1])
    with pytest.raises(LangpruneError, match="--nsamples"):
        allocate(0, ["de"])


def test_same_arguments_give_a_byte_identical_shard(tmp_path, tiny_tokenizer_dir, text_splits):
    args = ["calibrate", "--tokenizer", str(tiny_tokenizer_dir), "--source", f"text:{text_splits['calib']}",
            "--languages", "de,en,zh", "--nsamples", "7", "--seqlen", "16", "--seed", "3"]
    assert main(args + ["--out", str(tmp_path / "a.safetensors")]) == 0
    assert main(args + ["--out", str(tmp_path / "b.safetensors")]) == 0
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()
    assert main(args[:-1] + ["4", "--out", str(tmp_path / "c.safetensors")]) == 0
    assert (tmp_path / "a.safetensors").read_bytes() != (tmp_path / "c.safetensors").read_bytes()


def test_shard_holds_windows_and_metadata(tmp_path, tiny_tokenizer_dir, text_splits):
    meta = build_shard(spec(tiny_tokenizer_dir, text_splits["calib"], ["de", "sw"], nsamples=5), tmp_path / "s.st")
    ids, stored = read_shard(tmp_path / "s.st")
    assert ids.dtype == torch.int64 and list(ids.shape) == [5, 16]
    assert stored == json.loads(json.dumps(meta))
    assert stored["counts"] == {"de": 3, "sw": 2} and stored["packing"] == "document" and stored["seed"] == 0
    assert stored["tokenizer"] == str(tiny_tokenizer_dir)
    docs = stored["per_language"]["de"]["documents"]
    assert len(docs) == 3 and all(len(d["sha256"]) == 64 and d["doc"].startswith("de.txt#") for d in docs)
    assert 0.0 <= stored["purity"] <= 1.0


def test_document_windows_come_from_the_named_documents(tmp_path, tiny_tokenizer_dir, text_splits):
    from transformers import AutoTokenizer

    build_shard(spec(tiny_tokenizer_dir, text_splits["calib"], ["es"], nsamples=4), tmp_path / "s.st")
    ids, meta = read_shard(tmp_path / "s.st")
    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    docs = {d.id: d.text for d in TextDirSource(text_splits["calib"]).documents("es")}
    for row, prov in zip(ids.tolist(), meta["per_language"]["es"]["documents"]):
        full = tok(docs[prov["doc"]], add_special_tokens=False)["input_ids"]
        assert len(full) > 16 and full[prov["start"]:prov["start"] + 16] == row


def test_a_language_alone_is_a_prefix_of_its_share_in_a_mix(tmp_path, tiny_tokenizer_dir, text_splits):
    build_shard(spec(tiny_tokenizer_dir, text_splits["calib"], ["de"], nsamples=3), tmp_path / "de.st")
    build_shard(spec(tiny_tokenizer_dir, text_splits["calib"], ["de", "en"], nsamples=4), tmp_path / "mix.st")
    alone, mix = read_shard(tmp_path / "de.st")[0], read_shard(tmp_path / "mix.st")[0]
    assert torch.equal(alone[:2], mix[:2])


def test_bounded_search_fails_with_the_count_and_suggests_concat(tmp_path, tiny_tokenizer_dir, text_splits):
    with pytest.raises(LangpruneError, match=r"found only \d+ documents longer than 200 tokens.*--packing concat"):
        build_shard(spec(tiny_tokenizer_dir, text_splits["calib"], ["sw"], nsamples=30, seqlen=200), tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_concat_packing_joins_documents_with_eos(tmp_path, tiny_tokenizer_dir, text_splits):
    meta = build_shard(spec(tiny_tokenizer_dir, text_splits["calib"], ["sw"], nsamples=4, seqlen=200,
                            packing="concat"), tmp_path / "c.st")
    ids = read_shard(tmp_path / "c.st")[0]
    assert list(ids.shape) == [4, 200] and (ids == 1).any()  # 1 = the tiny tokenizer's </s>
    assert len(meta["per_language"]["sw"]["documents"]) > 4
    with pytest.raises(LangpruneError, match=r"only \d+ tokens .* need 200000"):
        build_shard(spec(tiny_tokenizer_dir, text_splits["calib"], ["sw"], nsamples=1000, seqlen=200,
                         packing="concat"), tmp_path / "d.st")


def test_unknown_language_and_empty_corpus_are_clear_errors(tmp_path, tiny_tokenizer_dir, text_splits):
    with pytest.raises(LangpruneError, match="xx not found .*found: ar, de"):
        build_shard(spec(tiny_tokenizer_dir, text_splits["calib"], ["xx"]), tmp_path / "x")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "de.txt").write_text("\n\n  \n")
    with pytest.raises(LangpruneError, match="corpus for 'de' .* is empty"):
        build_shard(spec(tiny_tokenizer_dir, tmp_path / "empty", ["de"]), tmp_path / "x")
    with pytest.raises(LangpruneError, match="unknown language code"):
        build_shard(ShardSpec(str(tiny_tokenizer_dir), "mc4", ["klingon"], nsamples=1, seqlen=4, seed=0),
                    tmp_path / "x")


def test_cli_reports_errors_as_one_line(tmp_path, tiny_tokenizer_dir, text_splits, capsys):
    code = main(["calibrate", "--tokenizer", str(tiny_tokenizer_dir), "--source", f"text:{text_splits['calib']}",
                 "--languages", "de,de", "--nsamples", "2", "--seqlen", "8", "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "more than once" in err


def test_text_dir_documents_are_paragraphs_or_files(tmp_path):
    (tmp_path / "de.txt").write_text("eins zwei\ndrei\n\n \n\nvier\n\n\n")
    (tmp_path / "en").mkdir()
    (tmp_path / "en" / "b.txt").write_text("second\n\nstill second")
    (tmp_path / "en" / "a.txt").write_text("first")
    source = parse_source(f"text:{tmp_path}")
    assert [d.text for d in source.documents("de")] == ["eins zwei\ndrei", "vier"]
    assert [(d.id, d.text) for d in source.documents("en")] == [("en/a.txt", "first"),
                                                               ("en/b.txt", "second\n\nstill second")]
    assert split_paragraphs("a\n  \nb") == ["a", "b"]
    with pytest.raises(LangpruneError, match="not a directory"):
        parse_source(f"text:{tmp_path / 'missing'}")
    with pytest.raises(LangpruneError, match="'mc4' or 'text:DIR'"):
        parse_source("c4")


def test_mc4_file_names_and_offline_error():
    assert mc4_data_files("sw", "train") == ["multilingual/c4-sw.tfrecord-00000-of-*.json.gz"]
    assert mc4_data_files("de", "validation", shards=2) == [
        "multilingual/c4-de-validation.tfrecord-00000-of-*.json.gz",
        "multilingual/c4-de-validation.tfrecord-00001-of-*.json.gz"]
    offline = r"allenai/c4 is not in the Hugging Face cache .*offline.*langprune prefetch --configfile"
    with pytest.raises(LangpruneError, match=offline):
        Mc4Source().documents("sw", "validation", limit=1)


def test_mc4_reads_files_from_the_hub_cache_offline(tmp_path, tiny_tokenizer_dir):
    """A copied HF cache (as `huggingface-cli download` leaves it) is enough; no network is touched."""
    import gzip

    commit = "0" * 40
    repo = tmp_path / "datasets--allenai--c4"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    folder = repo / "snapshots" / commit / "multilingual"
    folder.mkdir(parents=True)
    rows = [{"text": f"Habari ya dunia {i}. " * (5 + i), "timestamp": "x", "url": f"u{i}"} for i in range(12)]
    with gzip.open(folder / "c4-sw.tfrecord-00000-of-00512.json.gz", "wt") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    source = Mc4Source(cache_dir=str(tmp_path))
    docs = source.documents("sw", "train", limit=10)
    assert [d.id for d in docs[:2]] == ["mc4/sw/train/0", "mc4/sw/train/1"] and docs[3].text == rows[3]["text"]
    assert len(docs) == 10
    from transformers import AutoTokenizer

    from langprune.data.shards import language_rng, sample_documents

    tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    sample = sample_documents(docs, tokenizer, 3, 12, language_rng(0, "sw"), "sw")
    assert len(sample.windows) == 3 and all(len(w) == 12 for w in sample.windows)
