"""Language purity of calibration samples, reported (not enforced) because mC4 is noisy.

py3langid was chosen: it ships its model inside the wheel (4.5 MB, no download at run
time, so it works offline), covers all mC4 languages of the paper (ar de en es ru sw zh)
among its 97, is deterministic, and classifies a sample in about a millisecond. See
README in this package for the accuracy measured on the project's texts.
"""

from __future__ import annotations

from collections import Counter

import py3langid

from .languages import langid_code


def detect_language(text: str) -> str:
    """ISO 639-1 code of the most likely language of ``text``."""
    return py3langid.classify(text)[0]


def purity(texts: list[str], lang: str) -> dict:
    """Fraction of ``texts`` detected as ``lang``, with the detected-language counts."""
    detected = [detect_language(t) for t in texts]
    target = langid_code(lang)
    counts = Counter(detected)
    return {"purity": (counts[target] / len(texts)) if texts else None,
            "detected": dict(sorted(counts.items()))}
