"""MKQA normalisation and F1 (articles, punctuation, CJK, empty answers, several golds)."""

from __future__ import annotations

import pytest

from langprune.evaluate.mkqa import best_f1, mkqa_docs, normalize_answer, token_f1


@pytest.mark.parametrize("text, lang, tokens", [
    ("The Beatles!", "en", ["beatles"]),
    ("an apple, a pear", "en", ["apple", "pear"]),
    ("Die Brücke", "de", ["brücke"]),
    ("the Brücke", "de", ["the", "brücke"]),  # articles are per language
    ("El Niño", "es", ["niño"]),
    ("柏林市", "zh_cn", ["柏", "林", "市"]),
    ("Berlin（柏林）", "zh_cn", ["berlin", "柏", "林"]),
    ("서울 특별시", "ko", ["서울", "특별시"]),
    ("...", "en", []),
    ("", "en", []),
])
def test_normalisation(text, lang, tokens):
    assert normalize_answer(text, lang) == tokens


def test_f1_counts_shared_tokens():
    assert token_f1("The Berlin Wall", "Berlin", "en") == pytest.approx(2 * 0.5 * 1 / 1.5)
    assert token_f1("berlin", "Berlin.", "en") == 1.0
    assert token_f1("Paris", "Berlin", "en") == 0.0
    assert token_f1("柏林", "柏林市", "zh_cn") == pytest.approx(2 * 1 * (2 / 3) / (1 + 2 / 3))


def test_no_answer_scores_only_when_both_are_empty():
    assert token_f1("", "", "en") == 1.0
    assert token_f1("the", "", "en") == 1.0  # an article alone normalises to nothing
    assert token_f1("", "Berlin", "en") == 0.0
    assert token_f1("Berlin", "", "en") == 0.0


def test_best_gold_wins():
    assert best_f1("Goethe", ["Johann Wolfgang von Goethe", "Goethe"], "de") == 1.0
    assert best_f1("Wolfgang Goethe", ["Johann Wolfgang von Goethe", "J. W. Goethe"], "de") == pytest.approx(2 / 3)
    assert best_f1("x", [], "en") == 0.0


def test_release_rows_become_docs_without_unanswerable_or_long_answers():
    rows = [
        {"example_id": 1, "queries": {"de": "Hauptstadt?"},
         "answers": {"de": [{"type": "entity", "text": "Berlin", "aliases": ["Berlin, Deutschland"]}]}},
        {"example_id": 2, "queries": {"de": "Warum?"}, "answers": {"de": [{"type": "unanswerable", "text": None}]}},
        {"example_id": 3, "queries": {"de": "Wie?"}, "answers": {"de": [{"type": "long_answer", "text": None}]}},
    ]
    assert mkqa_docs(rows, "de") == [{"id": "1", "question": "Hauptstadt?", "lang": "de",
                                      "answers": ["Berlin", "Berlin, Deutschland"]}]
