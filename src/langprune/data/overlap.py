"""Evaluation text must be disjoint from calibration text: checked by hashing word windows.

Both sides are normalised (NFKC, lowercase) and split into words, with every CJK
character its own word (no spaces to split on). Any ``window``-word sequence present in
both is an overlap. Calibration text is recovered by decoding the shard's token rows
with the shard's own tokenizer, so the check needs nothing but the shard file.
The window is long (32 words by default, shortened to the shortest calibration sample) so
that shared boilerplate phrases do not count, while any reused passage does.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import LangpruneError
from ..models import load_tokenizer
from .shards import read_shard

DEFAULT_WINDOW = 32
MIN_WINDOW = 4
_CJK = r"\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
WORD = re.compile(rf"[{_CJK}]|[^\W{_CJK}]+")


def words(text: str) -> list[str]:
    """Normalised words; a CJK character counts as one word."""
    return WORD.findall(unicodedata.normalize("NFKC", text).lower())


def window_hashes(ws: list[str], window: int) -> dict[int, int]:
    """Hash of every ``window``-word sequence of ``ws`` -> index of its first word (to quote an example)."""
    return {hash(tuple(ws[i:i + window])): i for i in range(max(0, len(ws) - window + 1))}


def calibration_texts(shard: str | Path, loaded: Mapping[str, Any] | None = None) -> list[str]:
    """The text of each calibration sample, decoded with the tokenizer that made the shard.

    ``loaded`` maps tokenizer names to tokenizers the caller already holds: a 262k-vocabulary
    tokenizer takes seconds to load, so an evaluation does not load its own one twice.
    """
    ids, meta = read_shard(shard)
    tokenizer = (loaded or {}).get(meta["tokenizer"])
    if tokenizer is None:
        tokenizer = load_tokenizer(meta["tokenizer"])
    return [tokenizer.decode(row) for row in ids.tolist()]


def effective_window(samples: list[list[str]], window: int) -> int:
    """``window``, shortened to the shortest calibration sample so short-seqlen shards are checked too."""
    return max(MIN_WINDOW, min([window] + [len(ws) for ws in samples]))


def check_disjoint(eval_texts: dict[str, str], shards: list[str | Path], window: int = DEFAULT_WINDOW,
                   loaded: Mapping[str, Any] | None = None) -> None:
    """Raise if any evaluation language shares a word window with any calibration shard.

    ``loaded``: tokenizers already in memory, by name (see :func:`calibration_texts`).
    """
    if window < MIN_WINDOW:
        raise LangpruneError(f"--overlap-window must be at least {MIN_WINDOW}, not {window}")
    eval_words = {lang: words(text) for lang, text in eval_texts.items()}
    for shard in shards:
        samples = [words(t) for t in calibration_texts(shard, loaded)]
        size = effective_window(samples, window)
        calib: set[int] = set()
        for ws in samples:
            calib.update(window_hashes(ws, size))
        for lang, ws in eval_words.items():
            hashes = window_hashes(ws, size)
            shared = calib.intersection(hashes)
            if shared:
                start = min(hashes[h] for h in shared)
                example = " ".join(ws[start:start + size])
                raise LangpruneError(
                    f"evaluation text for '{lang}' overlaps calibration shard {shard}: {len(shared)} shared "
                    f"{size}-word windows (e.g. '{example[:120]}'); evaluate on held-out text (or raise "
                    f"--overlap-window if this is boilerplate both splits share)")
