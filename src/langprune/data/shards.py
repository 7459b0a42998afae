"""Calibration shards: seeded token windows per language, mixed by shares, saved as safetensors.

Two packings:
- ``document`` (the paper's, after Wanda/SparseGPT): draw documents in a seeded random
  order, keep those longer than ``seqlen`` tokens, take one random window of each. The
  search is bounded by the corpus: every document is tried at most once, and when too
  few are long enough we fail and say how many were found.
- ``concat``: join documents (seeded order) with EOS and cut consecutive windows, so
  short-document languages (Swahili at 8192) still give full samples.

Every window starts with BOS when the tokenizer's own encoding does (``models.bos_prefix``;
Gemma, Llama 3), then ``seqlen - 1`` text tokens, exactly like the perplexity windows; the
metadata records ``bos``.

The same arguments always give the same bytes: every random choice comes from a
per-language ``random.Random`` seeded by (seed, language), and the metadata is sorted JSON.
"""

from __future__ import annotations

import json
import random
import sys
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from transformers import AutoConfig

from ..errors import LangpruneError
from ..io import ArtifactKind, atomic_path, check_output, langprune_metadata, sha256_file
from ..models import bos_prefix, load_tokenizer
from .langid import purity
from .sources import Document, parse_source

SHARD_FORMAT = 1
METADATA_KEY = "langprune"
IDS = "input_ids"  # the shard's one tensor: int64 [nsamples, seqlen]
PACKINGS = ("document", "concat")


def is_shard(path: Path) -> bool:
    """A safetensors file whose metadata says `langprune calibrate` wrote it."""
    meta = langprune_metadata(path)
    return meta.get("format") == SHARD_FORMAT and "nsamples" in meta and "packing" in meta


SHARD_KIND = ArtifactKind("calibration shard", recognise=is_shard)


