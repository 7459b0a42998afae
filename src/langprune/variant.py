"""Run identity: the labels that name one evaluated model, spelled one way everywhere.

A variant is a base model, dense or pruned by (method, structure, sparsity) with one
calibration set and seed. Configs, checkpoint paths, manifests, metrics JSONs, tidy
tables, heatmap folders and the workflow's wildcards all spell it through this module.

A quantized variant fills the same three slots: the method, its setting's slug in the
structure slot (:func:`setting_slug`: ``w4g128-sym`` is 4 bits, groups of 128 columns,
symmetric; ``g0`` is one group per output row) and sparsity ``0`` (it removes no weight):
``gptq_w4g128-sym_0/de/seed0``. How each setting is spelled is declared beside it in the
method registry (``Param.spelling``); this module joins and parses the spellings.
It imports nothing beyond the standard library (and langprune.errors and the torch-free
langprune.registry) so the workflow can import it while it parses.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from . import registry
from .errors import LangpruneError

# Labels every metrics row and analysis table starts with, in this order (lists: pandas reads a
# tuple of keys as one key).
LABEL_KEYS = ["model", "method", "structure", "sparsity", "calib", "seed"]
# A pruning setting: the labels within which calibration sets and seeds are compared.
SETTING_KEYS = LABEL_KEYS[:4]

# The unpruned model's method.
DENSE = "dense"
# The calibration set of a run that read no calibration data (the dense model, magnitude).
UNCALIBRATED = "none"
# The seed under which an uncalibrated pruning run (magnitude) is filed.
UNCALIBRATED_SEED = 0
# A label that does not apply (the dense model's structure and seed).
NOT_APPLICABLE = "-"
UNSTRUCTURED = "unstructured"
DENSE_LABELS = {"method": DENSE, "structure": NOT_APPLICABLE, "sparsity": "0", "calib": UNCALIBRATED,
                "seed": NOT_APPLICABLE}
# Results written before one spelling existed named the dense model's calibration "-".
_LEGACY_UNCALIBRATED = {NOT_APPLICABLE, ""}

# A pruned variant's method label: the method, plus "+<allocation>" when sparsity is spread over
# layers other than uniformly ("wanda+owl"); uniform allocation adds nothing.
UNIFORM = "uniform"
ALLOCATION_SEPARATOR = "+"

# The sparsity label of a quantized variant: it keeps every weight.
QUANTIZED_SPARSITY = 0
# In a setting slug, a switch that is on follows the numbers after this ("w4g128-sym-act").
SWITCH_SEPARATOR = "-"

# A calibration mix named after its languages: "ar+de".
MIX_SEPARATOR = "+"

# N:M structures as path parts: ':' is a bad path character ("2:4" <-> "2of4").
_NM_SLUG = re.compile(r"^(\d+)of(\d+)$")

# Path templates, relative to the workflow's working directory. {variant} is a VARIANT_PATH
# (structure as its slug) or, for metrics and probe states, DENSE.
VARIANT_PATH = "{method}_{structure}_{sparsity}/{calib}/seed{seed}"
CHECKPOINT_DIR = "results/checkpoints/{model}/{variant}"
METRICS_FILE = "results/metrics/{model}/{variant}/{benchmark}.json"
METRICS_TABLE = "results/tables/{model}/metrics.csv"
HEATMAP_DIR = "results/figures/{model}/heatmaps"  # one folder per setting_name() inside
SHARD_FILE = "results/shards/{tokenizer}/{calib}/seed{seed}.safetensors"
# OWL's per-layer outlier ratios of the dense model on one shard, shared by every +owl variant of it.
OWL_RATIOS_FILE = "results/owl_ratios/{model}/{calib}/seed{seed}.json"
# The analyses of one model; probe hidden states per variant ({variant}: a VARIANT_PATH or DENSE).
ANALYSIS_DIR = "results/analysis/{model}"
HIDDEN_STATES_FILE = ANALYSIS_DIR + "/hidden/{variant}.safetensors"
_VARIANT_PATH = re.compile(r"^(?P<method>[^_/]+)_(?P<structure>[^_/]+)_(?P<sparsity>[^_/]+)/(?P<calib>[^/]+)"
                           r"/seed(?P<seed>\d+)$")


def pruned_pattern(template: str) -> str:
    """A path template with the pruned variant spelled as wildcards (for Snakemake rules)."""
    return template.replace("{variant}", VARIANT_PATH)


def structure_slug(structure: str) -> str:
    """The path spelling of a structure: '2:4' -> '2of4'; 'unstructured' stays."""
    return str(structure).strip().replace(":", "of")


def structure_from_slug(slug: str) -> str:
    """Inverse of :func:`structure_slug`: '2of4' -> '2:4'."""
    match = _NM_SLUG.match(slug)
    return f"{match.group(1)}:{match.group(2)}" if match else slug


def setting_slug(method: str, settings: Mapping[str, object]) -> str:
    """A quantization setting as the structure part of its variant name: each of the method's settings in
    the registry's order, an integer as its spelling + value ('w4', 'g128'), a switch that is on as
    '-' + its spelling ('-sym'), one that is off not at all: gptq, bits 4, group_size 128, symmetric ->
    'w4g128-sym'. Settings left out take the registry's defaults."""
    parts = []
    for param in registry.method(method).params:
        value = settings.get(param.name, param.default)
        if isinstance(value, bool):
            parts.append(f"{SWITCH_SEPARATOR}{param.spelling}" if value else "")
        else:
            parts.append(f"{param.spelling}{int(value)}")
    return "".join(parts)


