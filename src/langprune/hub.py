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

    return constants.HF_HUB_CACHE


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
