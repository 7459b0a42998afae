"""The method registry: every compression method and sparsity allocation, with its traits.

One entry per method is the only place its facts live: which calibration statistics it
needs, whether it needs calibration text at all or a mix of languages, whether it is
unstructured-only, whether it changes surviving weights, whether it quantizes instead of
pruning, and its hyperparameters with their published defaults and declared ranges (and,
for a quantization method, how its variant names spell each setting). The experiment grid,
the CLI (flags and help), the config check, the variant names, the report's row order and
the pruning call all read it.

Adding a method is one :class:`MethodSpec` here plus one module holding its pure function
(named by ``function``, ``"module:attribute"``, imported only when the method runs).
Torch-free: the workflow imports this while it parses.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import LangpruneError
from .ranges import NON_NEGATIVE, NON_NEGATIVE_INT, POSITIVE, POSITIVE_INT, Range

# Calibration statistics the layer-by-layer engine can collect (langprune.prune.stats).
SUMSQ = "sumsq"  # per input feature: sum of x_j ** 2 (Wanda's ||X_j||)
HESSIAN = "hessian"  # (2 / tokens) * sum x x^T (SparseGPT)
MOMENTS = "moments"  # per-feature sum and per-sequence variance (DSnoT)
LANGUAGES = "languages"  # per-language sums of squares and positive counts; needs each row's language

UNIFORM = "uniform"  # every decoder layer at the target sparsity
NO_MODULE = "none"  # the value of a module-name hyperparameter that names no module


def resolve(reference: str) -> Callable[..., Any]:
    """The object a ``"module:attribute"`` reference names (imports the module, which may import torch)."""
    module, _, attribute = reference.partition(":")
    return getattr(importlib.import_module(module), attribute)


@dataclass(frozen=True)
class Param:
    """One hyperparameter: the keyword of the method's function, its flag, default and allowed values.

    Numbers declare a :class:`Range` and may narrow it to ``choices``; strings may declare
    ``choices`` (a tuple, or a function giving one, for choices that depend on the registry
    itself); booleans are switches whose default is False.
    """

    name: str
    flag: str
    default: Any
    help: str
    range: Range | None = None
    choices: tuple[Any, ...] | Callable[[], tuple[Any, ...]] | None = None
    module_name: bool = False  # names a module inside the decoder layers (or NO_MODULE), checked against the model
    # How a quantization method's variant name spells this setting (langprune.variant.setting_slug):
    # an integer as SPELLING + value ('w4'), a switch that is on as '-' + SPELLING ('-sym').
    spelling: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.default, bool):
            if self.default is not False:
                raise ValueError(f"{self.flag}: a switch must default to False")
        elif isinstance(self.default, (int, float)) and (self.range is None or not self.range.allows(self.default)):
            raise ValueError(f"{self.flag}: numeric default {self.default!r} needs a range that allows it")

    @property
    def dest(self) -> str:
        """The argparse destination of the flag: '--ria-a' -> 'ria_a'."""
        return self.flag.lstrip("-").replace("-", "_")

    @property
    def kind(self) -> type:
        return type(self.default)

    def allowed_choices(self) -> tuple[Any, ...] | None:
        return self.choices() if callable(self.choices) else self.choices

    def describe(self) -> str:
        """What values are allowed, for help texts and errors."""
        choices = self.allowed_choices()
        if self.range is not None:
            return "one of " + ", ".join(map(str, choices)) if choices else self.range.describe()
        if self.module_name:
            return f"the name of a module inside the model's decoder layers, or {NO_MODULE}"
        choices = self.allowed_choices()
        if choices:
            return "one of " + ", ".join(choices)
        return "a switch" if self.kind is bool else "a string"

    def check(self, value: Any, name: str | None = None) -> Any:
        """``value`` if allowed for this parameter, else a LangpruneError naming ``name`` (default: the flag)."""
        name = name or self.flag
        if self.range is not None:
            self.range.check(value, name)
            if self.allowed_choices() and value not in self.allowed_choices():
                raise LangpruneError(f"{name} {value!r}: must be {self.describe()}")
            return value
        if self.kind is bool:
            if not isinstance(value, bool):
                raise LangpruneError(f"{name} {value!r}: must be true or false")
            return value
        choices = self.allowed_choices()
        if not isinstance(value, str) or not value or (choices and value not in choices):
            raise LangpruneError(f"{name} {value!r}: must be {self.describe()}")
        return value


def _check_params(params: Iterable[Param], values: Mapping[str, Any], owner: str) -> dict[str, Any]:
    """Defaults overridden by ``values`` (keyed by parameter name), each checked against its declaration."""
    declared = {p.name: p for p in params}
    unknown = sorted(set(values) - set(declared))
    if unknown:
        known = ", ".join(sorted(declared)) or "none"
        raise LangpruneError(f"{owner} has no hyperparameter {', '.join(unknown)} (it has: {known})")
    return {name: (p.check(values[name]) if name in values else p.default) for name, p in declared.items()}


@dataclass(frozen=True)
class MethodSpec:
    """A compression method's facts (see the module docstring)."""

    name: str
    function: str  # "module:attribute" of the pure function (weight, stats, structure, **params) -> (mask, new)
    summary: str
    statistics: frozenset[str] = frozenset()
    updates_weights: bool = False
    needs_language_mix: bool = False
    unstructured_only: bool = False
    params: tuple[Param, ...] = ()
    allocations: tuple[str, ...] = ()  # allocations it combines with (empty: every registered one)
    # A quantization method keeps every weight and rounds it to a grid: it takes no structure or
    # sparsity, its function returns a quantized weight, and its settings name the variant.
    quantizes: bool = False
    # "module:attribute" of (params, {linear: input columns}) -> None: settings that depend on each
    # other or on the model's layer sizes, checked (one LangpruneError) before the weights load. Its
    # module must not import torch: the config check runs it while the workflow parses.
    check_layers: str | None = None

    def __post_init__(self) -> None:
        if self.quantizes and (self.unstructured_only or self.allocations != (UNIFORM,)):
            raise ValueError(f"method {self.name}: a quantization method has no structure and combines only "
                             f"with the {UNIFORM} allocation")
        if self.quantizes:
            spellings = [p.spelling for p in self.params]
            if not all(s and s.isalpha() and s.islower() for s in spellings) or len(set(spellings)) < len(spellings):
                raise ValueError(f"method {self.name}: each setting of a quantization method needs its own spelling "
                                 f"of lower-case letters, which names its variants")
            if any(p.kind not in (int, bool) for p in self.params):
                raise ValueError(f"method {self.name}: a quantization method's settings are integers or switches, "
                                 f"which its variant names spell")

    @property
    def writes_masks(self) -> bool:
        """Whether its checkpoints hold keep-masks, which the mask analyses (overlap, neurons) compare:
        a quantization method keeps every weight and writes none."""
        return not self.quantizes

    @property
    def needs_calibration(self) -> bool:
        """A method that collects no statistics reads no calibration text (magnitude)."""
        return bool(self.statistics)

    def resolve(self) -> Callable[..., Any]:
        """The method's function (imports its module, which may import torch)."""
        return resolve(self.function)

    def bind(self, values: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Every hyperparameter's value: published defaults, overridden and checked."""
        return _check_params(self.params, values or {}, f"--method {self.name}")

    def combines_with(self, allocation: str) -> bool:
        return allocation in (self.allocations or tuple(ALLOCATIONS))

    def check_sizes(self, params: Mapping[str, Any], input_sizes: Mapping[str, int]) -> None:
        """Run :attr:`check_layers` (if any) on bound ``params`` and the model's linear input sizes."""
        if self.check_layers is not None:
            resolve(self.check_layers)(params, input_sizes)


@dataclass(frozen=True)
class AllocationSpec:
    """How a target sparsity is spread over decoder layers (uniform, or a layer-wise allocation).

    A layer-wise allocation names two functions (``"module:attribute"``, imported only when it
    runs): ``layer_values``, the pass over the dense model giving one number per decoder layer
    (``(model, input_ids, *, batch_size, device, offload, [row_languages,] **params) -> (values,
    seconds)``, ``row_languages`` when it needs a language mix), and ``sparsities``, the pure
    spreading of those numbers into per-layer sparsities (``(values, target, spread) -> list``).
    The manifest records the numbers under ``values_key``.
    """

    name: str
    summary: str
    needs_calibration: bool = False  # computed from the dense model's activations on the calibration shard
    needs_language_mix: bool = False
    unstructured_only: bool = False  # layer-wise ratios do not give pure N:M masks
    spread: Param | None = None  # the lambda: layer sparsities spread over a width of 2 * spread around the target
    params: tuple[Param, ...] = field(default=())  # further settings of the allocation's dense pass
    layer_values: str | None = None
    values_key: str | None = None
    sparsities: str | None = None

    def __post_init__(self) -> None:
        layer_wise = (self.layer_values, self.values_key, self.sparsities, self.spread)
        if any(part is None for part in layer_wise) != all(part is None for part in layer_wise):
            raise ValueError(f"allocation {self.name}: a layer-wise allocation needs layer_values, values_key, "
                             f"sparsities and spread, a uniform one none of them")
        if self.needs_calibration != (self.layer_values is not None):
            raise ValueError(f"allocation {self.name}: needs_calibration must say whether it has a dense pass")

    @property
    def all_params(self) -> tuple[Param, ...]:
        return (*self.params, *([self.spread] if self.spread else []))

    def resolve_layer_values(self) -> Callable[..., Any]:
        """The dense pass (imports its module, which imports torch)."""
        if self.layer_values is None:
            raise ValueError(f"allocation {self.name} has no dense pass")
        return resolve(self.layer_values)

    def resolve_sparsities(self) -> Callable[..., Any]:
        """The spreading of per-layer values into per-layer sparsities."""
        if self.sparsities is None:
            raise ValueError(f"allocation {self.name} spreads nothing")
        return resolve(self.sparsities)

    def bind(self, values: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return _check_params(self.all_params, values or {}, f"--allocation {self.name}")

    def check_feasible(self, sparsity: float, spread: float | None = None) -> None:
        """Every layer's sparsity must stay below 1 whatever the per-layer values turn out to be.

        The spreading (``prune.allocation``) scales the values into ``[0, 2 * spread]`` and centres
        them on their mean, so a layer can get up to ``sparsity + 2 * spread`` (less than that for
        any real set of values): only that bound rules out a job that would fail after its dense pass.
        """
        if self.spread is None:
            return
        spread = self.spread.default if spread is None else spread
        if not (math.isfinite(sparsity) and sparsity + 2 * spread <= 1):
            raise LangpruneError(
                f"--allocation {self.name}: --sparsity {sparsity:g} with {self.spread.flag} {spread:g} can give a "
                f"layer a sparsity of up to {sparsity:g} + 2 x {spread:g} = {sparsity + 2 * spread:g}, and every "
                f"layer must stay below 1; lower {self.spread.flag} or --sparsity")


def mask_only_methods() -> tuple[str, ...]:
    """DSnoT's possible initial masks: methods that change no weights and need no statistics beyond DSnoT's."""
    dsnot = METHODS["dsnot"]
    return tuple(name for name, spec in METHODS.items()
                 if name != "dsnot" and not spec.updates_weights and spec.statistics <= dsnot.statistics)


METHODS: dict[str, MethodSpec] = {spec.name: spec for spec in [
    MethodSpec("magnitude", "langprune.prune.methods:magnitude",
               "|W| with one threshold per matrix (no calibration)"),
    MethodSpec("wanda", "langprune.prune.methods:wanda",
               "|W| x input norm, compared per output row (Sun et al., 2024)", frozenset({SUMSQ})),
    MethodSpec("sparsegpt", "langprune.prune.methods:sparsegpt",
               "optimal-brain-surgeon pruning with weight updates (Frantar & Alistarh, 2023)",
               frozenset({SUMSQ, HESSIAN}), updates_weights=True, params=(
                   Param("bits", "--sparsegpt-bits", 0,
                         "also round every kept weight to this many bits in the same pass, the paper's joint "
                         "sparse + quantized mode (one asymmetric grid per output row; 0: off)",
                         range=Range(int, minimum=0, maximum=8), choices=(0, 2, 3, 4, 8)),)),
    MethodSpec("ria", "langprune.prune.ria:ria", "relative importance and activations (Zhang et al., 2024)",
               frozenset({SUMSQ}), params=(
                   Param("a", "--ria-a", 0.5, "activation exponent a", range=NON_NEGATIVE),
                   Param("per_outneuron", "--ria-per-outneuron", False,
                         "compare scores within each output row instead of the whole matrix"))),
    MethodSpec("dsnot", "langprune.prune.dsnot:dsnot",
               "training-free prune-and-grow refinement of another method's mask (Zhang et al., 2024)",
               frozenset({SUMSQ, MOMENTS}), unstructured_only=True, params=(
                   Param("initial", "--dsnot-initial", "wanda", "method whose mask is refined",
                         choices=mask_only_methods),
                   Param("max_cycles", "--dsnot-max-cycles", 50, "prune-and-grow cycles", range=POSITIVE_INT),
                   Param("update_threshold", "--dsnot-update-threshold", 0.1,
                         "a row stops once |expected error| <= this", range=NON_NEGATIVE),
                   Param("pow_of_var_regrowing", "--dsnot-pow-of-var", 1.0,
                         "power of the input variance dividing the grow score", range=NON_NEGATIVE),
                   Param("skip", "--dsnot-skip", "mlp",
                         "linears under modules with this name keep the initial mask (none: refine all)",
                         module_name=True))),
    MethodSpec("mwanda", "langprune.prune.mwanda:mwanda",
               "language-aware Wanda (Choenni & Titov, 2025; langprune's reading of the paper)",
               frozenset({SUMSQ, LANGUAGES}), needs_language_mix=True, params=(
                   Param("spread_weight", "--mwanda-spread-weight", 1.0,
                         "weight of the cross-language spread of input norms", range=NON_NEGATIVE),
                   Param("probability_weight", "--mwanda-probability-weight", 1.0,
                         "weight of the mean activation probability", range=NON_NEGATIVE))),
    MethodSpec("gptq", "langprune.prune.gptq:gptq",
               "weight quantization, each column's rounding error spread over the rest through the inverse "
               "Hessian (Frantar et al., 2023)", frozenset({SUMSQ, HESSIAN}), updates_weights=True,
               allocations=(UNIFORM,), quantizes=True, check_layers="langprune.gptq_settings:check_layers", params=(
                   Param("bits", "--gptq-bits", 4, "bits per weight (the reference's choices)",
                         range=Range(int, minimum=2, maximum=8), choices=(2, 3, 4, 8), spelling="w"),
                   Param("group_size", "--gptq-group-size", 128,
                         "input columns sharing one scale and zero point (0: one per output row)",
                         range=NON_NEGATIVE_INT, spelling="g"),
                   Param("symmetric", "--gptq-symmetric", False,
                         "symmetric grid: the zero point fixed at the middle of the code range", spelling="sym"),
                   Param("act_order", "--gptq-act-order", False,
                         "quantize columns in order of decreasing Hessian diagonal", spelling="act"),
                   Param("static_groups", "--gptq-static-groups", False,
                         "fix every group's grid from the weight before quantizing (with act-order, groups stay "
                         "runs of columns and need no per-column index)", spelling="static"))),
]}

_SPREAD = Range(float, minimum=0, maximum=1, max_open=True)

ALLOCATIONS: dict[str, AllocationSpec] = {spec.name: spec for spec in [
    AllocationSpec(UNIFORM, "every decoder layer at the target sparsity"),
    AllocationSpec("owl", "outlier-weighted layer-wise sparsity (Yin et al., 2024)", needs_calibration=True,
                   unstructured_only=True,
                   spread=Param("lambda", "--owl-lambda", 0.08, "OWL sparsity spread lambda", range=_SPREAD),
                   params=(Param("M", "--owl-m", 5.0, "OWL outlier threshold M", range=POSITIVE),),
                   layer_values="langprune.prune.dense_pass:layer_outlier_ratios", values_key="outlier_ratios",
                   sparsities="langprune.prune.allocation:owl_sparsities"),
    AllocationSpec("cwl", "M-Wanda's layer-wise sparsity from cross-lingual correlation", needs_calibration=True,
                   needs_language_mix=True, unstructured_only=True,
                   spread=Param("lambda", "--cwl-lambda", 0.08, "CWL sparsity spread lambda", range=_SPREAD),
                   layer_values="langprune.prune.dense_pass:layer_correlations", values_key="correlations",
                   sparsities="langprune.prune.allocation:cwl_sparsities"),
]}


def quantization_methods() -> tuple[str, ...]:
    """The registered methods that quantize (the config's ``quantization.methods``)."""
    return tuple(name for name, spec in METHODS.items() if spec.quantizes)


def method(name: str) -> MethodSpec:
    """The registered method ``name``; an unknown name is one error listing the known ones."""
    if name not in METHODS:
        raise LangpruneError(f"--method '{name}' is not one of: {', '.join(METHODS)}")
    return METHODS[name]


def allocation(name: str) -> AllocationSpec:
    if name not in ALLOCATIONS:
        raise LangpruneError(f"--allocation '{name}' is not one of: {', '.join(ALLOCATIONS)}")
    return ALLOCATIONS[name]
