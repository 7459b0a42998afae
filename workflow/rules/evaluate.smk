# Evaluation: per checkpoint and once per dense model, perplexity (+ bits per byte)
# and each configured lm-eval benchmark; then one tidy metrics table per model.

CHECKPOINT = "results/checkpoints/{model}/{method}_{structure}_{sparsity}/{calib}/seed{seed}"
PRUNED_METRICS = "results/metrics/{model}/{method}_{structure}_{sparsity}/{calib}/seed{seed}/{benchmark}.json"

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
        checkpoint=CHECKPOINT,
        data=benchmark_inputs,
    output:
        PRUNED_METRICS,
    params:
        model=lambda wc: MODELS[wc.model]["path"],
        command=benchmark_command,
        device=device,
        revision=revision_flag,
        tags=lambda wc: tags(model=wc.model),
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
        "results/metrics/{model}/dense/{benchmark}.json",
    # Cached between workflows (docs/reruns.md): the key covers params, not wildcards;
    # the benchmark is named inside params.command, the model by params.model.
    cache: "omit-software"
    params:
        model=lambda wc: MODELS[wc.model]["path"],
        command=benchmark_command,
        device=device,
        revision=revision_flag,
        tags=lambda wc: tags(model=wc.model, method="dense", structure="-", sparsity="0", calib="-", seed="-"),
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


if EVALUATION["group"] == "variant":
    # One job per variant: `langprune evaluate variant` loads the model once and writes every
    # benchmark's metrics file (the same files as the per-benchmark rules above, which these
    # take precedence over). A job with several outputs cannot use the between-workflow cache,
    # so dense evaluations are not cached under this grouping (docs/reruns.md).

    ruleorder: evaluate_pruned_variant > evaluate_pruned
    ruleorder: evaluate_dense_variant > evaluate_dense

    rule evaluate_pruned_variant:
        input:
            model=model_input,
            checkpoint=CHECKPOINT,
            data=variant_inputs,
        output:
            expand(PRUNED_METRICS, benchmark=BENCHMARKS, allow_missing=True),
        params:
            model=lambda wc: MODELS[wc.model]["path"],
            runs=variant_runs,
            out_dir=lambda wc, output: os.path.dirname(output[0]),
            device=device,
            revision=revision_flag,
            tags=lambda wc: tags(model=wc.model),
        threads: stage_threads("evaluation")
        resources:
            gpu=gpus,
            mem_mb=scaled("evaluation", "mem_mb"),
            runtime=scaled("evaluation", "runtime", jobs=len(BENCHMARKS)),
        conda:
            CONDA_ENV
        log:
            "logs/evaluate/{model}/{method}_{structure}_{sparsity}/{calib}/seed{seed}/variant.log",
        shell:
            "langprune evaluate variant --model {params.model} --checkpoint {input.checkpoint} "
            "--device {params.device} {params.revision} {params.tags} --out-dir {params.out_dir} {params.runs} "
            "> {log} 2>&1"

    rule evaluate_dense_variant:
        input:
            model=model_input,
            data=variant_inputs,
        output:
            expand("results/metrics/{model}/dense/{benchmark}.json", benchmark=BENCHMARKS, allow_missing=True),
        params:
            model=lambda wc: MODELS[wc.model]["path"],
            runs=variant_runs,
            out_dir=lambda wc, output: os.path.dirname(output[0]),
            device=device,
            revision=revision_flag,
            tags=lambda wc: tags(model=wc.model, method="dense", structure="-", sparsity="0", calib="-", seed="-"),
        threads: stage_threads("evaluation")
        resources:
            gpu=gpus,
            mem_mb=scaled("evaluation", "mem_mb"),
            runtime=scaled("evaluation", "runtime", jobs=len(BENCHMARKS)),
        conda:
            CONDA_ENV
        log:
            "logs/evaluate/{model}/dense/variant.log",
        shell:
            "langprune evaluate variant --model {params.model} "
            "--device {params.device} {params.revision} {params.tags} --out-dir {params.out_dir} {params.runs} "
            "> {log} 2>&1"


rule gather_metrics:
    input:
        lambda wc: metrics_files(wc.model),
    output:
        "results/tables/{model}/metrics.csv",
    conda:
        CONDA_ENV
    log:
        "logs/tables/{model}/gather.log",
    shell:
        "langprune evaluate gather {input} --out {output} > {log} 2>&1"
