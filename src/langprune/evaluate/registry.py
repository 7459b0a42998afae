"""The benchmark registry: which lm-eval task measures (benchmark, language), kept as data.

``tasks/registry.csv`` holds one row per pair; a benchmark or language is added by adding a
row. Rows with no task are pairs that do not exist (SW for ARC, ...): they are still
returned so that results report them as not available instead of dropping them.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import LangpruneError

TASKS_DIR = Path(__file__).with_name("tasks")
REGISTRY_FILE = TASKS_DIR / "registry.csv"  # beside the task YAMLs, so it ships as package data with them


@dataclass(frozen=True)
class TaskEntry:
    """One (benchmark, language) pair; ``task`` is None when the pair does not exist."""

    benchmark: str
    language: str
    label: str
    task: str | None
    base: str | None
    metric: str
    local_data: str | None

    @property
    def available(self) -> bool:
        return self.task is not None


def load_registry(path: Path = REGISTRY_FILE) -> list[TaskEntry]:
    lines = [line for line in path.read_text("utf-8").splitlines() if line and not line.startswith("#")]
    return [TaskEntry(**{k: (v or None) if k in ("task", "base", "local_data") else v for k, v in row.items()})
            for row in csv.DictReader(lines)]


def _for_language(entry: TaskEntry, lang: str) -> TaskEntry:
    """Instantiate a wildcard row for one language."""
    def fill(text):
        return text.format(lang=lang) if text else text

    return replace(entry, language=lang, label=fill(entry.label), task=fill(entry.task),
                   local_data=fill(entry.local_data))


def select(benchmarks: list[str], languages: list[str], registry: list[TaskEntry] | None = None) -> list[TaskEntry]:
    """Entries for every requested (benchmark, language); pairs the registry lacks come back unavailable."""
    registry = load_registry() if registry is None else registry
    known = sorted({e.benchmark for e in registry})
    unknown = [b for b in benchmarks if b not in known]
    if unknown:
        raise LangpruneError(f"unknown benchmark(s) {', '.join(unknown)} in --tasks; known: {', '.join(known)}")
    chosen = []
    for bench in benchmarks:
        rows = [e for e in registry if e.benchmark == bench]
        for lang in languages:
            exact = [e for e in rows if e.language == lang]
            wildcard = [_for_language(e, lang) for e in rows if e.language == "*"]
            matched = exact or wildcard
            metric = rows[0].metric
            chosen += matched or [TaskEntry(bench, lang, lang, None, None, metric, None)]
    return chosen
