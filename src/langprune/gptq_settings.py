"""GPTQ's settings and the checks they need before any work: torch-free.

The quantizer itself is :mod:`langprune.prune.gptq`; its settings live here so that the
config check can run the registry's ``check_layers`` of GPTQ while the workflow parses
(it imports no torch), as ``langprune prune`` does before the weights load.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from . import registry
from .errors import LangpruneError


@dataclass(frozen=True)
class GptqSettings:
    """The quantizer's settings; their allowed values are the registry's (``--gptq-*``)."""

    bits: int = 4
    group_size: int = 128
    symmetric: bool = False
    act_order: bool = False
    static_groups: bool = False

    @property
    def max_code(self) -> int:
        return (1 << self.bits) - 1

    def check(self, columns: int | None = None, name: str = "gptq") -> "GptqSettings":
        """These settings, or one error line naming the setting that cannot work (before any work)."""
        registry.method("gptq").bind(asdict(self))
        if self.static_groups and self.group_size == 0:
            raise LangpruneError("--gptq-static-groups needs groups: give --gptq-group-size N (with one group per "
                                 "row there is nothing to fix in advance)")
        if columns is not None and self.group_size and columns % self.group_size:
            raise LangpruneError(f"--gptq-group-size {self.group_size} does not divide the {columns} input columns "
                                 f"of {name}; choose a divisor of every linear's input size (e.g. 32, 64 or 128)")
        return self


def check_layers(params: Mapping[str, Any], input_sizes: Mapping[str, int]) -> None:
    """The registry's pre-load check: the settings agree with each other and with every linear's input size."""
    settings = GptqSettings(**params).check()
    for name, columns in input_sizes.items():
        settings.check(columns, name)
