"""`langprune plan`: what a config asks of a cluster, from the grid alone (no Snakemake).

Jobs per rule are counted from :class:`langprune.grid.Grid` the way the rules in
``workflow/rules/`` map it to files, so they equal what ``snakemake -n`` plans in an empty
working directory (a test compares the two). GPU time and disk come from the per-job costs
below, stated for one reference job and scaled to the config's sizes, and from the
config's ``resources`` (the time limits a scheduler is asked for).

Which costs are measured: the evaluation backends' scoring ratios (on a CPU) and the file
formats' sizes (exact); the GPU minutes are extrapolated from FLOP counts at Llama-3-8B
size, since no GPU was measured (docs/scaling.md says how; replace them with
``benchmarks/bench_prune.py --gpu`` and ``benchmarks/bench_eval.py`` figures).
Torch-free.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from . import registry
from .grid import ANALYSES, TOY_MC, TOY_MODEL, TOY_TEXT, TOY_TOKENIZER, Checkpoint, Grid
from .prefetch import reads_hub

# ------------------------------------------------------------------------------------- per-job costs

# The reference every cost below is stated for: the paper's grid (config/paper.yaml).
REFERENCE_SCALE = 8  # models.*.scale read as billions of parameters (Llama-3-8B, Aya-23-8B)
REFERENCE_CALIBRATION_TOKENS = 128 * 8192  # calibration.nsamples x seqlen
REFERENCE_PERPLEXITY_TOKENS = 7 * 262144  # languages x evaluation.perplexity.max_tokens
REFERENCE_TASK_LANGUAGES = 7
REFERENCE_PROBE_TOKENS = 7 * 200 * 256  # analysis languages x max_passages x max_length
# Decoder-linear weights (the pruned ones) per unit of scale: Llama-3-8B's 6.98 G of "8".
PRUNED_WEIGHTS_PER_SCALE = 6.98e9 / REFERENCE_SCALE
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "auto": 2}  # auto: the hub checkpoints' bf16


@dataclass(frozen=True)
class Cost:
    """GPU minutes of one job at the reference, with a planning bound where one is stated."""

    minutes: float
    bound: float | None
    basis: str
    measured: bool = False


LOAD = Cost(1.0, None, "loading an 8B bf16 model and applying a checkpoint (extrapolated)")
# Pruning, per method (a method without an entry has no stated cost and is left out of the totals).
PRUNE_COSTS = {
    "wanda": Cost(5.0, 10.0, "two layer-wise passes over 1.05 M tokens: 2 x 2.1e16 FLOP at 3e14 FLOP/s, x 1.12 "
                             "for statistics and masks (CPU ratio), + 70 s error measurement, + 1 min loading"),
    "sparsegpt": Cost(7.0, 25.0, "as wanda, x 1.78 for fp32 Hessians and OBS column updates (CPU ratio)"),
}
# A method without its own cost that collects SparseGPT's Hessian (GPTQ: the same layer-wise pass and
# column sweep, measured no slower on a CPU) is costed as SparseGPT, and says so.
HESSIAN_COST_OF = "sparsegpt"


def prune_cost(method: str) -> tuple[Cost | None, str]:
    """The per-job cost of ``method`` and what it is: its own, SparseGPT's for a Hessian method, or none."""
    if method in PRUNE_COSTS:
        return PRUNE_COSTS[method], ""
    if registry.HESSIAN in registry.method(method).statistics:
        return PRUNE_COSTS[HESSIAN_COST_OF], f"{HESSIAN_COST_OF}'s cost (the same Hessian pass; not its own), "
    return None, ""
# Scoring one benchmark of one variant with lm-eval's HFLM, the model already loaded.
SCORING_COSTS = {
    "perplexity": Cost(3.0, None, "1.8 M tokens forward (own code, the same under either backend)"),
    "task": Cost(19.0, None, "one lm-eval task family in 7 languages, dominated by MMLU/HellaSwag item counts "
                             "x 4 choices"),
}
PROBE_COST = Cost(2.0, None, "200 passages x 7 languages x 256 tokens, one forward pass (+ 1 min loading)")
# Scoring time of the shared-context backend / HFLM, per task (measured on a CPU, small random Llama,
# benchmarks/RESULTS.md); tasks without one are counted at 1.
SHARED_RATIOS = {"hellaswag": 0.48, "arc": 0.29, "mmlu": 0.85, "belebele": 0.82, "mkqa": 1.0}
BACKENDS = ("shared", "hflm")

