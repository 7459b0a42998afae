# Config validation, wildcard constraints, input functions and target lists.
# Rules elsewhere only pick inputs and parameters through the helpers below; the
# work itself is done by `langprune` commands.

import os
import re
import shlex
from types import SimpleNamespace

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from langprune import variant
from langprune.config import BUILT_DIRS, SCHEMA_RELPATH, check_workflow_config
from langprune.errors import LangpruneError

# Reject a bad config before any job is planned, in one line that starts with the key to fix:
# each config file is read again strictly (Snakemake's YAML loader silently keeps the last of
# two equal keys), then the schema and cross-key checks of `langprune config check` run.
try:
    check_workflow_config(
        config, workflow.configfiles, os.path.join(workflow.basedir, SCHEMA_RELPATH), root=os.getcwd()
    )
except LangpruneError as _config_error:
    raise WorkflowError(str(_config_error)) from None
validate(config, schema="../schemas/config.schema.yaml", set_default=True)  # valid now; fills in defaults

MODELS = config["models"]
TOKENIZERS = config["tokenizers"]
CALIB = config["calibration"]
PRUNING = config["pruning"]
EVALUATION = config["evaluation"]
LANGUAGES = config["languages"]

CONDA_ENV = "../envs/langprune.yaml"

# A task's languages default to the top-level ones (a default the schema cannot express).
TASKS = {name: {"languages": LANGUAGES, **task} for name, task in EVALUATION["tasks"].items()}

# A variant's method as paths and tables spell it (variant.method_label: "wanda", "wanda+owl").
# OWL's allocation and DSnoT's refinement are built for unstructured masks only.
ALLOCATIONS = PRUNING["allocation"] if isinstance(PRUNING["allocation"], list) else [PRUNING["allocation"]]
METHOD_VARIANTS = [variant.method_label(m, a) for m in PRUNING["methods"] for a in ALLOCATIONS]
UNSTRUCTURED_ONLY_METHODS = {"dsnot"}
# M-Wanda's scores and CWL's allocation compare languages: built only for mixes of two or more.
MIXED_CALIBRATION_ONLY = {"mwanda", "cwl"}


def calibrates_on(method_variant, calib):
    """Whether a method variant is built with this calibration set (language-aware ones need a mix)."""
    return not MIXED_CALIBRATION_ONLY & set(variant.method_parts(method_variant)) or len(CALIB["sets"][calib]) > 1


def reads_no_calibration(method_variant):
    """Only uniform magnitude pruning runs without calibration data (OWL's outliers need it)."""
    return method_variant == "magnitude"


def allocation_flag(wildcards):
    """`--allocation NAME` for a non-uniform variant; none for uniform, so uniform runs keep
    their command line (and cache key)."""
    allocation = variant.method_parts(wildcards.method)[1]
    return "" if allocation == variant.UNIFORM else f"--allocation {allocation}"


def builds(method_variant, structure):
    """Whether a (method variant, structure) pair is a run: N:M only for uniform, non-refining methods."""
    method, allocation = variant.method_parts(method_variant)
    return structure == variant.UNSTRUCTURED or (
        allocation == variant.UNIFORM and method not in UNSTRUCTURED_ONLY_METHODS
    )


PERPLEXITY = EVALUATION["perplexity"]
MC = EVALUATION.get("multiple_choice")
BENCHMARKS = ["perplexity", *TASKS]


def _alternatives(values):
    """A wildcard constraint matching exactly these values (nothing at all for none)."""
    return "|".join(re.escape(str(v)) for v in values) or "(?!)"


wildcard_constraints:
    model=_alternatives(MODELS),
    tokenizer=_alternatives(TOKENIZERS),
    method=_alternatives(METHOD_VARIANTS),
    structure=_alternatives(variant.structure_slug(s) for s in PRUNING["structures"]),
    sparsity=_alternatives(PRUNING["sparsities"]),
    calib=_alternatives([*CALIB["sets"], variant.UNCALIBRATED]),
    seed=r"\d+",
    benchmark=_alternatives(BENCHMARKS),


