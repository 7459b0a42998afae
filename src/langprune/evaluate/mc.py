"""The toy multiple-choice benchmark ``udhr_mc``: which sentence continues the context?

Built from held-out text so it needs no download: each item takes two consecutive
sentences of one document (context, true continuation) and three other sentences of the
same language as distractors, in a seeded random order. The answer is only recoverable
from the language itself, so accuracy tracks how well the model still knows it.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

from ..errors import LangpruneError
from ..io import atomic_path

CHOICES = 4
SENTENCE_END = re.compile(r"(?<=[.!?;؟؛])\s+|(?<=[。！？；])")


def sentences(text: str) -> list[str]:
    """Sentences of one document (split after ., !, ?, ; and their Arabic and CJK forms)."""
    return [s.strip() for s in SENTENCE_END.split(text) if s and s.strip()]


def build_items(documents: list[str], n_items: int, rng: random.Random, lang: str) -> list[dict]:
    """``n_items`` items of (context, 4 choices, label) from consecutive sentence pairs of the documents."""
    per_doc = [sentences(d) for d in documents]
    pairs = [(s[i], s[i + 1]) for s in per_doc for i in range(len(s) - 1) if s[i] != s[i + 1]]
    pool = sorted({x for s in per_doc for x in s})
    if len(pairs) < n_items or len(pool) < CHOICES + 1:
        raise LangpruneError(f"'{lang}': the text has {len(pairs)} consecutive sentence pairs and {len(pool)} distinct "
                             f"sentences; {n_items} items need {n_items} pairs and {CHOICES + 1} sentences. "
                             f"Add text or lower --n-items")
    items = []
    for k, (context, answer) in enumerate(rng.sample(pairs, n_items)):
        distractors = rng.sample([s for s in pool if s not in (context, answer)], CHOICES - 1)
        label = rng.randrange(CHOICES)
        choices = distractors[:label] + [answer] + distractors[label:]
        items.append({"id": f"{lang}-{k}", "context": context, "choices": choices, "label": label})
    return items


def make_mc(source: str, languages: list[str], n_items: int, seed: int, out: str | Path) -> dict[str, int]:
    """Write ``out/<lang>.jsonl`` items for each language (atomically, as one directory)."""
    from ..data.shards import language_rng
    from ..data.sources import parse_source

    if n_items <= 0:
        raise LangpruneError(f"--n-items must be positive, not {n_items}")
    src = parse_source(source)
    src.check_languages(languages)
    counts = {}
    with atomic_path(out) as tmp:
        tmp.mkdir()
        for lang in languages:
            docs = [d.text for d in src.documents(lang, split="validation")]
            items = build_items(docs, n_items, language_rng(seed, lang), lang)
            lines = "".join(json.dumps(item, ensure_ascii=False, sort_keys=True) + "\n" for item in items)
            (tmp / f"{lang}.jsonl").write_text(lines, encoding="utf-8")
            counts[lang] = len(items)
    return counts