# Sizes of one file.
METRICS_JSON_BYTES = 50e3  # an upper bound (records of 7 languages x a few metrics)
REFERENCE_HIDDEN = 4096  # Llama-3-8B's hidden size


# ------------------------------------------------------------------------------------- jobs per rule

def _needed_dirs(grid: Grid) -> set[str]:
    """The workflow-built directories some planned job reads (with what building them reads)."""
    config = grid.config
    paths = [model["path"] for model in grid.models.values()]
    shards = grid.shards()
    paths += [grid.tokenizers[t] for t in {s.tokenizer for s in shards}]
    dirs = {d for p in paths for d in grid.local_dependency(p)}
    sources = [config["evaluation"]["perplexity"]["source"]]
    sources += [config["calibration"]["source"]] if shards else []
    probe = grid.analysis.probe
    sources += [] if probe == "belebele" else [probe]
    dirs |= {d for source in sources for d in grid.text_source_dependency(source)}
    dirs |= {d for b in grid.tasks for d in grid.task_data(b)}
    if TOY_MC in dirs:
        dirs |= set(grid.text_source_dependency(config["evaluation"]["multiple_choice"]["source"]))
    if TOY_MODEL in dirs:
        dirs |= {TOY_TEXT, TOY_TOKENIZER}
    if TOY_TOKENIZER in dirs:
        dirs.add(TOY_TEXT)
    return dirs


def jobs_per_rule(grid: Grid) -> dict[str, int]:
    """Jobs per rule of the whole workflow in an empty working directory (``snakemake -n``'s Job stats)."""
    counts: Counter[str] = Counter()
    dirs = _needed_dirs(grid)
    built = {TOY_TEXT: "toy_corpus", TOY_TOKENIZER: "toy_tokenizer", TOY_MODEL: "toy_model",
             TOY_MC: "multiple_choice_items"}
    for directory, rule in built.items():
        counts[rule] = int(directory in dirs)
    counts["fetch_udhr"] = counts["toy_corpus"]
    gguf = sum(d in dirs for d in grid.built_dirs if d not in built)
    counts["fetch_gguf"] = counts["gguf_model"] = gguf
    models = len(grid.models)
    checkpoints = sum(len(grid.checkpoints(m)) for m in grid.models)
    counts["calibration_shard"] = len(grid.shards())
    counts["owl_ratios"] = len(grid.owl_ratios())
    counts["prune"] = checkpoints
    tasks = len(grid.tasks)
    analysed = sum(len(grid.analysis_checkpoints(m)) for m in grid.models)
    if grid.config["evaluation"]["group"] == "variant":  # analysed variants' jobs also write their probe states
        counts["evaluate_pruned_variant"], counts["evaluate_analysed_variant"] = checkpoints - analysed, analysed
        counts["evaluate_dense_variant"] = models
    else:
        counts["evaluate_perplexity"], counts["evaluate_tasks"] = checkpoints, checkpoints * tasks
        counts["evaluate_perplexity_dense"], counts["evaluate_tasks_dense"] = models, models * tasks
    for rule in ("gather_metrics", "report_tables", "report_significance", "report_summary", "report_figures"):
        counts[rule] = models
    counts["analysis_probe_text"] = int(grid.analysis.probe == "belebele")
    counts["prefetch"] = int(reads_hub(grid))  # what the jobs read from the hub, fetched first
    if not grid.analysis.in_evaluation:
        counts["analysis_hidden_dense"] = models
        if grid.analysis.one_job_per_model:
            for index, (group, _) in enumerate(grid.analysis_groups()):
                counts["analysis_hidden_pruned_all" + (f"_{index + 1}" if index else "")] = len(group)
        else:
            counts["analysis_hidden_pruned"] = analysed
    for name in ANALYSES:
        counts[f"analysis_{name}"] = sum(name in grid.analyses(m) for m in grid.models)
    counts["all"] = 1
    jobs = {rule: n for rule, n in counts.items() if n}
    jobs["total"] = sum(jobs.values())
    return jobs


