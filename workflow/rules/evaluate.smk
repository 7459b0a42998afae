# Evaluation: per checkpoint and once per dense model, perplexity (+ bits per byte)
# and each configured lm-eval benchmark; then one tidy metrics table per model.

PRUNED_METRICS = variant.pruned_pattern(variant.METRICS_FILE)
DENSE_METRICS = variant.METRICS_FILE.replace("{variant}", variant.DENSE)

if MC:

    rule multiple_choice_items:
        input:
            text_source_input(MC["source"]),
        output:
            directory("results/toy/mc"),
        params:
            source=MC["source"],
            languages=",".join(LANGUAGES),
            n_items=MC["n_items"],
            seed=MC["seed"],
        conda:
            CONDA_ENV
        log:
            "logs/toy/multiple_choice.log",
        shell:
            "langprune evaluate make-mc --source {params.source} --languages {params.languages} "
            "--n-items {params.n_items} --seed {params.seed} --out {output} > {log} 2>&1"


rule evaluate_pruned:
    input:
        model=model_input,
        checkpoint=variant.pruned_pattern(variant.CHECKPOINT_DIR),
        data=benchmark_inputs,
    output:
        PRUNED_METRICS,
    params:
        model=lambda wc: MODELS[wc.model]["path"],
        command=benchmark_command,
        device=device,
        revision=revision_flag,
        tags=lambda wc: variant.tag_flags({"model": wc.model}),
    threads: stage_threads("evaluation")
    resources:
        gpu=gpus,
        mem_mb=scaled("evaluation", "mem_mb"),
        runtime=scaled("evaluation", "runtime"),
    conda:
        CONDA_ENV
    log:
        "logs/evaluate/{model}/{method}_{structure}_{sparsity}/{calib}/seed{seed}/{benchmark}.log",
    shell:
        "langprune evaluate {params.command} --model {params.model} --checkpoint {input.checkpoint} "
        "--device {params.device} {params.revision} {params.tags} --out {output} > {log} 2>&1"


rule evaluate_dense:
    input:
        model=model_input,
        data=benchmark_inputs,
    output:
        DENSE_METRICS,
    # Cached between workflows (docs/reruns.md): the key covers params, not wildcards;
    # the benchmark is named inside params.command, the model by params.model.
    cache: "omit-software"
    params:
        model=lambda wc: MODELS[wc.model]["path"],
        command=benchmark_command,
        device=device,
        revision=revision_flag,
        tags=lambda wc: variant.tag_flags({"model": wc.model, **variant.DENSE_LABELS}),
    threads: stage_threads("evaluation")
    resources:
        gpu=gpus,
        mem_mb=scaled("evaluation", "mem_mb"),
        runtime=scaled("evaluation", "runtime"),
    conda:
        CONDA_ENV
    log:
        "logs/evaluate/{model}/dense/{benchmark}.log",
    shell:
        "langprune evaluate {params.command} --model {params.model} "
        "--device {params.device} {params.revision} {params.tags} --out {output} > {log} 2>&1"


rule gather_metrics:
    input:
        lambda wc: metrics_files(wc.model),
    output:
        variant.METRICS_TABLE,
    conda:
        CONDA_ENV
    log:
        "logs/tables/{model}/gather.log",
    shell:
        "langprune evaluate gather {input} --out {output} > {log} 2>&1"
