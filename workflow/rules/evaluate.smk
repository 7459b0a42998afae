# Evaluation: per checkpoint and once per dense model, perplexity (+ bits per byte)
# and each configured lm-eval benchmark; then one tidy metrics table per model.
# Each dense rule is its pruned twin without --checkpoint, cached between workflows
# (docs/reruns.md): the cache key covers params, not wildcards, so every value that
# shapes a result reaches the shell line through params. Every evaluation loads the model in
# one dtype (evaluation.dtype, else the model's own, in which it is pruned), so dense and
# pruned variants are compared in one dtype.

PRUNED_METRICS = variant.pruned_pattern(variant.METRICS_FILE)
DENSE_METRICS = variant.METRICS_FILE.replace("{variant}", variant.DENSE)

if MC:

    rule multiple_choice_items:
        input:
            text_source_input(MC["source"]),
        output:
            directory("results/toy/mc"),
        log:
            "logs/toy/multiple_choice.log",
        conda:
            CONDA_ENV
        params:
            source=MC["source"],
            languages=",".join(LANGUAGES),
            n_items=MC["n_items"],
            seed=MC["seed"],
        shell:
            "langprune evaluate make-mc --source {params.source} --languages {params.languages} "
            "--n-items {params.n_items} --seed {params.seed} --out {output} > {log} 2>&1"


rule evaluate_perplexity:
    input:
        model=model_input,
        hub=hub_inputs,
        checkpoint=variant.pruned_pattern(variant.CHECKPOINT_DIR),
        text=text_source_input(PERPLEXITY["source"]),
    output:
        PRUNED_METRICS.replace("{benchmark}", "perplexity"),
    log:
        f"logs/evaluate/{{model}}/{variant.VARIANT_PATH}/perplexity.log",
    conda:
        CONDA_ENV
    threads: stage_threads("evaluation")
    resources:
        gpu=gpus,
        mem_mb=scaled("evaluation", "mem_mb"),
        runtime=scaled("evaluation", "runtime"),
    params:
        model=lambda wc: MODELS[wc.model]["path"],
        checkpoint=lambda wc, input: f"--checkpoint {input.checkpoint}",
        flags=evaluate_flags("perplexity"),
        device=device,
        dtype=evaluation_dtype,
        revision=revision_flag,
        tags=lambda wc: variant.tag_flags({"model": wc.model}),
    shell:
        "langprune evaluate perplexity {params.flags} --model {params.model} {params.checkpoint} "
        "--device {params.device} --dtype {params.dtype} {params.revision} {params.tags} --out {output} > {log} 2>&1"


use rule evaluate_perplexity as evaluate_perplexity_dense with:
    input:
        model=model_input,
        hub=hub_inputs,
        text=text_source_input(PERPLEXITY["source"]),
    output:
        DENSE_METRICS.replace("{benchmark}", "perplexity"),
    log:
        "logs/evaluate/{model}/dense/perplexity.log",
    cache: "omit-software"
    params:
        checkpoint="",
        tags=lambda wc: variant.tag_flags({"model": wc.model, **variant.DENSE_LABELS}),


rule evaluate_tasks:
    input:
        model=model_input,
        hub=hub_inputs,
        checkpoint=variant.pruned_pattern(variant.CHECKPOINT_DIR),
        data=task_data_input,
    output:
        PRUNED_METRICS,
    log:
        f"logs/evaluate/{{model}}/{variant.VARIANT_PATH}/{{benchmark}}.log",
    wildcard_constraints:
        benchmark=_alternatives(TASKS),
    conda:
        CONDA_ENV
    threads: stage_threads("evaluation")
    resources:
        gpu=gpus,
        mem_mb=scaled("evaluation", "mem_mb"),
        runtime=scaled("evaluation", "runtime"),
    params:
        model=lambda wc: MODELS[wc.model]["path"],
        checkpoint=lambda wc, input: f"--checkpoint {input.checkpoint}",
        flags=lambda wc: evaluate_flags(wc.benchmark),
        device=device,
        dtype=evaluation_dtype,
        revision=revision_flag,
        tags=lambda wc: variant.tag_flags({"model": wc.model}),
    shell:
        "langprune evaluate tasks {params.flags} --model {params.model} {params.checkpoint} "
        "--device {params.device} --dtype {params.dtype} {params.revision} {params.tags} --out {output} > {log} 2>&1"