# ------------------------------------------------------------------------------------- GPU time and disk

@dataclass(frozen=True)
class Line:
    """One row of the plan: jobs of one kind, their GPU-hours (estimate, bound) and what they rest on."""

    what: str
    jobs: int
    hours: float | None
    bound: float | None
    basis: str


def _gpu_models(grid: Grid) -> dict[str, float]:
    """GPU models and their size relative to the reference (CPU models cost no GPU time)."""
    return {name: m["scale"] / REFERENCE_SCALE for name, m in grid.models.items() if m["gpu"] > 0}


def _per(model_gpus: int, minutes: float) -> float:
    return model_gpus * minutes / 60


def gpu_hours(grid: Grid, backend: str = "shared") -> list[Line]:
    """Estimated GPU-hours per stage from the per-job costs, scaled to the config's sizes."""
    config = grid.config
    gpu_models = _gpu_models(grid)
    lines: list[Line] = []
    calibration = config["calibration"]
    tokens = calibration["nsamples"] * calibration["seqlen"] / REFERENCE_CALIBRATION_TOKENS
    for method in grid.all_methods:
        jobs = [c for m in gpu_models for c in grid.checkpoints(m) if c.method == method]
        if not jobs:
            continue
        cost, whose = prune_cost(method)
        if cost is None:
            lines.append(Line(f"prune {method}", len(jobs), None, None, "no per-job cost stated"))
            continue
        hours = sum(_per(grid.models[c.model]["gpu"], cost.minutes * gpu_models[c.model] * tokens) for c in jobs)
        bound = sum(_per(grid.models[c.model]["gpu"], cost.bound * gpu_models[c.model] * tokens) for c in jobs)
        lines.append(Line(f"prune {method}", len(jobs), hours, bound, f"{whose}{cost.minutes:g} min per job "
                          f"(bound {cost.bound:g}) at the reference, extrapolated"))
    variant_minutes = {m: _variant_minutes(grid, m, backend) for m in gpu_models}
    pruned = {m: len(grid.checkpoints(m)) for m in gpu_models}
    group = config["evaluation"]["group"]
    how = f"{backend} backend, evaluation.group {group}"
    lines.append(Line("evaluate pruned variants", sum(pruned.values()),
                      sum(_per(grid.models[m]["gpu"], pruned[m] * variant_minutes[m]) for m in gpu_models), None,
                      f"{_mean(variant_minutes):.0f} min per variant ({how}), extrapolated"))
    lines.append(Line("evaluate dense models", len(gpu_models),
                      sum(_per(grid.models[m]["gpu"], variant_minutes[m]) for m in gpu_models), None, how))
    probe = _probe_minutes(grid)
    analysed = {m: len(grid.analysis_checkpoints(m)) + 1 for m in gpu_models}  # + the dense pass
    where = "inside the evaluation jobs, no load" if grid.analysis.in_evaluation else "at the reference"
    lines.append(Line("analysis probe passes", sum(analysed.values()),
                      sum(_per(grid.models[m]["gpu"], analysed[m] * probe * gpu_models[m]) for m in gpu_models),
                      None, f"{probe:g} min per pass {where}, extrapolated"))
    return lines


def _mean(values: dict[str, float]) -> float:
    return sum(values.values()) / len(values) if values else 0.0


def _variant_minutes(grid: Grid, model: str, backend: str) -> float:
    """GPU minutes to evaluate one variant of ``model`` on every benchmark (loads included)."""
    config = grid.config
    size = grid.models[model]["scale"] / REFERENCE_SCALE
    perplexity = config["evaluation"]["perplexity"]
    ppl_tokens = len(grid.languages) * perplexity["max_tokens"] / REFERENCE_PERPLEXITY_TOKENS
    scoring = SCORING_COSTS["perplexity"].minutes * ppl_tokens
    for name, task in grid.tasks.items():
        ratio = SHARED_RATIOS.get(name, 1.0) if backend == "shared" else 1.0
        scoring += SCORING_COSTS["task"].minutes * ratio * len(task["languages"]) / REFERENCE_TASK_LANGUAGES
    loads = 1 if config["evaluation"]["group"] == "variant" else len(grid.benchmarks)
    return (scoring + loads * LOAD.minutes) * size


