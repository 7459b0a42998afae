"""The experiment design: which shards, checkpoints, evaluations and analyses a config builds.

:class:`Grid` reads a checked config (``langprune.config.check_config``: valid, defaults
filled) and answers every question the workflow's rules ask while Snakemake plans: the
pruned and quantized variants of each model with the shard and OWL-ratios file they read,
the evaluations and the analysed checkpoints of each model, and their paths (spelled by
:mod:`langprune.variant`). Which (method, allocation, structure, calibration set) pairs are
built follows from the traits in :mod:`langprune.registry` alone, so a new method is in the
grid as soon as it is registered. A quantization method's variants are its configured
settings (``quantization.methods``), each named by its setting slug in the structure slot.
``langprune plan`` and ``langprune config check`` read the same object. Torch-free: the
workflow imports it while it parses.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from . import registry, variant
from .errors import LangpruneError
from .owl_ratios import ALLOCATION as RATIOS_FILE_ALLOCATION

# Directories the workflow builds itself: the toy's assets (with a `toy:` section) and the
# models converted from GGUF files (GGUF_MODEL_DIR); a path inside one is a workflow output.
TOY_TEXT = "results/toy/text"
TOY_TOKENIZER = "results/toy/tokenizer"
TOY_MODEL = "results/toy/model"
TOY_MC = "results/toy/mc"
TOY_DIRS = [TOY_TEXT, TOY_TOKENIZER, TOY_MODEL, TOY_MC]
# `langprune toy model`'s default shape (the schema's toy.model defaults).
TOY_SHAPE = {"hidden": 128, "layers": 4, "heads": 4, "kv_heads": 2, "intermediate": 384}
GGUF_MODEL_DIR = "results/models/{model}"
BELEBELE_PROBE = "results/analysis/probe/belebele"
# The analyses of each model, in the order the workflow names them (analysis.smk: one rule each).
ANALYSES = ("features", "drift", "masks", "neurons")
PERPLEXITY = "perplexity"  # the benchmark every variant is evaluated on, besides evaluation.tasks


def default_probe(config: Mapping[str, Any]) -> str:
    """The analysis probe when `analysis.probe` is unset: the toy's held-out articles, else Belebele."""
    return f"text:{TOY_TEXT}/probe" if config.get("toy") else "belebele"


def allocation_names(config: Mapping[str, Any]) -> list[str]:
    """`pruning.allocation` as a list (one name or a list of names)."""
    allocation = config["pruning"].get("allocation", registry.UNIFORM)
    return list(allocation) if isinstance(allocation, list) else [allocation]


@dataclass(frozen=True)
class Shard:
    """One calibration shard: a tokenizer's tokens of one calibration set under one seed."""

    tokenizer: str
    calib: str
    seed: int
    languages: tuple[str, ...]

    @property
    def path(self) -> str:
        return variant.SHARD_FILE.format(tokenizer=self.tokenizer, calib=self.calib, seed=self.seed)


@dataclass(frozen=True)
class Checkpoint:
    """One pruned or quantized variant of one model and what its prune job reads."""

    model: str
    method: str  # the registered method
    allocation: str  # the registered allocation (registry.UNIFORM for none)
    structure: str  # as configured: 'unstructured', '2:4'; a quantized variant's setting slug: 'w4g128-sym'
    sparsity: Any  # as configured (0.5), spelled by variant.variant_path; variant.QUANTIZED_SPARSITY if quantized
    calib: str  # a calibration set, or variant.UNCALIBRATED
    seed: int
    shard: Shard | None  # None: the variant reads no calibration data
    owl_ratios: str | None  # the OWL-ratios file it reads: the allocation's dense pass, computed once per shard
    settings: tuple[tuple[str, Any], ...] = ()  # a quantized variant's settings (name, value), the registry's order

    @property
    def quantizes(self) -> bool:
        return registry.method(self.method).quantizes

    @property
    def prune_flags(self) -> list[str]:
        """What `langprune prune` is told besides the method: the sparsity and structure of a pruned
        variant, the registry's flags of a quantized variant's settings (switches only when on)."""
        if not self.quantizes:
            return ["--sparsity", str(self.sparsity), "--structure", self.structure]
        params = {p.name: p for p in registry.method(self.method).params}
        flags: list[str] = []
        for name, value in self.settings:
            if isinstance(value, bool):
                flags += [params[name].flag] if value else []
            else:
                flags += [params[name].flag, str(value)]
        return flags

    @property
    def label(self) -> str:
        """The method as paths and tables spell it: 'wanda', 'wanda+owl'."""
        return variant.method_label(self.method, self.allocation)

    @property
    def path(self) -> str:
        """The variant below results/checkpoints/<model>/ (and results/metrics/<model>/)."""
        return variant.variant_path(self.label, self.structure, self.sparsity, self.calib, self.seed)

    @property
    def directory(self) -> str:
        return variant.CHECKPOINT_DIR.format(model=self.model, variant=self.path)

    @property
    def hidden_states(self) -> str:
        return variant.HIDDEN_STATES_FILE.format(model=self.model, variant=self.path)

    @property
    def labels(self) -> dict[str, str]:
        """The labels its prune job tags the checkpoint with (structure spelled '2:4')."""
        return {"model": self.model, "method": self.label, "structure": self.structure,
                "sparsity": str(self.sparsity), "calib": self.calib, "seed": str(self.seed)}


