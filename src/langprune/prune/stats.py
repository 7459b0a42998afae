"""Calibration statistics, accumulated in fp32 by forward hooks on a layer's linears.

Linears that read the very same input tensor (Llama q/k/v and gate/up, Cohere's
parallel q/k/v/gate/up) share one accumulator. Sharing is discovered at run time by
tensor identity, so no architecture table is needed and a new architecture works as
long as its linears are ``nn.Linear`` modules.
"""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass, replace

import torch
from torch import nn

# The statistics' names are the registry's (methods declare which they need there).
from ..registry import HESSIAN as HESSIAN
from ..registry import LANGUAGES as LANGUAGES
from ..registry import MOMENTS as MOMENTS
from ..registry import SUMSQ as SUMSQ


@dataclass(frozen=True)
class LinearStats:
    """What a method sees for one linear: its name (for error messages) and its input statistics.

    ``sumsq[j]`` is the sum over calibration tokens of ``x_j ** 2``; ``hessian`` is
    ``(2 / tokens) * sum x x^T``. With ``MOMENTS``: ``total[j]`` is the sum of ``x_j``
    over tokens and ``seq_var[j]`` the token-weighted mean over calibration sequences of
    the variance of ``x_j`` within each sequence. With ``LANGUAGES`` (calibration rows labelled
    by language index ``l``): ``language_tokens[l]``, ``language_sumsq[l, j]`` (sum of ``x_j ** 2``)
    and ``language_positive[l, j]`` (tokens with ``x_j > 0``) over that language's rows only.
    Each is None when not asked for.
    """

    name: str
    tokens: int = 0
    sumsq: torch.Tensor | None = None
    hessian: torch.Tensor | None = None
    sequences: int = 0
    total: torch.Tensor | None = None
    seq_var: torch.Tensor | None = None
    language_tokens: torch.Tensor | None = None
    language_sumsq: torch.Tensor | None = None
    language_positive: torch.Tensor | None = None

    def for_linear(self, name: str) -> "LinearStats":
        """The same (shared) statistics, labelled with another linear's name."""
        return replace(self, name=name)


class InputAccumulator:
    """Running fp32 sums over the tokens one input tensor carries."""

    def __init__(self, features: int, needs: frozenset[str], device: torch.device,
                 row_languages: list[int] | None = None):
        self.tokens = 0
        self.sumsq = torch.zeros(features, dtype=torch.float32, device=device) if needs else None
        self.gram = (torch.zeros(features, features, dtype=torch.float32, device=device)
                     if HESSIAN in needs else None)
        self.sequences = 0
        self.total = torch.zeros(features, dtype=torch.float32, device=device) if MOMENTS in needs else None
        self.var_sum = torch.zeros(features, dtype=torch.float32, device=device) if MOMENTS in needs else None
        self.rows = 0  # calibration rows seen: the index into row_languages
        self.row_languages = row_languages if LANGUAGES in needs else None
        if self.row_languages is not None:
            count = max(self.row_languages) + 1
            self.language_tokens = torch.zeros(count, dtype=torch.float32, device=device)
            self.language_sumsq = torch.zeros(count, features, dtype=torch.float32, device=device)
            self.language_positive = torch.zeros(count, features, dtype=torch.float32, device=device)
        elif LANGUAGES in needs:
            raise ValueError("per-language statistics need the language of every calibration row")

    def update(self, x: torch.Tensor) -> None:
        """Add one batch; ``x`` is [..., features] in any dtype.

        Sums run one sequence at a time, in order, so the result does not depend on how
        the calibration set was split into batches (a batch-wide matmul would reduce
        over a batch-size-dependent number of tokens).
        """
        x = x.detach()
        for seq in (x.reshape(-1, *x.shape[-2:]) if x.dim() >= 3 else x[None]):
            flat = seq.float()
            self.tokens += flat.shape[0]
            if self.gram is not None:
                self.gram.addmm_(flat.t(), flat)
            elif self.sumsq is not None:
                squares = flat.pow(2).sum(dim=0)
                self.sumsq.add_(squares)
            if self.total is not None:  # DSnoT's per-feature mean and variance
                self.sequences += 1
                self.total.add_(flat.sum(dim=0))
                self.var_sum.add_(flat.var(dim=0, unbiased=False) * flat.shape[0])
            if self.row_languages is not None:  # M-Wanda: this row's language gets its sums
                lang = self.row_languages[self.rows]
                self.language_tokens[lang] += flat.shape[0]
                self.language_sumsq[lang].add_(flat.pow(2).sum(dim=0) if self.gram is not None else squares)
                self.language_positive[lang].add_((flat > 0).sum(dim=0).float())
            self.rows += 1

    def result(self, name: str) -> LinearStats:
        """Finalise into the published normalisation (H = 2/N sum x x^T)."""
        moments = {}
        if self.total is not None:
            moments = dict(sequences=self.sequences, total=self.total, seq_var=self.var_sum / max(self.tokens, 1))
        if self.row_languages is not None:
            moments.update(language_tokens=self.language_tokens, language_sumsq=self.language_sumsq,
                           language_positive=self.language_positive)
        if self.gram is not None:
            hessian = self.gram * (2.0 / max(self.tokens, 1))
            return LinearStats(name, self.tokens, sumsq=torch.diagonal(self.gram).clone(), hessian=hessian, **moments)
        return LinearStats(name, self.tokens, sumsq=self.sumsq, **moments)


