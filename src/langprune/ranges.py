"""Declared ranges of numeric settings: one object checks a flag, a config key and a call.

A :class:`Range` is the ``type=`` of every numeric command-line flag, so argparse refuses
NaN, infinities and out-of-range values at parse time, before any model is loaded, with a
message that names the flag. The method registry declares its hyperparameters' ranges
with the same objects, so the CLI, the config check and the pruning call agree.
Torch-free: the workflow imports it while it parses.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from typing import Any

from .errors import LangpruneError


@dataclass(frozen=True)
class Range:
    """A finite number of ``kind`` (float or int) between optional bounds (``*_open``: bound excluded)."""

    kind: type = float
    minimum: float | None = None
    maximum: float | None = None
    min_open: bool = False
    max_open: bool = False

    def __post_init__(self) -> None:
        if self.kind not in (float, int):
            raise TypeError(f"Range kind must be float or int, not {self.kind!r}")

    @property
    def __name__(self) -> str:  # argparse names the type in "invalid <type> value" messages
        return "integer" if self.kind is int else "number"

    def describe(self) -> str:
        """'a number in (0, 1)', 'an integer >= 1', 'a finite number'."""
        what = "an integer" if self.kind is int else "a number"
        low, high = self._bound(self.minimum), self._bound(self.maximum)
        if low is not None and high is not None:
            return f"{what} in {'(' if self.min_open else '['}{low}, {high}{')' if self.max_open else ']'}"
        if low is not None:
            return f"{what} {'>' if self.min_open else '>='} {low}"
        if high is not None:
            return f"{what} {'<' if self.max_open else '<='} {high}"
        return f"a finite {what[2:] if self.kind is float else 'integer'}"

    def _bound(self, bound: float | None) -> str | None:
        """A bound as written in messages: integers in full (4294967295, not 4.29497e+09)."""
        if bound is None:
            return None
        return f"{int(bound)}" if self.kind is int else f"{bound:g}"

    def allows(self, value: Any) -> bool:
        """Whether ``value`` is a finite number of this kind inside the bounds (bools are not numbers)."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.kind is int and not isinstance(value, int):
            return False
        if not math.isfinite(value):
            return False
        if self.minimum is not None and (value <= self.minimum if self.min_open else value < self.minimum):
            return False
        if self.maximum is not None and (value >= self.maximum if self.max_open else value > self.maximum):
            return False
        return True

    def check(self, value: Any, name: str) -> Any:
        """``value`` if allowed, else a LangpruneError naming ``name`` (a flag or config key)."""
        if not self.allows(value):
            raise LangpruneError(f"{name} {value!r}: must be {self.describe()}")
        return value

    def __call__(self, text: str) -> int | float:
        """argparse ``type=``: parse and check; argparse prefixes the message with the flag."""
        try:
            value = self.kind(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"{text!r} is not {self.describe()}") from None
        if not self.allows(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not {self.describe()}")
        return value


# Ranges shared by many flags.
POSITIVE_INT = Range(int, minimum=1)
NON_NEGATIVE_INT = Range(int, minimum=0)
NON_NEGATIVE = Range(float, minimum=0)
POSITIVE = Range(float, minimum=0, min_open=True)
OPEN_UNIT = Range(float, minimum=0, maximum=1, min_open=True, max_open=True)  # a sparsity, a significance level
SEED = Range(int, minimum=0, maximum=2**32 - 1)  # accepted by every seeded generator (torch, numpy, random)