# Models converted from GGUF files in PyPI wheels (rules in data.smk) and where they land.
GGUF_MODELS = {name: model for name, model in MODELS.items() if "gguf" in model}
for _name, _model in GGUF_MODELS.items():
    if _model["path"] != f"results/models/{_name}":
        raise WorkflowError(
            f"config key models.{_name}.path: a model with gguf: is built at results/models/{_name}; "
            f"set path to that (and tokenizers to it), not '{_model['path']}'"
        )

# Directories the workflow builds itself: the toy's assets and the converted models.
BUILT_DIRS = [*BUILT_DIRS, *(f"results/models/{name}" for name in GGUF_MODELS)]


def local_dependency(path):
    """The built directory that holds ``path`` (e.g. results/toy/text for results/toy/text/calib);
    hub ids and user-provided directories are no workflow inputs."""
    path = str(path).rstrip("/")
    return [d for d in BUILT_DIRS if path == d or path.startswith(f"{d}/")]


def tokenizer_input(wildcards):
    return local_dependency(TOKENIZERS[wildcards.tokenizer])


def model_input(wildcards):
    return local_dependency(MODELS[wildcards.model]["path"])


def text_source_input(source):
    """A `text:DIR` source built by the workflow is an input; mc4 is read from the hub."""
    return local_dependency(source[len("text:") :]) if source.startswith("text:") else []


def gguf_fetch_flags(wildcards):
    """`langprune model fetch-gguf` flags of one GGUF model: exact pins, parts in order, hash, licenses."""
    spec = GGUF_MODELS[wildcards.model]["gguf"]
    flags = [f"--package {p}" for p in spec["packages"]] + [f"--file {f}" for f in spec["files"]]
    flags += [f"--license {f}" for f in spec["licenses"]]
    return " ".join(flags + [f"--sha256 {spec['sha256']}"])


def gguf_dtype(wildcards):
    """The converted weights' dtype: the model's configured dtype, float32 for auto."""
    dtype = GGUF_MODELS[wildcards.model]["dtype"]
    return "float32" if dtype == "auto" else dtype


def calib_languages(wildcards):
    return ",".join(CALIB["sets"][wildcards.calib])


def shard_path(model, calib, seed):
    return variant.SHARD_FILE.format(tokenizer=MODELS[model]["tokenizer"], calib=calib, seed=seed)


def prune_calibration(wildcards):
    """The shard a prune job reads; magnitude reads none."""
    if reads_no_calibration(wildcards.method):
        return []
    return shard_path(wildcards.model, wildcards.calib, wildcards.seed)


def owl_ratios_input(wildcards):
    """An OWL variant reads the dense model's outlier ratios of its shard, computed once (rule owl_ratios)."""
    if variant.method_parts(wildcards.method)[1] != "owl":
        return []
    return f"results/owl_ratios/{wildcards.model}/{wildcards.calib}/seed{wildcards.seed}.json"


def revision_flag(wildcards):
    """`--revision REV` when the config pins the model's hub revision, else nothing."""
    revision = MODELS[wildcards.model]["revision"]
    return f"--revision {revision}" if revision else ""


def device(wildcards):
    return "cuda" if MODELS[wildcards.model]["gpu"] > 0 else "cpu"


def scaled(stage, key, jobs=1):
    """A resource callable: the stage's base value x the model's scale x the attempt number,
    so a job killed for memory or time is retried with more (x ``jobs`` when one job does several)."""

    def resource(wildcards, attempt):
        scale = MODELS[wildcards.model]["scale"] if hasattr(wildcards, "model") else 1
        return int(config[stage]["resources"][key] * scale * attempt * jobs)

    return resource


def gpus(wildcards):
    return MODELS[wildcards.model]["gpu"]


def stage_threads(stage):
    return config[stage]["resources"]["threads"]


