"""MKQA (closed-book QA) scoring: answer normalisation and token F1, as in the MKQA paper.

Normalisation: NFKC + lowercase, punctuation removed, articles of the answer language
removed, whitespace collapsed; Chinese and Japanese characters are each a token because
those languages write without spaces (Korean keeps its space-separated words; Thai and
Khmer, not in the paper, are not segmented). F1 is the best over all gold answers (and
their aliases). An empty gold ("no answer") scores 1 only against an empty
prediction, and an empty prediction scores 0 against any non-empty gold.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter

# Whole-word articles per MKQA language code (the part before "_", e.g. zh_cn -> zh).
ARTICLES = {
    "en": ["a", "an", "the"],
    "de": ["der", "die", "das", "des", "dem", "den", "ein", "eine", "einer", "eines", "einem", "einen"],
    "es": ["el", "la", "los", "las", "un", "una", "unos", "unas"],
    "fr": ["le", "la", "les", "l", "un", "une", "des"],
    "it": ["il", "lo", "la", "i", "gli", "le", "l", "un", "uno", "una"],
    "pt": ["o", "a", "os", "as", "um", "uma", "uns", "umas"],
    "nl": ["de", "het", "een"],
    "sv": ["en", "ett"],
    "da": ["en", "et"],
    "no": ["en", "et", "ei"],
}
CJK = r"\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"  # kana and Han; Korean keeps its spaces
TOKEN = re.compile(rf"[{CJK}]|[^\s{CJK}]+")


def _strip_punctuation(text: str) -> str:
    """Remove every Unicode punctuation character (categories P*), replacing it by a space."""
    return "".join(" " if unicodedata.category(ch).startswith("P") else ch for ch in text)


def normalize_answer(text: str, lang: str = "en") -> list[str]:
    """Tokens of a normalised answer (empty list for an empty or punctuation-only answer)."""
    text = _strip_punctuation(unicodedata.normalize("NFKC", text or "").lower())
    articles = set(ARTICLES.get(lang.split("_")[0], []))
    return [t for t in TOKEN.findall(text) if t not in articles]


def token_f1(prediction: str, gold: str, lang: str = "en") -> float:
    """F1 of shared normalised tokens; empty-vs-empty is a match (MKQA's "no answer")."""
    pred, ref = normalize_answer(prediction, lang), normalize_answer(gold, lang)
    if not pred or not ref:
        return float(pred == ref)
    same = sum((Counter(pred) & Counter(ref)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)


def best_f1(prediction: str, golds: list[str], lang: str = "en") -> float:
    """MKQA scores a prediction against its closest gold answer."""
    return max((token_f1(prediction, g, lang) for g in golds), default=0.0)


# Answer types dropped as in the paper (6,758 examples remain): unanswerable and long answers.
EXCLUDED_TYPES = {"unanswerable", "long_answer"}


def answer_strings(answers: list[dict]) -> list[str]:
    """Gold strings of one MKQA answer list: each answer's text and aliases."""
    golds = []
    for answer in answers:
        golds += [answer.get("text") or ""] + list(answer.get("aliases") or [])
    return list(dict.fromkeys(golds))


def mkqa_docs(rows, lang: str) -> list[dict]:
    """Turn MKQA release rows into ``{question, answers, lang}`` docs for language ``lang`` (e.g. zh_cn)."""
    docs = []
    for row in rows:
        answers = (row.get("answers") or {}).get(lang) or []
        if not answers or any(a.get("type") in EXCLUDED_TYPES for a in answers):
            continue
        docs.append({"id": str(row.get("example_id")), "question": row["queries"][lang],
                     "answers": answer_strings(answers), "lang": lang})
    return docs
