"""Parallel probe text for the real models: Belebele passages (the paper's choice).

Belebele (Bandarkar et al., 2023) asks several questions about each FLORES-200 passage and
its rows are aligned across languages, so the unique passages in order of first appearance are
parallel. They are disjoint from mC4, the calibration source. Needs the hub (or its cache).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import LangpruneError
from ..hub import PREFETCH_COMMAND, first_line, missing_error, offline
from ..io import atomic_path, check_output, json_text, marker, marker_dir_kind

BELEBELE = "facebook/belebele"
BELEBELE_CONFIG = {"ar": "arb_Arab", "de": "deu_Latn", "en": "eng_Latn", "es": "spa_Latn", "ru": "rus_Cyrl",
                   "sw": "swh_Latn", "zh": "zho_Hans", "fr": "fra_Latn", "ja": "jpn_Jpan", "hi": "hin_Deva"}


def unique_passages(rows, max_passages: int | None) -> list[str]:
    """Passages in order of first appearance, one per source link (several questions share one)."""
    seen, passages = set(), []
    for row in rows:
        if row["link"] in seen:
            continue
        seen.add(row["link"])
        passages.append(" ".join(row["flores_passage"].split()))
        if max_passages and len(passages) >= max_passages:
            break
    return passages


PROBE_MARKER = "langprune_probe.json"
PROBE_FORMAT = "langprune-probe-text"


PROBE_KIND = marker_dir_kind("probe text directory (<lang>.txt)", PROBE_MARKER, PROBE_FORMAT, only=".txt")


def write_belebele_probe(*, languages: list[str], out: str, max_passages: int | None = 200,
                         force: bool | None = None) -> Path:
    """Write ``OUT/<lang>.txt`` (passages separated by blank lines) for ``langprune analyze hidden``."""
    missing = [lang for lang in languages if lang not in BELEBELE_CONFIG]
    if missing:
        raise LangpruneError(f"no Belebele config known for {', '.join(missing)}; known: {', '.join(BELEBELE_CONFIG)}")
    from datasets import load_dataset  # noqa: PLC0415 - the workflow's plan reads this module's names at parse time

    check_output(out, PROBE_KIND, force=force)
    with atomic_path(out, PROBE_KIND, force=force) as tmp:
        tmp.mkdir()
        for lang in languages:
            try:
                rows = load_dataset(BELEBELE, BELEBELE_CONFIG[lang], split="test")
            except Exception as exc:  # noqa: BLE001 - any hub/cache miss has one fix
                if offline():
                    raise missing_error("the Belebele probe", f"dataset {BELEBELE} config {BELEBELE_CONFIG[lang]}"
                                        ) from exc
                raise LangpruneError(f"cannot load {BELEBELE} ({BELEBELE_CONFIG[lang]}): {first_line(exc)}; run "
                                     f"`{PREFETCH_COMMAND}` where the hub can be reached") from exc
            (tmp / f"{lang}.txt").write_text("\n\n".join(unique_passages(rows, max_passages)) + "\n", encoding="utf-8")
        (tmp / PROBE_MARKER).write_text(json_text(marker(PROBE_FORMAT, languages=languages,
                                                         max_passages=max_passages)), encoding="utf-8")
    return Path(out)