def pruned_tags(wildcards):
    """`--tag ...` for every label of a pruned variant (its structure spelled '2:4', not '2of4')."""
    return variant.tag_flags(
        {
            "model": wildcards.model,
            "method": wildcards.method,
            "structure": variant.structure_from_slug(wildcards.structure),
            "sparsity": wildcards.sparsity,
            "calib": wildcards.calib,
            "seed": wildcards.seed,
        }
    )


def checkpoint_variants(model):
    """Every pruned variant of a model as its path part below results/checkpoints/<model>/.
    Magnitude reads no calibration data: one run per (structure, sparsity), filed under
    calibration variant.UNCALIBRATED ("none") and seed variant.UNCALIBRATED_SEED (0)."""
    variants = []
    for method in METHOD_VARIANTS:
        for structure in PRUNING["structures"]:
            if not builds(method, structure):
                continue
            for sparsity in PRUNING["sparsities"]:
                runs = (
                    [(variant.UNCALIBRATED, variant.UNCALIBRATED_SEED)]
                    if reads_no_calibration(method)
                    else [(c, s) for c in CALIB["sets"] if calibrates_on(method, c) for s in CALIB["seeds"]]
                )
                variants += [variant.variant_path(method, structure, sparsity, calib, seed) for calib, seed in runs]
    return variants


def metrics_files(model):
    """Every metrics JSON of one model: dense once, then each pruned variant."""
    variants = [variant.DENSE] + checkpoint_variants(model)
    return [
        variant.METRICS_FILE.format(model=model, variant=v, benchmark=benchmark)
        for v in variants
        for benchmark in BENCHMARKS
    ]


def metrics_tables():
    return [variant.METRICS_TABLE.format(model=model) for model in MODELS]


def task_data_input(wildcards):
    """Local task data an lm-eval benchmark reads: the toy's udhr_mc items."""
    return ["results/toy/mc"] if MC and wildcards.benchmark == "udhr_mc" else []


def evaluate_flags(benchmark):
    """The flags of one benchmark's `langprune evaluate perplexity|tasks` call: the only place
    that spells them, for the evaluate_perplexity/evaluate_tasks shells and a variant's `--run`s."""
    if benchmark == "perplexity":
        words = ["--source", PERPLEXITY["source"], "--languages", ",".join(LANGUAGES)]
        words += ["--seqlen", PERPLEXITY["seqlen"], "--max-tokens", PERPLEXITY["max_tokens"]]
        words += ["--batch-size", PERPLEXITY["batch_size"]] if PERPLEXITY.get("batch_size") else []
        return " ".join(map(str, words))
    task = TASKS[benchmark]
    words = ["--tasks", benchmark, "--languages", ",".join(task["languages"]), "--batch-size", task["batch_size"]]
    words += ["--limit", task["limit"]] if task.get("limit") else []
    for path in [*task_data_input(SimpleNamespace(benchmark=benchmark)), *prefetch_task_data(benchmark)]:
        words += ["--task-data", path]
    return " ".join(map(str, words))


def variant_inputs(wildcards):
    """What a variant's evaluation job (evaluation.group: variant) reads besides the model."""
    tasks_data = [path for b in TASKS for path in task_data_input(SimpleNamespace(benchmark=b))]
    return sorted({*text_source_input(PERPLEXITY["source"]), *tasks_data})


def variant_runs(wildcards):
    """Every benchmark of a variant as `--run` arguments of `langprune evaluate variant`."""
    runs = []
    for benchmark in BENCHMARKS:
        subcommand = "perplexity" if benchmark == "perplexity" else "tasks"
        runs.append(f"--run {shlex.quote(f'{subcommand} {evaluate_flags(benchmark)} --out {benchmark}.json')}")
    return " ".join(runs)


def all_targets():
    """Every final output: each model's metrics table, report tables and figures, and analyses."""
    return [*metrics_tables(), *report_targets(MODELS), *analysis_targets(MODELS)]