def _probe_minutes(grid: Grid) -> float:
    """Minutes of one probe pass at the reference size, scaled to the analysis settings (with a model
    load, unless it runs inside the evaluation job that has loaded the model)."""
    section = grid.config["analysis"]
    tokens = len(grid.analysis.languages) * section["max_passages"] * section["max_length"]
    load = 0 if grid.analysis.in_evaluation else LOAD.minutes
    return PROBE_COST.minutes * tokens / REFERENCE_PROBE_TOKENS + load


def requested_gpu_hours(grid: Grid) -> float:
    """GPU-hours the config's resources ask for (runtime x scale x GPUs, first attempt): the time limits.
    A variant's evaluation asks for runtime x benchmarks, in one job or in one per benchmark."""
    config = grid.config
    runtime = {stage: config[stage]["resources"]["runtime"] for stage in ("pruning", "evaluation", "analysis")}
    minutes = 0.0
    for name, model in grid.models.items():
        checkpoints = len(grid.checkpoints(name))
        ratios = sum(1 for owner, _, _ in grid.owl_ratios() if owner == name)
        passes = 1 + (1 if grid.analysis.one_job_per_model else len(grid.analysis_checkpoints(name)))
        if grid.analysis.in_evaluation:  # inside the evaluation jobs, within their time
            passes = 0
        per_gpu = ((checkpoints + ratios) * runtime["pruning"]
                   + (checkpoints + 1) * len(grid.benchmarks) * runtime["evaluation"]
                   + passes * runtime["analysis"])
        minutes += per_gpu * model["scale"] * model["gpu"]
    return minutes / 60


@dataclass(frozen=True)
class DiskLine:
    what: str
    count: int
    each: float  # bytes
    basis: str

    @property
    def total(self) -> float:
        return self.count * self.each


def pruned_weights(grid: Grid, model: str) -> float:
    """Decoder-linear weights of a model: the toy's from its shape (toy.model), any other's from its
    scale read as billions of parameters (Llama-3-8B's share of decoder linears)."""
    shape = grid.toy_shape(model)
    if shape is None:
        return grid.models[model]["scale"] * PRUNED_WEIGHTS_PER_SCALE
    hidden, kv = shape["hidden"], shape["hidden"] // shape["heads"] * shape["kv_heads"]
    return float((2 * hidden * hidden + 2 * hidden * kv + 3 * hidden * shape["intermediate"]) * shape["layers"])


def _states_bytes(grid: Grid, model: str) -> float:
    """A pruned variant's probe file: the final float32 state of every passage (the per-layer drift is small)."""
    shape = grid.toy_shape(model)
    hidden = REFERENCE_HIDDEN if shape is None else shape["hidden"]
    return 4.0 * hidden * len(grid.analysis.languages) * grid.config["analysis"]["max_passages"]


def _checkpoint_bytes(grid: Grid, checkpoint: Checkpoint) -> float:
    """1-bit masks of every decoder-linear weight, plus the kept values of a method that updates them;
    a quantized checkpoint's codes (``bits`` each) and each group's float32 scale and ``bits``-bit zero
    point (one group per output row, not counted, for group size 0)."""
    weights = pruned_weights(grid, checkpoint.model)
    if checkpoint.quantizes:
        settings = dict(checkpoint.settings)
        bits, group = settings["bits"], settings["group_size"]
        return weights * (bits + ((32 + bits) / group if group else 0)) / 8
    size = weights / 8
    if registry.method(checkpoint.method).updates_weights:
        match = re.fullmatch(r"(\d+):(\d+)", checkpoint.structure)
        sparsity = int(match.group(1)) / int(match.group(2)) if match else float(checkpoint.sparsity)
        size += weights * (1 - sparsity) * DTYPE_BYTES[grid.models[checkpoint.model]["dtype"]]
    return size


