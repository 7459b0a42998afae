"""Language codes: which mC4 configs exist, and how they map onto the language-ID model's codes.

mC4 names a few languages with legacy or script-suffixed codes (``iw`` for Hebrew,
``ru-Latn``); the language-ID library uses ISO 639-1, so purity needs this mapping.
"""

from __future__ import annotations

from ..errors import LangpruneError

# The 101 languages (plus script variants and "und") of allenai/c4 `multilingual/`.
MC4_LANGUAGES = (
    "af am ar az be bg bg-Latn bn ca ceb co cs cy da de el el-Latn en eo es et eu fa fi fil fr fy ga gd gl "
    "gu ha haw hi hi-Latn hmn ht hu hy id ig is it iw ja ja-Latn jv ka kk km kn ko ku ky la lb lo lt lv mg "
    "mi mk ml mn mr ms mt my ne nl no ny pa pl ps pt ro ru ru-Latn sd si sk sl sm sn so sq sr st su sv sw "
    "ta te tg th tr uk und ur uz vi xh yi yo zh zh-Latn zu"
).split()

# mC4 code -> ISO 639-1 code used by py3langid, where they differ.
LANGID_ALIASES = {"iw": "he", "fil": "tl", "no": "nb"}


def langid_code(code: str) -> str:
    """The language-ID label a text in mC4 language ``code`` should receive."""
    base = code.split("-")[0]
    return LANGID_ALIASES.get(base, base)


def parse_languages(spec: str | list[str]) -> list[str]:
    """Split ``de,en`` into codes, rejecting empties and duplicates (a mix lists each language once)."""
    codes = [c.strip() for c in spec.split(",")] if isinstance(spec, str) else [c.strip() for c in spec]
    if not codes or any(not c for c in codes):
        raise LangpruneError(f"--languages '{spec}' must be a comma-separated list of language codes, e.g. de,en")
    duplicates = sorted({c for c in codes if codes.count(c) > 1})
    if duplicates:
        raise LangpruneError(f"--languages lists {', '.join(duplicates)} more than once; give each language once")
    return codes


def check_mc4_languages(codes: list[str]) -> None:
    """Fail early on codes mC4 has no config for, before any download starts."""
    unknown = [c for c in codes if c not in MC4_LANGUAGES]
    if unknown:
        raise LangpruneError(
            f"unknown language code(s): {', '.join(unknown)}; known (mC4) codes: {' '.join(MC4_LANGUAGES)}")
