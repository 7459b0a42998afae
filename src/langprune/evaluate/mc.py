"""The toy multiple-choice benchmark ``udhr_mc``: which passage continues the context?

Built from held-out text so it needs no download. Each document is cut into short
passages of ``PASSAGE_WORDS`` words (``2 * PASSAGE_WORDS`` characters for text written
without spaces, e.g. Chinese); fixed-size passages rather than sentences give enough items
from a few paragraphs. An item takes two consecutive passages (context, true continuation)
and three other passages of the same language as distractors, in a seeded random order.
The answer is only recoverable from the language itself, so accuracy tracks how well the
model still knows it.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

from ..data.shards import language_rng
from ..data.sources import parse_source
from ..errors import LangpruneError
from ..io import atomic_path, check_output, json_text, marker, marker_dir_kind

CHOICES = 4
PASSAGE_WORDS = 8
CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")


def passages(text: str, size: int = PASSAGE_WORDS) -> list[str]:
    """Consecutive passages of ``size`` words (or ``2 * size`` characters for unspaced scripts)."""
    words, joiner = text.split(), " "
    if len(CJK.findall(text)) * 2 > len(text):  # unspaced script: passages of characters
        words, size, joiner = list("".join(words)), 2 * size, ""
    return [joiner.join(words[i:i + size]) for i in range(0, len(words), size)]


def build_items(documents: list[str], n_items: int, rng: random.Random, lang: str) -> list[dict]:
    """``n_items`` items of (context, 4 choices, label) from consecutive passage pairs of the documents."""
    per_doc = [passages(d) for d in documents]
    pairs = [(s[i], s[i + 1]) for s in per_doc for i in range(len(s) - 1) if s[i] != s[i + 1]]
    pool = sorted({x for s in per_doc for x in s})
    if len(pairs) < n_items or len(pool) < CHOICES + 1:
        raise LangpruneError(f"'{lang}': the text has {len(pairs)} consecutive passage pairs and {len(pool)} distinct "
                             f"passages; {n_items} items need {n_items} pairs and {CHOICES + 1} passages. "
                             f"Add text or lower --n-items")
    items = []
    for k, (context, answer) in enumerate(rng.sample(pairs, n_items)):
        distractors = rng.sample([s for s in pool if s not in (context, answer)], CHOICES - 1)
        label = rng.randrange(CHOICES)
        choices = distractors[:label] + [answer] + distractors[label:]
        items.append({"id": f"{lang}-{k}", "context": context, "choices": choices, "label": label})
    return items


MC_MARKER = "langprune_mc.json"
MC_FORMAT = "langprune-mc-items"


MC_KIND = marker_dir_kind("directory of multiple-choice items (<lang>.jsonl)", MC_MARKER, MC_FORMAT, only=".jsonl")


def make_mc(source: str, languages: list[str], n_items: int, seed: int, out: str | Path, *,
            force: bool | None = None) -> dict[str, int]:
    """Write ``out/<lang>.jsonl`` items for each language (atomically, as one directory)."""
    if n_items <= 0:
        raise LangpruneError(f"--n-items must be positive, not {n_items}")
    src = parse_source(source)
    check_output(out, MC_KIND, force=force, inputs=[getattr(src, "root", None)])
    src.check_languages(languages)
    counts = {}
    with atomic_path(out, MC_KIND, force=force) as tmp:
        tmp.mkdir()
        for lang in languages:
            docs = [d.text for d in src.documents(lang, split="validation")]
            items = build_items(docs, n_items, language_rng(seed, lang), lang)
            lines = "".join(json.dumps(item, ensure_ascii=False, sort_keys=True) + "\n" for item in items)
            (tmp / f"{lang}.jsonl").write_text(lines, encoding="utf-8")
            counts[lang] = len(items)
        (tmp / MC_MARKER).write_text(json_text(marker(MC_FORMAT, source=source, seed=seed, counts=counts)),
                                     encoding="utf-8")
    return counts