def allocate(nsamples: int, languages: list[str], weights: list[float] | None = None) -> dict[str, int]:
    """Split ``nsamples`` over languages by weight (equal by default), summing exactly to ``nsamples``.

    Largest-remainder rounding; ties go to the language listed first, so 128 over three
    languages is 43+43+42 whatever the machine.
    """
    if nsamples <= 0:
        raise LangpruneError(f"--nsamples must be positive, not {nsamples}")
    weights = [1.0] * len(languages) if weights is None else list(weights)
    if len(weights) != len(languages):
        raise LangpruneError(f"--weights has {len(weights)} values but --languages has {len(languages)}")
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise LangpruneError(f"--weights {weights} must be non-negative with a positive sum")
    exact = [Fraction(w).limit_denominator(10**6) * nsamples / sum(Fraction(w).limit_denominator(10**6)
                                                                   for w in weights) for w in weights]
    counts = [int(x) for x in exact]
    order = sorted(range(len(languages)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[: nsamples - sum(counts)]:
        counts[i] += 1
    return dict(zip(languages, counts))


def language_rng(seed: int, lang: str) -> random.Random:
    """Independent of the mix: a language's draws are the same alone or in a mix (prefix property)."""
    return random.Random(f"langprune:{seed}:{lang}")


@dataclass
class LanguageSample:
    """The windows drawn for one language and where each came from."""

    windows: list[list[int]] = field(default_factory=list)
    provenance: list[dict] = field(default_factory=list)


def encode(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def sample_documents(docs: list[Document], tokenizer, count: int, seqlen: int, rng: random.Random,
                     lang: str) -> LanguageSample:
    """Paper packing: one random window from each of ``count`` random documents longer than ``seqlen``."""
    out = LanguageSample()
    order = list(range(len(docs)))
    rng.shuffle(order)
    for index in order:
        if len(out.windows) == count:
            break
        ids = encode(tokenizer, docs[index].text)
        if len(ids) <= seqlen:
            continue
        start = rng.randint(0, len(ids) - seqlen - 1)
        out.windows.append(ids[start:start + seqlen])
        out.provenance.append({"doc": docs[index].id, "sha256": docs[index].sha256, "start": start})
    if len(out.windows) < count:
        raise LangpruneError(
            f"'{lang}': found only {len(out.windows)} documents longer than {seqlen} tokens among all "
            f"{len(docs)} documents; need {count}. Use --packing concat (joins documents with EOS) "
            f"or a smaller --seqlen")
    return out


def sample_concat(docs: list[Document], tokenizer, count: int, seqlen: int, rng: random.Random,
                  lang: str) -> LanguageSample:
    """Concat packing: documents in seeded order joined by EOS, cut into consecutive windows."""
    if tokenizer.eos_token_id is None:
        raise LangpruneError("--packing concat needs a tokenizer with an EOS token")
    out = LanguageSample()
    order = list(range(len(docs)))
    rng.shuffle(order)
    stream: list[int] = []
    needed = count * seqlen
    for index in order:
        if len(stream) >= needed:
            break
        out.provenance.append({"doc": docs[index].id, "sha256": docs[index].sha256, "start": len(stream)})
        stream += encode(tokenizer, docs[index].text) + [tokenizer.eos_token_id]
    if len(stream) < needed:
        raise LangpruneError(
            f"'{lang}': the corpus has only {len(stream)} tokens ({len(docs)} documents), but {count} samples "
            f"of {seqlen} tokens need {needed}; add text, or lower --nsamples or --seqlen")
    out.windows = [stream[i * seqlen:(i + 1) * seqlen] for i in range(count)]
    return out


SAMPLERS = {"document": sample_documents, "concat": sample_concat}


@dataclass(frozen=True)
class ShardSpec:
    """Everything that determines a shard's bytes."""

    tokenizer: str
    source: str
    languages: list[str]
    nsamples: int
    seqlen: int
    seed: int
    packing: str = "document"
    weights: list[float] | None = None

    def counts(self) -> dict[str, int]:
        return allocate(self.nsamples, self.languages, self.weights)


def check_spec(spec: ShardSpec) -> None:
    if spec.packing not in PACKINGS:
        raise LangpruneError(f"--packing '{spec.packing}' must be one of: {', '.join(PACKINGS)}")
    if spec.seqlen < 2:
        raise LangpruneError(f"--seqlen must be at least 2, not {spec.seqlen}")


def max_positions(tokenizer_name: str, tokenizer) -> int | None:
    """The longest window the tokenizer's model accepts, when its config or tokenizer says so."""
    try:
        config = AutoConfig.from_pretrained(tokenizer_name)
        limit = getattr(config, "max_position_embeddings", None)
        if isinstance(limit, int) and limit > 0:
            return limit
    except (OSError, ValueError):
        pass
    limit = getattr(tokenizer, "model_max_length", None)
    return limit if isinstance(limit, int) and 0 < limit < 10**9 else None  # transformers' "unknown" is 1e30


def check_window(spec: ShardSpec, tokenizer) -> None:
    """A window longer than the model's positions would calibrate on positions it never saw."""
    limit = max_positions(spec.tokenizer, tokenizer)
    if limit is None:
        print(f"warning: cannot tell the maximum positions of the model of --tokenizer '{spec.tokenizer}' (no "
              f"config.json or model_max_length); make sure --seqlen {spec.seqlen} fits it", file=sys.stderr)
    elif spec.seqlen > limit:
        raise LangpruneError(f"--seqlen {spec.seqlen} is longer than the {limit} positions of the model of "
                             f"--tokenizer '{spec.tokenizer}'; use --seqlen {limit} or less")


def build_shard(spec: ShardSpec, out: str | Path, *, force: bool = False) -> dict:
    """Sample the shard described by ``spec``, write it atomically to ``out``, return its metadata.

    ``out`` is checked first: an existing file that is not a calibration shard is refused
    unless ``force``, and so is an unwritable or full destination.
    """
    check_spec(spec)
    source = parse_source(spec.source)
    check_output(out, SHARD_KIND, force=force, inputs=[getattr(source, "root", None), spec.tokenizer],
                 need_bytes=spec.nsamples * spec.seqlen * 8 + (1 << 20))
    source.check_languages(spec.languages)
    counts = spec.counts()
    tokenizer = load_tokenizer(spec.tokenizer)
    check_window(spec, tokenizer)
    prefix = bos_prefix(tokenizer)  # each window is prefix + (seqlen - len(prefix)) text tokens
    sampler = SAMPLERS[spec.packing]
    rows: list[list[int]] = []
    per_language: dict[str, dict] = {}
    for lang in spec.languages:
        if counts[lang] == 0:
            continue
        docs = source.documents(lang, split="train")
        sample = sampler(docs, tokenizer, counts[lang], spec.seqlen - len(prefix), language_rng(spec.seed, lang), lang)
        rows += [prefix + window for window in sample.windows]
        texts = [tokenizer.decode(w) for w in sample.windows]
        per_language[lang] = {"count": counts[lang], "documents": sample.provenance, **purity(texts, lang)}
    matched = sum(round(v["purity"] * v["count"]) for v in per_language.values())
    meta = {
        "format": SHARD_FORMAT, "tokenizer": spec.tokenizer, "source": source.spec, "languages": spec.languages,
        "weights": spec.weights, "counts": counts, "nsamples": spec.nsamples, "seqlen": spec.seqlen,
        "seed": spec.seed, "packing": spec.packing, "bos": bool(prefix), "purity": matched / spec.nsamples,
        "per_language": per_language,
    }
    tensor = torch.tensor(rows, dtype=torch.int64)
    with atomic_path(out, SHARD_KIND, force=force) as tmp:
        save_file({IDS: tensor}, str(tmp), metadata={METADATA_KEY: json.dumps(meta, sort_keys=True)})
    return meta


def row_languages(meta: dict) -> list[str]:
    """Each row's language, from the metadata: :func:`build_shard` writes ``counts[lang]`` rows per
    language, in ``languages`` order."""
    return [lang for lang in meta.get("languages", []) for _ in range(int(meta.get("counts", {}).get(lang, 0)))]


def _read_ids(path: Path, label: str) -> tuple[torch.Tensor, dict | None]:
    """The shard's ids (checked: non-empty int64 [nsamples, seqlen]) and its langprune metadata (None if absent)."""
    if not path.is_file():
        raise LangpruneError(f"{label} does not exist; build it with `langprune calibrate`")
    try:
        with safe_open(str(path), framework="pt") as shard:
            if IDS not in shard.keys():
                raise LangpruneError(f"{label} has no tensor '{IDS}' (found: {sorted(shard.keys())})")
            ids = shard.get_tensor(IDS)
            raw = (shard.metadata() or {}).get(METADATA_KEY)
    except SafetensorError as exc:
        raise LangpruneError(f"{label} is not a safetensors file: {exc}") from exc
    if ids.dtype != torch.int64 or ids.dim() != 2 or ids.numel() == 0:
        raise LangpruneError(f"{label}: '{IDS}' must be a non-empty int64 [nsamples, seqlen] tensor, "
                             f"got {ids.dtype} {list(ids.shape)}")
    try:
        meta = json.loads(raw) if raw is not None else None
    except ValueError:
        meta = None
    return ids, meta if isinstance(meta, dict) else None


def read_shard(path: str | Path) -> tuple[torch.Tensor, dict]:
    """``(input_ids, metadata)`` of a shard written by :func:`build_shard`."""
    path = Path(path)
    ids, meta = _read_ids(path, f"calibration shard '{path}'")
    if meta is None:
        raise LangpruneError(f"'{path}' has no langprune metadata; it was not written by `langprune calibrate`")
    return ids, meta


def read_calibration(path: str | Path, flag: str = "--calibration") -> tuple[torch.Tensor, dict[str, Any]]:
    """``(input_ids, identity)`` of a calibration shard for pruning; any safetensors with int64 ``input_ids``.

    The identity (path, SHA-256, shape and the ``langprune calibrate`` metadata, None for a
    hand-made shard) is what a checkpoint's manifest records about its calibration.
    """
    path = Path(path)
    ids, meta = _read_ids(path, f"{flag} '{path}'")
    return ids, {"path": str(path), "sha256": sha256_file(path), "nsamples": int(ids.shape[0]),
                 "seqlen": int(ids.shape[1]), "shard": meta}


def row_language_indices(calibration: dict[str, Any], what: str) -> list[int]:
    """Each calibration row's language index (first listed language 0), for ``what`` that compares languages.

    Read from the metadata of :func:`read_calibration`'s identity; refused unless every row's
    language is recorded and there are at least two languages.
    """
    languages = row_languages(calibration.get("shard") or {})
    if len(languages) != calibration["nsamples"]:
        raise LangpruneError(f"{what} needs the language of every calibration row, but --calibration "
                             f"'{calibration['path']}' records {len(languages)} for {calibration['nsamples']} rows "
                             f"(no or altered `langprune calibrate` metadata); rebuild it with `langprune calibrate`")
    if len(set(languages)) < 2:
        found = ", ".join(sorted(set(languages))) or "none recorded"
        raise LangpruneError(f"{what} needs a calibration shard mixing at least two languages (this one has: "
                             f"{found}); build one with `langprune calibrate --languages de,en,...`")
    order = list(dict.fromkeys(languages))
    return [order.index(lang) for lang in languages]
