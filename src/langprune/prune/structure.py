"""Sparsity structures: what a mask is allowed to look like.

Parsed and validated once, here, so that every method can trust its ``Structure``
argument and the CLI gives one clear message for every malformed value.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from ..errors import LangpruneError

_NM = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")


@dataclass(frozen=True)
class Structure:
    """Unstructured (``n == m == 0``) with a ratio, or N:M (prune ``n`` of every ``m`` consecutive inputs)."""

    sparsity: float
    n: int = 0
    m: int = 0

    @property
    def is_nm(self) -> bool:
        return self.m > 0

    @property
    def label(self) -> str:
        """The spelling used in manifests, paths and the CLI."""
        return f"{self.n}:{self.m}" if self.is_nm else "unstructured"

    def pruned_count(self, size: int) -> int:
        """How many of ``size`` comparable weights an unstructured mask removes (floor, as published)."""
        return int(math.floor(size * self.sparsity + 1e-9))


def unstructured(sparsity: float, *, allow_zero: bool = True) -> Structure:
    """An unstructured structure; zero sparsity is allowed for the identity check in tests."""
    low_ok = sparsity >= 0 if allow_zero else sparsity > 0
    if not (isinstance(sparsity, (int, float)) and math.isfinite(sparsity) and low_ok and sparsity < 1):
        bound = "[0, 1)" if allow_zero else "(0, 1)"
        raise LangpruneError(f"--sparsity {sparsity!r} must be a ratio in {bound}, e.g. 0.5")
    return Structure(float(sparsity))


def n_of_m(n: int, m: int) -> Structure:
    """N:M: the ``n`` lowest-scoring weights of each ``m`` consecutive input columns are pruned."""
    if not (0 < n < m):
        raise LangpruneError(f"--structure {n}:{m} needs 0 < N < M (e.g. 2:4 or 4:8)")
    return Structure(n / m, n, m)


def parse_structure(text: str | None, sparsity: float | None) -> Structure:
    """Turn ``--structure`` and ``--sparsity`` into a Structure, rejecting contradictions.

    For N:M the sparsity is implied; an explicit ``--sparsity`` must agree with it.
    """
    text = (text or "unstructured").strip().lower()
    if text == "unstructured":
        if sparsity is None:
            raise LangpruneError("--sparsity is required for unstructured pruning (a ratio in (0, 1), e.g. 0.5)")
        return unstructured(sparsity, allow_zero=False)
    match = _NM.match(text)
    if not match:
        raise LangpruneError(f"--structure '{text}' is not 'unstructured' or N:M such as 2:4 or 4:8")
    structure = n_of_m(int(match.group(1)), int(match.group(2)))
    if sparsity is not None and not math.isclose(sparsity, structure.sparsity, abs_tol=1e-9):
        raise LangpruneError(f"--sparsity {sparsity} contradicts --structure {structure.label} "
                             f"(which means sparsity {structure.sparsity:g}); drop --sparsity or make them agree")
    return structure
