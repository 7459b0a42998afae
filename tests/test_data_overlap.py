"""Evaluation text must not overlap calibration text; the check hashes word windows."""

from __future__ import annotations

import pytest

from langprune.data.overlap import check_disjoint, effective_window, words
from langprune.data.shards import ShardSpec, build_shard
from langprune.data.sources import TextDirSource
from langprune.errors import LangpruneError


@pytest.fixture(scope="module")
def shard(tmp_path_factory, tiny_tokenizer_dir, text_splits):
    path = tmp_path_factory.mktemp("shard") / "calib.safetensors"
    build_shard(ShardSpec(str(tiny_tokenizer_dir), f"text:{text_splits['calib']}", ["de", "zh"], nsamples=4,
                          seqlen=48, seed=0, packing="concat"), path)
    return path


def text_of(root, lang) -> str:
    return "\n\n".join(d.text for d in TextDirSource(root).documents(lang))


def test_words_normalise_case_and_split_cjk_by_character():
    assert words("Hello, WORLD! 人人生而 abc中文") == ["hello", "world", "人", "人", "生", "而", "abc", "中", "文"]


def test_held_out_text_passes(shard, text_splits):
    check_disjoint({lang: text_of(text_splits["eval"], lang) for lang in ("de", "zh", "en")}, [shard])


def test_calibration_text_reused_for_evaluation_is_an_error(shard, text_splits):
    with pytest.raises(LangpruneError, match=r"'de' overlaps calibration shard .*shared \d+-word windows"):
        check_disjoint({"de": text_of(text_splits["calib"], "de")}, [shard])


def test_a_single_reused_passage_is_found(shard, text_splits):
    from transformers import AutoTokenizer

    from langprune.data.shards import read_shard

    ids, meta = read_shard(shard)
    passage = AutoTokenizer.from_pretrained(meta["tokenizer"]).decode(ids[3].tolist())
    held_out = text_of(text_splits["eval"], "zh")
    with pytest.raises(LangpruneError, match="'zh' overlaps"):
        check_disjoint({"zh": held_out[:200] + passage + held_out[200:]}, [shard])


def test_window_shrinks_to_the_shortest_sample_but_not_below_the_minimum():
    assert effective_window([["a"] * 50, ["b"] * 10], 32) == 10
    assert effective_window([["a"] * 50], 32) == 32
    assert effective_window([["a"]], 32) == 4
    with pytest.raises(LangpruneError, match="--overlap-window"):
        check_disjoint({}, [], window=2)


def test_a_tokenizer_the_caller_holds_is_not_loaded_again(shard, text_splits, tiny_tokenizer_dir, monkeypatch):
    from transformers import AutoTokenizer

    from langprune.data import overlap

    held = AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir))

    def no_second_load(name, **_):
        raise AssertionError(f"tokenizer {name} loaded again")

    monkeypatch.setattr(overlap, "load_tokenizer", no_second_load)
    check_disjoint({"de": text_of(text_splits["eval"], "de")}, [shard], loaded={str(tiny_tokenizer_dir): held})
    with pytest.raises(LangpruneError, match="'de' overlaps"):
        check_disjoint({"de": text_of(text_splits["calib"], "de")}, [shard], loaded={str(tiny_tokenizer_dir): held})
    with pytest.raises(AssertionError, match="loaded again"):
        check_disjoint({"de": "x"}, [shard], loaded={"another/tokenizer": held})
