"""Split the declaration by article into disjoint train / calib / eval / probe parts.

The split is over article NUMBERS, drawn once with a seed, so every language holds out
exactly the same articles: perplexity differences between languages then come from
the language, not from which content was held out.
"""

from __future__ import annotations

import random
from pathlib import Path

from ..errors import LangpruneError
from ..io import ArtifactKind, atomic_path, check_output, json_file_carries, json_text, marker
from .udhr import PREAMBLE, read_declarations

DEFAULT_SPLIT = {"train": 16, "calib": 5, "eval": 6, "probe": 3}


def parse_split(spec: str) -> dict[str, int]:
    """`train=16,calib=5,...` -> ordered {part: number of articles}."""
    parts: dict[str, int] = {}
    for item in spec.split(","):
        name, _, count = item.partition("=")
        if not name or not count.isdigit() or int(count) < 1:
            raise LangpruneError(f"--split: '{item}' is not PART=COUNT with COUNT >= 1 (e.g. train=16,calib=5)")
        parts[name.strip()] = int(count)
    if "train" not in parts:
        raise LangpruneError("--split must name a 'train' part (the model is trained on it)")
    return parts


def assign_articles(numbers: list[int], split: dict[str, int], seed: int) -> dict[str, list[int]]:
    """Part -> sorted article numbers; a seeded shuffle, the preamble always in train."""
    pool = sorted(n for n in numbers if n != PREAMBLE)
    if sum(split.values()) > len(pool):
        raise LangpruneError(f"--split asks for {sum(split.values())} articles but only {len(pool)} exist")
    random.Random(seed).shuffle(pool)
    assigned, start = {}, 0
    for part, count in split.items():
        assigned[part] = sorted(pool[start:start + count])
        start += count
    if PREAMBLE in numbers:
        assigned["train"] = [PREAMBLE] + assigned["train"]
    return assigned


def common_articles(declarations: dict[str, dict[int, str]]) -> list[int]:
    """Article numbers present in every language (so parts are identical across languages)."""
    sets = [set(articles) for articles in declarations.values()]
    return sorted(set.intersection(*sets)) if sets else []


CORPUS_MARKER = "langprune_corpus.json"
CORPUS_FORMAT = "langprune-toy-corpus"


def is_corpus_dir(path: Path) -> bool:
    """What :func:`build_corpus` writes: its marker and ``<part>/<lang>.txt`` only."""
    return json_file_carries(path / CORPUS_MARKER, CORPUS_FORMAT) and all(
        part.name == CORPUS_MARKER or (part.is_dir() and all(f.is_file() and f.suffix == ".txt"
                                                             for f in part.iterdir()))
        for part in path.iterdir())


CORPUS_KIND = ArtifactKind("toy corpus directory (<part>/<lang>.txt)", directory=True, recognise=is_corpus_dir)


def build_corpus(archive: str | Path, languages: list[str], out_dir: str | Path, *,
                 split: dict[str, int] | None = None, seed: int = 0, force: bool = False) -> dict[str, list[int]]:
    """Write `<out_dir>/<part>/<lang>.txt` (articles separated by blank lines); return the assignment."""
    check_output(out_dir, CORPUS_KIND, force=force, inputs=[archive])
    declarations = read_declarations(archive, languages)
    assignment = assign_articles(common_articles(declarations), split or DEFAULT_SPLIT, seed)
    with atomic_path(out_dir, CORPUS_KIND, force=force) as tmp:
        for part, numbers in assignment.items():
            (tmp / part).mkdir(parents=True)
            for lang, articles in declarations.items():
                text = "\n\n".join(articles[n] for n in numbers)
                (tmp / part / f"{lang}.txt").write_text(text + "\n", encoding="utf-8")
        (tmp / CORPUS_MARKER).write_text(json_text(marker(CORPUS_FORMAT, languages=sorted(declarations),
                                                          articles=assignment)), encoding="utf-8")
    return assignment