class _Hooks:
    """Context manager that installs one hook per linear on entry and removes them all on exit."""

    linears: dict[str, nn.Linear]

    def _install(self, name: str, module: nn.Linear):
        raise NotImplementedError

    def __enter__(self):
        self._handles = [self._install(name, module) for name, module in self.linears.items()]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


class LayerStatsCollector(_Hooks):
    """Hooks every given linear; accumulates one statistic per distinct input tensor.

    Call :meth:`start_batch` before each forward of the layer. Within one forward the
    first linear to see a tensor owns its accumulator; later linears receiving the same
    object join that group. Only weak references are kept, so no activation outlives
    its normal lifetime.
    """

    def __init__(self, linears: dict[str, nn.Linear], needs: frozenset[str], row_languages: list[int] | None = None):
        self.linears = linears
        self.needs = needs
        self.row_languages = row_languages
        self.group_of: dict[str, str] = {}
        self.accumulators: dict[str, InputAccumulator] = {}
        self.seconds = 0.0
        self._seen: list[tuple[weakref.ref, str]] = []

    def _install(self, name: str, module: nn.Linear):
        return module.register_forward_pre_hook(self._hook_for(name))

    def start_batch(self) -> None:
        self._seen.clear()

    def _owner_of(self, x: torch.Tensor) -> str | None:
        for ref, owner in self._seen:
            if ref() is x:
                return owner
        return None

    def _hook_for(self, name: str):
        def hook(module: nn.Module, args: tuple) -> None:
            started = time.perf_counter()
            x = args[0]
            owner = self._owner_of(x)
            if owner is None:
                owner = name
                self._seen.append((weakref.ref(x), name))
                if name not in self.accumulators:
                    self.accumulators[name] = InputAccumulator(x.shape[-1], self.needs, x.device,
                                                                self.row_languages)
                self.accumulators[name].update(x)
            previous = self.group_of.setdefault(name, owner)
            if previous != owner:
                raise RuntimeError(f"{name} read the input of {owner} in one batch and of {previous} in another")
            self.seconds += time.perf_counter() - started

        return hook

    def groups(self) -> dict[str, list[str]]:
        """Owner linear -> all linears (owner first) that read its input."""
        out: dict[str, list[str]] = {}
        for name, owner in self.group_of.items():
            out.setdefault(owner, []).append(name)
        return out

    def results(self) -> dict[str, LinearStats]:
        """Per-linear statistics; members of a group share the same tensors."""
        finals = {owner: acc.result(owner) for owner, acc in self.accumulators.items()}
        return {name: finals[owner].for_linear(name) for name, owner in self.group_of.items()}


ERROR_TOKEN_BUDGET = 1024  # tokens per linear the reconstruction error is measured on (whole batches)


class ReconstructionMeter(_Hooks):
    """Measures ||W X - W' X||^2 / ||W X||^2 per linear while the pruned layer runs.

    Takes ownership of a copy of the layer's dense weights (one layer's worth of memory,
    overwritten with W - W') and uses one extra matmul per linear per batch:
    W X = W' X + (W - W') X. Only whole batches until ``token_budget`` tokens were measured
    take part (at least one batch), so the measurement stays a small share of pruning
    however large the calibration set: the error is an estimate on the first batches.
    """

    def __init__(self, linears: dict[str, nn.Linear], dense: dict[str, torch.Tensor],
                 token_budget: int | None = ERROR_TOKEN_BUDGET):
        self.linears = linears
        self.token_budget = token_budget
        self.tokens = {name: 0 for name in linears}
        # W - W' computed into the dense copy itself: no second layer-sized buffer.
        self.delta = {name: dense[name].to(module.weight.device).sub_(module.weight.detach())
                      for name, module in linears.items()}
        self.error = {name: 0.0 for name in linears}
        self.reference = {name: 0.0 for name in linears}
        self.seconds = 0.0

    def _install(self, name: str, module: nn.Linear):
        return module.register_forward_hook(self._hook_for(name))

    def _hook_for(self, name: str):
        def hook(module: nn.Linear, args: tuple, output: torch.Tensor) -> None:
            if self.token_budget is not None and self.tokens[name] >= self.token_budget:
                return
            started = time.perf_counter()
            self.tokens[name] += args[0].shape[:-1].numel()
            diff = torch.nn.functional.linear(args[0], self.delta[name]).float()
            pruned = output.detach().float()
            if module.bias is not None:
                pruned = pruned - module.bias.detach().float()
            self.error[name] += float(diff.pow(2).sum())
            self.reference[name] += float((pruned + diff).pow(2).sum())
            self.seconds += time.perf_counter() - started

        return hook

    def relative_errors(self) -> dict[str, float]:
        return {name: (self.error[name] / self.reference[name] if self.reference[name] > 0 else 0.0)
                for name in self.linears}