def setting_values(method: str, slug: str) -> dict[str, object]:
    """Inverse of :func:`setting_slug`: 'w4g128-sym' -> every setting of gptq by name; a slug the method
    does not spell so is an error."""
    params = registry.method(method).params
    pattern = "".join(f"({re.escape(SWITCH_SEPARATOR + p.spelling)})?" if p.kind is bool
                      else f"{re.escape(p.spelling)}(0|[1-9]\\d*)" for p in params)
    match = re.fullmatch(pattern, str(slug))
    if match is None:
        example = setting_slug(method, {})
        raise LangpruneError(f"'{slug}' is not a setting of {method} as its variant names spell one (e.g. {example})")
    return {p.name: group is not None if p.kind is bool else int(group) for p, group in zip(params, match.groups())}


def method_label(method: str, allocation: str = UNIFORM) -> str:
    """'wanda', 'owl' -> 'wanda+owl'; 'wanda', 'uniform' -> 'wanda'."""
    return method if allocation in (UNIFORM, "", None) else f"{method}{ALLOCATION_SEPARATOR}{allocation}"


def method_parts(label: str) -> tuple[str, str]:
    """Inverse of :func:`method_label`: 'wanda+owl' -> ('wanda', 'owl'); 'wanda' -> ('wanda', 'uniform')."""
    method, _, allocation = str(label).partition(ALLOCATION_SEPARATOR)
    return method, allocation or UNIFORM


def mix_name(languages: Iterable[str]) -> str:
    """The calibration-set name of a shard's languages: 'de', or 'ar+de' for a mix."""
    return MIX_SEPARATOR.join(languages) or UNCALIBRATED


def mix_parts(calib: str) -> list[str]:
    """The languages a calibration-set name lists ('ar+de' -> ['ar', 'de']; 'all7' -> ['all7'])."""
    return calib.split(MIX_SEPARATOR)


def canonical_calib(calib: object) -> str:
    """One lower-case spelling of a calibration label; older results' '-' means uncalibrated."""
    text = str(calib if calib is not None else "").strip().lower()
    return UNCALIBRATED if text in _LEGACY_UNCALIBRATED else text


def is_uncalibrated(calib: str) -> bool:
    return canonical_calib(calib) == UNCALIBRATED


def variant_path(method: str, structure: str, sparsity: object, calib: str, seed: object) -> str:
    """A pruned variant below results/checkpoints/<model>/ (and results/metrics/<model>/)."""
    return VARIANT_PATH.format(method=method, structure=structure_slug(structure), sparsity=sparsity,
                               calib=calib, seed=seed)