def disk(grid: Grid) -> list[DiskLine]:
    config = grid.config
    calibration = config["calibration"]
    shard_bytes = calibration["nsamples"] * calibration["seqlen"] * 8
    lines = [DiskLine("calibration shards", len(grid.shards()), shard_bytes,
                      f"{calibration['nsamples']} x {calibration['seqlen']} int64 token ids (exact)")]
    by_kind: dict[str, list[float]] = {}
    what: dict[str, str] = {}
    for checkpoint in grid.all_checkpoints():
        kind = f"{checkpoint.label} {checkpoint.structure}" if checkpoint.quantizes else checkpoint.label
        by_kind.setdefault(kind, []).append(_checkpoint_bytes(grid, checkpoint))
        what[kind] = ("codes + group scales and zero points" if checkpoint.quantizes else
                      "masks + kept values" if registry.method(checkpoint.method).updates_weights else "1-bit masks")
    for kind, sizes in by_kind.items():
        lines.append(DiskLine(f"{kind} checkpoints", len(sizes), sum(sizes) / len(sizes),
                              f"{what[kind]} of the decoder-linear weights (exact for the format)"))
    evaluations = sum(len(grid.evaluations(m)) for m in grid.models)
    lines.append(DiskLine("metrics JSONs", evaluations, METRICS_JSON_BYTES, "an upper bound per file"))
    analysed = [c for m in grid.models for c in grid.analysis_checkpoints(m)]
    states = sum(_states_bytes(grid, c.model) for c in analysed)
    lines.append(DiskLine("hidden-state summaries", len(analysed), states / len(analysed) if analysed else 0.0,
                          f"languages x passages x hidden size ({REFERENCE_HIDDEN} but for the toy) float32 "
                          f"final states, estimated"))
    return lines


# ------------------------------------------------------------------------------------- the printed plan

def _size(n: float) -> str:
    for unit, factor in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= factor:
            return f"{n / factor:.3g} {unit}"
    return f"{n:.0f} B"


def _hours(h: float | None) -> str:
    return "n/a" if h is None else f"{h:,.1f}"


def render(grid: Grid, backend: str = "shared") -> str:
    """The plan as text: jobs per rule, GPU time, disk."""
    jobs = jobs_per_rule(grid)
    out = ["Jobs per rule (what `snakemake -n` plans in an empty working directory):"]
    out += [f"  {rule:<30}{n:>8,}" for rule, n in jobs.items()]
    out += ["", f"GPU time, estimated from per-job costs stated for an 8B model in bf16 on one H100 80 GB "
                f"(models.*.scale read as billions of parameters; lm-eval {backend} backend):"]
    if not _gpu_models(grid):
        out.append("  none: no model sets gpu > 0, every job runs on the CPU")
    else:
        out += _gpu_table(grid, backend)
    lines = disk(grid)
    out += ["", f"Disk (decoder-linear weights: {PRUNED_WEIGHTS_PER_SCALE / 1e9:.4g} G per unit of models.*.scale, "
                f"read as billions of parameters; the toy model's from toy.model):",
            f"  {'artifact':<36}{'count':>7}{'each':>10}{'total':>10}  basis"]
    out += [f"  {line.what:<36}{line.count:>7,}{_size(line.each):>10}{_size(line.total):>10}  {line.basis}"
            for line in lines]
    out.append(f"  {'total':<36}{'':>7}{'':>10}{_size(sum(line.total for line in lines)):>10}")
    return "\n".join(out)


def _gpu_table(grid: Grid, backend: str) -> list[str]:
    gpu = gpu_hours(grid, backend)
    out = [f"  {'stage':<28}{'jobs':>7}{'GPU-h':>10}{'bound':>10}  basis"]
    out += [f"  {line.what:<28}{line.jobs:>7,}{_hours(line.hours):>10}{_hours(line.bound):>10}  {line.basis}"
            for line in gpu]
    known = [line for line in gpu if line.hours is not None]
    total = sum(line.hours for line in known)
    bound = sum(line.bound if line.bound is not None else line.hours for line in known)
    out.append(f"  {'total':<28}{'':>7}{_hours(total):>10}{_hours(bound):>10}  "
               + ("bound: pruning at its planning bound" if any(line.bound for line in gpu) else ""))
    unknown = [line.what for line in gpu if line.hours is None]
    if unknown:
        out.append(f"  (not in the totals, no per-job cost stated: {', '.join(unknown)})")
    out.append(f"  requested by the config's resources (runtime x scale x GPUs, first attempt): "
               f"{requested_gpu_hours(grid):,.0f} GPU-h")
    return out
