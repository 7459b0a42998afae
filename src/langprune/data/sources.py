"""Where text comes from: ``mc4`` (allenai/c4 multilingual, streamed) or ``text:DIR`` (local files).

Both yield a list of ``Document`` per language, so sampling and evaluation never care
which source they read. In ``text:DIR``, a language is either ``DIR/<lang>.txt``, whose
documents are paragraphs separated by blank lines, or a folder ``DIR/<lang>/`` with one
UTF-8 file per document (sorted by name).
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ..errors import LangpruneError
from ..hub import PREFETCH_COMMAND, first_line, missing_error, offline
from ..io import sha256_bytes
from .languages import check_mc4_languages

MC4_REPO = "allenai/c4"
PARAGRAPH_BREAK = re.compile(r"\n[ \t\r\f\v]*\n")


@dataclass(frozen=True)
class Document:
    """One document: a stable id (for provenance) and its text."""

    id: str
    text: str

    @property
    def sha256(self) -> str:
        return sha256_bytes(self.text.encode("utf-8"))


def split_paragraphs(text: str) -> list[str]:
    """Documents of a ``<lang>.txt`` file: blank-line separated paragraphs, stripped, empties dropped."""
    return [p.strip() for p in PARAGRAPH_BREAK.split(text) if p.strip()]


@dataclass(frozen=True)
class TextDirSource:
    """``text:DIR``: the directory is the split (calibration and evaluation use different dirs)."""

    root: Path

    @property
    def spec(self) -> str:
        return f"text:{self.root}"

    def available_languages(self) -> list[str]:
        names = {p.stem for p in self.root.glob("*.txt")} | {p.name for p in self.root.iterdir() if p.is_dir()}
        return sorted(names)

    def check_languages(self, codes: list[str]) -> None:
        missing = [c for c in codes if not (self.root / f"{c}.txt").is_file() and not (self.root / c).is_dir()]
        if missing:
            raise LangpruneError(
                f"language(s) {', '.join(missing)} not found in {self.root}: expected <lang>.txt or <lang>/ "
                f"(found: {', '.join(self.available_languages()) or 'nothing'})")

    def documents(self, lang: str, split: str = "train", limit: int | None = None) -> list[Document]:
        """All documents of ``lang`` (``split`` is ignored: the directory already is one split)."""
        self.check_languages([lang])
        file, folder = self.root / f"{lang}.txt", self.root / lang
        if file.is_file() and folder.is_dir():
            raise LangpruneError(f"both {file} and {folder}/ exist; keep one of them")
        if file.is_file():
            docs = [Document(f"{lang}.txt#{i}", p) for i, p in enumerate(split_paragraphs(file.read_text("utf-8")))]
        else:
            docs = [Document(f"{lang}/{p.name}", p.read_text("utf-8").strip())
                    for p in sorted(folder.iterdir()) if p.is_file()]
            docs = [d for d in docs if d.text]
        if not docs:
            raise LangpruneError(f"the corpus for '{lang}' in {self.root} is empty")
        return docs[:limit]

    def iter_documents(self, lang: str, split: str = "train") -> Iterator[Document]:
        return iter(self.documents(lang, split))


def mc4_data_files(lang: str, split: str, shards: int = 1) -> list[str]:
    """Hub paths of the first ``shards`` json.gz files of one mC4 language and split.

    The shard count in the file name differs per language, so the ``-of-*`` part is a glob.
    """
    if split not in ("train", "validation"):
        raise LangpruneError(f"mC4 split must be train or validation, not '{split}'")
    infix = "" if split == "train" else "-validation"
    return [f"multilingual/c4-{lang}{infix}.tfrecord-{i:05d}-of-*.json.gz" for i in range(shards)]


def _offline_dataset_error(lang: str, split: str, files: list[str], exc: Exception | None = None) -> LangpruneError:
    if exc is None or offline():
        return missing_error(f"mC4 '{lang}' ({split})", f"file {files[0]} of dataset {MC4_REPO}")
    return LangpruneError(f"cannot read mC4 '{lang}' ({split}) from the hub dataset {MC4_REPO} "
                          f"({first_line(exc)}); run `{PREFETCH_COMMAND}` where the hub can be reached, or use "
                          f"--source text:DIR")


def cached_files(patterns: list[str], cache_dir: str | None = None) -> list[str] | None:
    """Local paths of ``patterns`` in the Hugging Face hub cache of allenai/c4, or None if any is missing.

    Files fetched by `langprune prefetch` are read from disk, so a cluster without
    internet works from a copied HF_HOME.
    """
    # Local: hub sources only; the Snakefile imports langprune.config (and so this module) at parse time.
    from huggingface_hub import snapshot_download  # noqa: PLC0415

    try:
        root = Path(snapshot_download(MC4_REPO, repo_type="dataset", allow_patterns=patterns, local_files_only=True,
                                      cache_dir=cache_dir))
    except Exception:  # noqa: BLE001 - any failure means "not cached"
        return None
    found = [sorted(root.glob(pattern)) for pattern in patterns]
    return [str(paths[0]) for paths in found] if all(found) else None


@dataclass(frozen=True)
class Mc4Source:
    """``mc4``: calibration reads ``train``, evaluation ``validation``; from the hub cache, else streamed."""

    shards: int = 1
    max_documents: int = 100_000
    cache_dir: str | None = None

    @property
    def spec(self) -> str:
        return "mc4"

    def check_languages(self, codes: list[str]) -> None:
        check_mc4_languages(codes)

    def iter_documents(self, lang: str, split: str = "train") -> Iterator[Document]:
        """Documents of the split in file order, streamed (nothing is read beyond what is consumed)."""
        # Local: hub sources only; the Snakefile imports langprune.config (and so this module) at parse time.
        import datasets  # noqa: PLC0415

        self.check_languages([lang])
        files = mc4_data_files(lang, split, self.shards)
        local = cached_files(files, self.cache_dir)
        if local is None and offline():
            raise _offline_dataset_error(lang, split, files)
        try:
            if local is not None:
                stream = datasets.load_dataset("json", data_files=local, split="train", streaming=True)
            else:
                stream = datasets.load_dataset(MC4_REPO, data_files=files, split="train", streaming=True)
            for i, row in enumerate(stream):
                yield Document(f"mc4/{lang}/{split}/{i}", row["text"])
        except (OSError, ValueError, ConnectionError) as exc:
            raise _offline_dataset_error(lang, split, files, exc) from exc

    def documents(self, lang: str, split: str = "train", limit: int | None = None) -> list[Document]:
        """The first ``limit`` (default ``max_documents``) documents of the split."""
        docs = list(itertools.islice(self.iter_documents(lang, split), limit or self.max_documents))
        if not docs:
            raise LangpruneError(f"mC4 '{lang}' ({split}) returned no documents")
        return docs


def parse_source(spec: str) -> TextDirSource | Mc4Source:
    """Turn ``--source`` into a source object; ``text:DIR`` must name an existing directory."""
    if spec == "mc4":
        return Mc4Source()
    if spec.startswith("text:"):
        root = Path(spec[len("text:"):])
        if not root.is_dir():
            raise LangpruneError(f"--source {spec}: '{root}' is not a directory")
        return TextDirSource(root)
    raise LangpruneError(f"--source '{spec}' must be 'mc4' or 'text:DIR'")