@dataclass(frozen=True)
class Evaluation:
    """One benchmark of one variant (``checkpoint`` None: the dense model)."""

    model: str
    checkpoint: Checkpoint | None
    benchmark: str

    @property
    def path(self) -> str:
        part = variant.DENSE if self.checkpoint is None else self.checkpoint.path
        return variant.METRICS_FILE.format(model=self.model, variant=part, benchmark=self.benchmark)


@dataclass(frozen=True)
class AnalysisSettings:
    """The analysis section with the defaults that depend on other keys resolved."""

    languages: list[str]
    probe: str  # text:DIR or belebele
    methods: list[str]  # registered method names (pruning and quantization); every allocation of each is analysed
    calibrations: list[str]  # calibration sets analysed, plus variant.UNCALIBRATED (magnitude's run)
    one_job_per_model: bool
    # The probe passes run inside the evaluation jobs, on the model they load anyway (evaluation.group:
    # variant); else in jobs of their own (one per model with one_job_per_model, else one per variant).
    in_evaluation: bool


class Grid:
    """The design of one checked config (see the module docstring)."""

    def __init__(self, config: Mapping[str, Any]):
        self.config = config
        self.models: dict[str, dict] = dict(config["models"])
        self.tokenizers: dict[str, str] = dict(config["tokenizers"])
        calibration, pruning = config["calibration"], config["pruning"]
        self.calibration_sets: dict[str, list[str]] = dict(calibration["sets"])
        self.seeds: list[int] = list(calibration["seeds"])
        self.methods: list[str] = list(pruning["methods"])
        self.allocations: list[str] = allocation_names(config)
        self.structures: list[str] = [str(s) for s in pruning["structures"]]
        self.sparsities: list = list(pruning["sparsities"])
        quantization = config.get("quantization") or {}
        # method -> its configured settings, each bound (registry defaults filled in), as a (name, value) tuple
        self.quantization: dict[str, list[tuple[tuple[str, Any], ...]]] = {
            method: list(dict.fromkeys(tuple(registry.method(method).bind(setting).items()) for setting in settings))
            for method, settings in (quantization.get("methods") or {}).items()}
        self.quantized_models: list[str] = list(quantization.get("models", self.models))
        evaluation = config["evaluation"]
        languages = list(config["languages"])
        self.languages = languages
        # A task's languages default to the top-level ones (a default the schema cannot express).
        self.tasks: dict[str, dict] = {name: {"languages": languages, **(task or {})}
                                       for name, task in (evaluation.get("tasks") or {}).items()}
        self.benchmarks: list[str] = [PERPLEXITY, *self.tasks]

    # ------------------------------------------------------------------ what a variant is built from

    @staticmethod
    def builds(method: str, allocation: str, structure: str) -> bool:
        """Whether (method, allocation) is built for ``structure``: N:M masks only where neither
        the method nor the allocation is unstructured-only. A quantization method builds no pruned
        variant (structure x sparsity): its variants are its settings."""
        spec, alloc = registry.method(method), registry.allocation(allocation)
        if spec.quantizes:
            return False
        return structure == variant.UNSTRUCTURED or not (spec.unstructured_only or alloc.unstructured_only)

    @staticmethod
    def reads_calibration(method: str, allocation: str) -> bool:
        return registry.method(method).needs_calibration or registry.allocation(allocation).needs_calibration

    def calibrates_on(self, method: str, allocation: str, calib: str) -> bool:
        """Whether (method, allocation) is built with this calibration set: language-aware ones need a mix."""
        needs_mix = registry.method(method).needs_language_mix or registry.allocation(allocation).needs_language_mix
        return not needs_mix or len(self.calibration_sets[calib]) > 1

    @cached_property
    def method_pairs(self) -> list[tuple[str, str]]:
        """(method, allocation) of every configured method under every allocation it combines with."""
        return [(m, a) for m in self.methods for a in self.allocations if registry.method(m).combines_with(a)]

    @property
    def method_labels(self) -> list[str]:
        """The pruned variants' method labels."""
        return [variant.method_label(m, a) for m, a in self.method_pairs]

    @property
    def all_methods(self) -> list[str]:
        """Every configured method: pruning.methods, then the quantization methods."""
        return [*self.methods, *(m for m in self.quantization if m not in self.methods)]

    @property
    def variant_method_labels(self) -> list[str]:
        """The method part of every variant path: pruned ones' labels, then the quantization methods."""
        return [*self.method_labels, *self.quantization]

    @property
    def structure_slugs(self) -> list[str]:
        """The structure part of every variant path: pruning structures, then quantization setting slugs."""
        slugs = [variant.structure_slug(s) for s in self.structures]
        return slugs + [variant.setting_slug(m, dict(s)) for m, settings in self.quantization.items() for s in settings]

    @property
    def sparsity_labels(self) -> list:
        """The sparsity part of every variant path (a quantized variant's is variant.QUANTIZED_SPARSITY)."""
        return [*self.sparsities, *([variant.QUANTIZED_SPARSITY] if self.quantization else [])]

    def runs(self, method: str, allocation: str) -> list[tuple[str, int]]:
        """(calibration set, seed) of each run of a pair; one uncalibrated run for a pair that reads no data."""
        if not self.reads_calibration(method, allocation):
            return [(variant.UNCALIBRATED, variant.UNCALIBRATED_SEED)]
        return [(c, s) for c in self.calibration_sets if self.calibrates_on(method, allocation, c) for s in self.seeds]

    # ------------------------------------------------------------------ shards and checkpoints

    def _model(self, model: str) -> dict:
        if model not in self.models:
            raise LangpruneError(f"model '{model}' is not a key of models ({', '.join(self.models)})")
        return self.models[model]

    def shard(self, model: str, calib: str, seed: int | str) -> Shard:
        """The shard a model's runs with this calibration set and seed read (shards are per tokenizer)."""
        return Shard(self._model(model)["tokenizer"], calib, int(seed), tuple(self.calibration_sets[calib]))

    def checkpoint(self, model: str, label: str, structure: str, sparsity: Any, calib: str,
                   seed: int | str) -> Checkpoint:
        """The variant with these labels and what it reads, from the registry's traits (the workflow
        asks for it by its path's wildcards). A quantized variant's structure is its setting slug."""
        method, allocation = variant.method_parts(label)
        shard = self.shard(model, calib, seed) if self.reads_calibration(method, allocation) else None
        ratios = (variant.OWL_RATIOS_FILE.format(model=model, calib=calib, seed=int(seed))
                  if shard is not None and allocation == RATIOS_FILE_ALLOCATION else None)
        if registry.method(method).quantizes:
            return Checkpoint(model, method, allocation, str(structure), variant.QUANTIZED_SPARSITY, calib,
                              int(seed), shard, ratios, tuple(variant.setting_values(method, str(structure)).items()))
        return Checkpoint(model, method, allocation, variant.structure_from_slug(str(structure)), sparsity, calib,
                          int(seed), shard, ratios)

    def pruned_checkpoints(self, model: str) -> list[Checkpoint]:
        """Every pruned variant of ``model``."""
        self._model(model)
        return [self.checkpoint(model, variant.method_label(m, a), structure, sparsity, calib, seed)
                for m, a in self.method_pairs
                for structure in self.structures if self.builds(m, a, structure)
                for sparsity in self.sparsities
                for calib, seed in self.runs(m, a)]

    def quantized_checkpoints(self, model: str) -> list[Checkpoint]:
        """Every quantized variant of ``model``: each configured setting x calibration set x seed."""
        self._model(model)
        if model not in self.quantized_models:
            return []
        return [self.checkpoint(model, method, variant.setting_slug(method, dict(setting)),
                                variant.QUANTIZED_SPARSITY, calib, seed)
                for method, settings in self.quantization.items()
                for setting in settings
                for calib, seed in self.runs(method, registry.UNIFORM)]

    def checkpoints(self, model: str) -> list[Checkpoint]:
        """Every variant of ``model``: the pruned ones, then the quantized ones."""
        return self.pruned_checkpoints(model) + self.quantized_checkpoints(model)

    def all_checkpoints(self) -> Iterator[Checkpoint]:
        for model in self.models:
            yield from self.checkpoints(model)

    def shards(self) -> list[Shard]:
        """Every shard some prune job reads, once."""
        return list(dict.fromkeys(c.shard for c in self.all_checkpoints() if c.shard is not None))

    def owl_ratios(self) -> list[tuple[str, Shard, str]]:
        """(model, shard, path) of every dense-pass ratios file some prune job reads, once."""
        return list(dict.fromkeys((c.model, c.shard, c.owl_ratios) for c in self.all_checkpoints() if c.owl_ratios))

    # ------------------------------------------------------------------ evaluations and analyses

    def evaluations(self, model: str) -> list[Evaluation]:
        """Every benchmark of the dense model, then of each pruned variant."""
        variants = [None, *self.checkpoints(model)]
        return [Evaluation(model, c, b) for c in variants for b in self.benchmarks]

    def evaluation_dtype(self, model: str) -> str:
        """The dtype ``model`` is evaluated and probed in: ``evaluation.dtype``, else the model's own (its
        pruning dtype)."""
        return self.config["evaluation"].get("dtype") or self._model(model)["dtype"]

    @cached_property
    def analysis(self) -> AnalysisSettings:
        section = self.config.get("analysis") or {}
        grouped = section.get("one_job_per_model", all(m.get("gpu", 0) == 0 for m in self.models.values()))
        return AnalysisSettings(
            languages=list(section.get("languages", self.languages)),
            probe=section.get("probe", default_probe(self.config)),
            methods=list(section.get("methods", self.all_methods)),
            calibrations=[*section.get("calibrations", self.calibration_sets), variant.UNCALIBRATED],
            one_job_per_model=bool(grouped),
            in_evaluation=self.config["evaluation"]["group"] == "variant",
        )

    def analysis_checkpoints(self, model: str) -> list[Checkpoint]:
        """The variants of ``model`` whose probe states are analysed (feature change, drift): every
        variant (any allocation, quantized ones too) of the analysed methods and calibration sets."""
        settings = self.analysis
        return [c for c in self.checkpoints(model)
                if c.method in settings.methods and c.calib in settings.calibrations]

    @property
    def analysed_labels(self) -> list[str]:
        """The method labels (every allocation) of the analysed methods: with ``analysis.calibrations``,
        which variants' evaluation jobs also write probe states when those run inside them."""
        return list(dict.fromkeys(c.label for c in self.all_checkpoints() if c.method in self.analysis.methods))

    def mask_checkpoints(self, model: str) -> list[Checkpoint]:
        """The analysed variants whose masks are compared (mask overlap, language-specific neurons):
        those of methods that write masks (registry trait), so no quantized one."""
        return [c for c in self.analysis_checkpoints(model) if registry.method(c.method).writes_masks]

    def mask_pairs(self, model: str) -> int:
        """The most mask checkpoints of ``model`` that share one pruning setting (method label, structure,
        sparsity): the mask overlap compares checkpoints of one setting, so it needs two."""
        settings = Counter((c.label, c.structure, c.sparsity) for c in self.mask_checkpoints(model))
        return max(settings.values(), default=0)

    def analyses(self, model: str) -> list[str]:
        """The analyses built for ``model``, in ANALYSES' order: all of them, but the mask overlap only
        where two of its checkpoints share a pruning setting (one calibration set and one seed leave
        nothing to compare)."""
        return [name for name in ANALYSES if name != "masks" or self.mask_pairs(model) >= 2]

    def analysis_groups(self) -> list[tuple[list[str], list[str]]]:
        """(models, variant paths) of the models that share one list of analysed variants (models
        with none are left out): a one-job-per-model probe pass writes that list for each of them."""
        groups: dict[tuple[str, ...], list[str]] = {}
        for model in self.models:
            paths = tuple(c.path for c in self.analysis_checkpoints(model))
            if paths:
                groups.setdefault(paths, []).append(model)
        return [(models, list(paths)) for paths, models in groups.items()]

    # ------------------------------------------------------------------ what the workflow builds

    def toy_shape(self, model: str) -> dict | None:
        """The shape of the toy model (toy.model over its defaults) when ``model`` is it."""
        if "toy" in self.config and self.local_dependency(self._model(model)["path"]) == [TOY_MODEL]:
            return {**TOY_SHAPE, **self.config["toy"].get("model", {})}
        return None

    def input_sizes(self, model: str) -> dict[str, int]:
        """Input columns of the decoder-layer linears of ``model``, as far as the config tells them before
        the model exists: the toy's from toy.model; none for any other model (its prune job checks its
        own before the weights load)."""
        shape = self.toy_shape(model)
        if shape is None:
            return {}
        return {"the toy's q/k/v/gate/up_proj (toy.model.hidden)": shape["hidden"],
                "the toy's o_proj (toy.model.heads x head size)": shape["heads"] * (shape["hidden"] // shape["heads"]),
                "the toy's down_proj (toy.model.intermediate)": shape["intermediate"]}

    @cached_property
    def gguf_models(self) -> dict[str, dict]:
        """Models converted from GGUF files in PyPI wheels (built at GGUF_MODEL_DIR)."""
        return {name: model for name, model in self.models.items() if "gguf" in model}

    @cached_property
    def built_dirs(self) -> list[str]:
        """Directories the workflow builds itself: the toy's assets and the converted GGUF models."""
        toy = TOY_DIRS if "toy" in self.config else []
        return [*toy, *(GGUF_MODEL_DIR.format(model=name) for name in self.gguf_models)]

    def local_dependency(self, path: str) -> list[str]:
        """The built directory that holds ``path`` (results/toy/text for results/toy/text/calib);
        hub ids and user-provided directories are no workflow inputs."""
        path = str(path).rstrip("/")
        return [d for d in self.built_dirs if path == d or path.startswith(f"{d}/")]

    def text_source_dependency(self, source: str) -> list[str]:
        """A `text:DIR` source built by the workflow; mc4 and user directories are none."""
        return self.local_dependency(source[len("text:"):]) if source.startswith("text:") else []

    def task_data(self, benchmark: str) -> list[str]:
        """Local task data a benchmark reads: the udhr_mc items built from text."""
        return [TOY_MC] if self.config["evaluation"].get("multiple_choice") and benchmark == "udhr_mc" else []


def pairs_without_checkpoints(grid: Grid) -> Iterator[tuple[str, str, str]]:
    """(config key, value, why) for each configured allocation, method and structure no pruned variant
    is built with: configuring it does nothing, which is never what was meant."""
    built = [c for model in grid.models for c in grid.pruned_checkpoints(model)]
    for allocation in grid.allocations:
        if not any(c.allocation == allocation for c in built):
            yield "pruning.allocation", allocation, _why(grid, [(m, allocation) for m in grid.methods])
    for method in grid.methods:
        if not any(c.method == method for c in built):
            yield "pruning.methods", method, _why(grid, [(method, a) for a in grid.allocations])
    for structure in grid.structures:
        if not any(c.structure == structure for c in built):
            yield "pruning.structures", structure, (
                "every configured method and allocation is unstructured-only "
                f"({', '.join(grid.method_labels)}); add a method and allocation that build N:M masks")


def _why(grid: Grid, pairs: list[tuple[str, str]]) -> str:
    """Why none of these (method, allocation) pairs builds a variant, naming the keys to change."""
    reasons: dict[str, list[str]] = {}
    for method, allocation in pairs:
        label = variant.method_label(method, allocation)
        if registry.method(method).quantizes:
            reasons.setdefault("a quantization method (no structure or sparsity), whose variants are its settings: "
                               "list it under quantization.methods", []).append(method)
        elif not registry.method(method).combines_with(allocation):
            reasons.setdefault(f"do not combine with allocation {allocation}", []).append(method)
        elif not any(grid.builds(method, allocation, s) for s in grid.structures):
            reasons.setdefault(f"unstructured-only and pruning.structures has only {', '.join(grid.structures)}",
                               []).append(label)
        elif not grid.runs(method, allocation):
            reasons.setdefault(f"calibrated on a set mixing two or more languages and calibration.sets has "
                               f"none ({', '.join(grid.calibration_sets)})", []).append(label)
    reasons = {reason: list(dict.fromkeys(labels)) for reason, labels in reasons.items()}
    return "; ".join(f"{', '.join(labels)} {'is' if len(labels) == 1 else 'are'} "
                     f"{'only ' if reason.startswith('calibrated') else ''}{reason}"
                     for reason, labels in reasons.items())
