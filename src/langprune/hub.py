"""The Hugging Face hub as compute jobs see it: an offline cache that `langprune prefetch` filled.

Compute jobs run with ``HF_HUB_OFFLINE=1`` and ``HF_DATASETS_OFFLINE=1`` (the workflow sets
them), so anything missing from the cache is a mistake with one fix: run the prefetch where
the hub can be reached. Every reader (models, tokenizers, mC4, lm-eval datasets, the
Belebele probe) words that error here, naming the file.
"""

from __future__ import annotations

import os

from .errors import LangpruneError

PREFETCH_COMMAND = "langprune prefetch --configfile CONFIG"
TRUE = {"1", "ON", "YES", "TRUE"}


def offline() -> bool:
    """Whether huggingface_hub runs offline (``HF_HUB_OFFLINE``, read as the library reads it)."""
    return os.environ.get("HF_HUB_OFFLINE", "").upper() in TRUE


def cache_location() -> str:
    from huggingface_hub import constants  # noqa: PLC0415 - only on the error path

    return constants.HF_HOME


def missing_error(what: str, file: str) -> LangpruneError:
    """``what`` (e.g. "model 'meta-llama/...'") lacks ``file`` in the cache: name it and the prefetch."""
    if offline():
        reason = "this job runs offline (HF_HUB_OFFLINE=1)"
    else:
        reason = "the hub cannot be reached"
    return LangpruneError(
        f"{what}: {file} is not in the Hugging Face cache ({cache_location()}) and {reason}; run "
        f"`{PREFETCH_COMMAND}` where the hub can be reached (on a cluster: the login node), with the same HF_HOME")


def first_line(exc: BaseException) -> str:
    """A library exception as one short clause (its first line), for the end of an error message."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def _cached(repo: str, file: str, revision: str | None, repo_type: str = "model") -> str | None:
    from huggingface_hub import try_to_load_from_cache  # noqa: PLC0415

    found = try_to_load_from_cache(repo, file, revision=revision, repo_type=repo_type)
    return found if isinstance(found, str) and os.path.exists(found) else None


def missing_model_file(repo: str, revision: str | None = None, weights: bool = True) -> str:
    """The first file a model (or only its tokenizer) loads that the cache lacks: config, tokenizer, weights."""
    import json  # noqa: PLC0415

    for file in ("config.json", "tokenizer_config.json"):
        if _cached(repo, file, revision) is None:
            return file
    if not weights:
        return "tokenizer.json"
    index = _cached(repo, "model.safetensors.index.json", revision)
    if index is None:
        return "model.safetensors" if _cached(repo, "model.safetensors", revision) is None else "its weights"
    shards = sorted(set(json.loads(open(index, encoding="utf-8").read())["weight_map"].values()))
    return next((s for s in shards if _cached(repo, s, revision) is None), "its weights")


def model_error(name: str, exc: BaseException, *, weights: bool = True, revision: str | None = None):
    """A hub model or tokenizer that did not load: offline, the missing file and the prefetch; else the cause."""
    from huggingface_hub.errors import HFValidationError  # noqa: PLC0415
    from huggingface_hub.utils import validate_repo_id  # noqa: PLC0415

    from .errors import LangpruneError  # noqa: PLC0415

    try:
        validate_repo_id(name)
    except HFValidationError:
        return LangpruneError(f"cannot load '{name}': no such local directory, and it is not a hub id "
                              f"(org/name); give an existing model directory or a hub id")
    if offline():
        return missing_error(f"{'model' if weights else 'tokenizer'} '{name}'",
                             missing_model_file(name, revision, weights))
    return LangpruneError(f"cannot load '{name}' from the hub ({first_line(exc)}); check the id, or run "
                          f"`{PREFETCH_COMMAND}` and load it offline")


def snapshot_commit(path) -> str | None:
    """The commit of a file in the hub cache (``.../snapshots/<commit>/<file>``), None for other files."""
    from pathlib import Path  # noqa: PLC0415

    parts = Path(path).parts
    return parts[-2] if len(parts) > 2 and parts[-3] == "snapshots" else None