def parse_variant_path(path: str) -> dict[str, str]:
    """Inverse of :func:`variant_path`: labels (structure as '2:4') of 'wanda_2of4_0.5/de/seed0'."""
    match = _VARIANT_PATH.match(str(path).strip("/"))
    if not match:
        example = VARIANT_PATH.format(method="wanda", structure="2of4", sparsity="0.5", calib="de", seed=0)
        raise LangpruneError(f"'{path}' is not a variant path like {example}")
    labels = match.groupdict()
    labels["structure"] = structure_from_slug(labels["structure"])
    return labels


def setting_name(labels: Mapping[str, object]) -> str:
    """A pruning setting as a folder name, the same as its checkpoint path part: 'sparsegpt_2of4_0.5'."""
    return VARIANT_PATH.split("/", 1)[0].format(method=labels["method"], structure=structure_slug(labels["structure"]),
                                                sparsity=labels["sparsity"])


def variant_labels(tags: Mapping[str, object]) -> dict[str, str]:
    """The LABEL_KEYS of a tag dict as strings ('-' where a tag is missing)."""
    labels = {key: str(tags.get(key, NOT_APPLICABLE)) for key in LABEL_KEYS}
    if "calib" in tags:
        labels["calib"] = canonical_calib(labels["calib"])
    return labels


def checkpoint_labels(manifest: Mapping[str, object] | None) -> dict[str, str]:
    """The labels a checkpoint's manifest records by itself (method with its allocation, structure,
    sparsity, seed, and the calibration mix of its shard; a quantized one's setting slug and sparsity
    0): what a run pruned from the command line without ``--tag`` is labelled by."""
    if not manifest:
        return {}
    labels = {k: str(manifest[k]) for k in ("method", "structure", "sparsity", "seed") if manifest.get(k) is not None}
    spec = registry.METHODS.get(labels.get("method", ""))
    if spec is not None and spec.quantizes and "structure" not in labels:  # named by its setting, as in the grid
        labels["structure"] = setting_slug(spec.name, manifest.get("method_params") or {})
        labels["sparsity"] = str(QUANTIZED_SPARSITY)
    if "method" in labels:
        labels["method"] = method_label(labels["method"], (manifest.get("allocation") or {}).get("name", UNIFORM))
    shard = (manifest.get("calibration") or {}).get("shard") or {}
    labels["calib"] = mix_name(shard.get("languages") or [])
    return labels


def run_labels(model: object, recorded: Mapping[str, object] | None, tags: Mapping[str, object] | None, *,
               dense: bool) -> dict[str, str | None]:
    """The LABEL_KEYS of one evaluated or analysed run, derived in one place: the dense model's labels
    (or, for a checkpoint, its :func:`checkpoint_labels` ``recorded``), overridden by the run's tags.
    A label neither gives is None."""
    labels: dict[str, object] = dict(DENSE_LABELS) if dense else {key: None for key in LABEL_KEYS}
    labels["model"] = model
    labels.update(recorded or {})
    labels.update(tags or {})
    text = {key: None if value is None else str(value) for key, value in labels.items()}
    if text["calib"] is not None:
        text["calib"] = canonical_calib(text["calib"])
    return text


def parse_tag(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` -> (key, value): the ``--tag`` flag of prune, evaluate and analyze."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise LangpruneError(f"--tag '{text}' must look like KEY=VALUE (e.g. --tag calib=de)")
    return key.strip(), value


def parse_tags(pairs: Iterable[str] | None) -> dict[str, str]:
    """``["model=llama", "seed=0"]`` -> dict."""
    return dict(parse_tag(pair) for pair in pairs or ())


def tag_flags(labels: Mapping[str, object]) -> str:
    """`--tag k=v ...` for the labels a run records (the workflow's shell commands)."""
    return " ".join(f"--tag {key}={value}" for key, value in labels.items())