use rule evaluate_tasks as evaluate_tasks_dense with:
    input:
        model=model_input,
        hub=hub_inputs,
        data=task_data_input,
    output:
        DENSE_METRICS,
    log:
        "logs/evaluate/{model}/dense/{benchmark}.log",
    cache: "omit-software"
    params:
        checkpoint="",
        tags=lambda wc: variant.tag_flags({"model": wc.model, **variant.DENSE_LABELS}),


if EVALUATION["group"] == "variant":
    # One job per variant: `langprune evaluate variant` loads the model once and writes every
    # benchmark's metrics file (the same files as the per-benchmark rules above, which these
    # take precedence over) and, for the dense model and every analysed variant, its probe states
    # (the same file as `langprune analyze hidden` writes, so analysis.smk then has no probe-pass
    # rules). A job with several outputs cannot use the between-workflow cache, so dense
    # evaluations are not cached under this grouping (docs/reruns.md).

    ruleorder: evaluate_analysed_variant > evaluate_pruned_variant > evaluate_perplexity
    ruleorder: evaluate_analysed_variant > evaluate_pruned_variant > evaluate_tasks
    ruleorder: evaluate_dense_variant > evaluate_perplexity_dense
    ruleorder: evaluate_dense_variant > evaluate_tasks_dense

    rule evaluate_pruned_variant:
        input:
            model=model_input,
            hub=hub_inputs,
            checkpoint=variant.pruned_pattern(variant.CHECKPOINT_DIR),
            data=variant_inputs,
        output:
            metrics=expand(PRUNED_METRICS, benchmark=BENCHMARKS, allow_missing=True),
        log:
            f"logs/evaluate/{{model}}/{variant.VARIANT_PATH}/variant.log",
        conda:
            CONDA_ENV
        threads: stage_threads("evaluation")
        resources:
            gpu=gpus,
            mem_mb=scaled("evaluation", "mem_mb"),
            runtime=scaled("evaluation", "runtime", jobs=len(BENCHMARKS)),
        params:
            model=lambda wc: MODELS[wc.model]["path"],
            checkpoint=lambda wc, input: f"--checkpoint {input.checkpoint}",
            runs=variant_runs,
            out_dir=variant_out_dir,
            device=device,
            dtype=evaluation_dtype,
            revision=revision_flag,
            tags=lambda wc: variant.tag_flags({"model": wc.model}),
        shell:
            "langprune evaluate variant --model {params.model} {params.checkpoint} "
            "--device {params.device} --dtype {params.dtype} {params.revision} {params.tags} --out-dir {params.out_dir} {params.runs} "
            "> {log} 2>&1"

    # A variant the analyses read (the grid's analysis_checkpoints): its probe states too, with its
    # drift measured against the dense model's.
    use rule evaluate_pruned_variant as evaluate_analysed_variant with:
        input:
            model=model_input,
            hub=hub_inputs,
            checkpoint=variant.pruned_pattern(variant.CHECKPOINT_DIR),
            data=variant_inputs,
            probe=analysis_probe_input,
            dense=ANALYSIS_DENSE,
        output:
            metrics=expand(PRUNED_METRICS, benchmark=BENCHMARKS, allow_missing=True),
            states=ANALYSIS_PRUNED,
        wildcard_constraints:
            method=_alternatives(GRID.analysed_labels),
            calib=_alternatives(ANALYSIS_SETTINGS.calibrations),

    use rule evaluate_pruned_variant as evaluate_dense_variant with:
        input:
            model=model_input,
            hub=hub_inputs,
            data=variant_inputs,
            probe=analysis_probe_input,
        output:
            metrics=expand(DENSE_METRICS, benchmark=BENCHMARKS, allow_missing=True),
            states=ANALYSIS_DENSE,
        log:
            "logs/evaluate/{model}/dense/variant.log",
        params:
            checkpoint="",
            tags=lambda wc: variant.tag_flags({"model": wc.model, **variant.DENSE_LABELS}),


rule gather_metrics:
    input:
        lambda wc: metrics_files(wc.model),
    output:
        variant.METRICS_TABLE,
    log:
        "logs/tables/{model}/gather.log",
    conda:
        CONDA_ENV
    shell:
        "langprune evaluate gather {input} --out {output} > {log} 2>&1"
