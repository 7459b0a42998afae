# Pruning: one sparse checkpoint per (model, method, structure, sparsity,
# calibration set, seed), as langprune.grid plans them: a variant that reads no calibration
# data (magnitude) runs once per (model, structure, sparsity) under calib "none", seed 0.
# The method wildcard may carry an allocation ("wanda+owl", langprune.variant.method_label).
# A quantized variant is one more prune job: its structure wildcard is its setting's slug
# (gptq_w4g128-sym_0), given to `langprune prune` as the method's own flags.
# Checkpoints are cached between workflows (docs/reruns.md). The cache key
# covers params but not wildcards, so the shell line reads every value that
# shapes the checkpoint from params.


rule owl_ratios:
    """OWL's per-layer outlier ratios of the dense model on one shard: they depend on neither the
    method nor the sparsity, so every +owl prune job of that model, shard and seed reuses them."""
    input:
        model=model_input,
        calibration=shard_input,
        hub=hub_inputs,
    output:
        variant.OWL_RATIOS_FILE,
    log:
        "logs/owl_ratios/{model}/{calib}/seed{seed}.log",
    conda:
        CONDA_ENV
    threads: stage_threads("pruning")
    resources:
        gpu=gpus,
        mem_mb=scaled("pruning", "mem_mb"),
        runtime=scaled("pruning", "runtime"),
    params:
        model=lambda wc: MODELS[wc.model]["path"],
        revision=revision_flag,
        dtype=model_dtype,
        device=device,
        batch_size=PRUNING["batch_size"],
        offload="--offload" if PRUNING["offload"] else "",
    shell:
        "langprune owl-ratios --model {params.model} {params.revision} --calibration {input.calibration} "
        "--dtype {params.dtype} --device {params.device} --batch-size {params.batch_size} {params.offload} "
        "--out {output} > {log} 2>&1"


rule prune:
    input:
        model=model_input,
        calibration=prune_calibration,
        owl_ratios=owl_ratios_input,
        hub=hub_inputs,
    output:
        directory(variant.pruned_pattern(variant.CHECKPOINT_DIR)),
    log:
        "logs/prune/{model}/{method}_{structure}_{sparsity}/{calib}/seed{seed}.log",
    cache: "omit-software"
    conda:
        CONDA_ENV
    threads: stage_threads("pruning")
    resources:
        gpu=gpus,
        mem_mb=scaled("pruning", "mem_mb"),
        runtime=scaled("pruning", "runtime"),
    params:
        model=lambda wc: MODELS[wc.model]["path"],
        revision=revision_flag,
        method=lambda wc: pruned(wc).method,
        allocation=allocation_flag,
        owl_ratios=lambda wc, input: f"--owl-ratios {input.owl_ratios}" if input.owl_ratios else "",
        settings=prune_flags,
        seed=lambda wc: int(wc.seed),
        calibration=lambda wc, input: f"--calibration {input.calibration}" if input.calibration else "",
        dtype=model_dtype,
        device=device,
        batch_size=PRUNING["batch_size"],
        offload="--offload" if PRUNING["offload"] else "",
        tags=pruned_tags,
    shell:
        "langprune prune --model {params.model} {params.revision} {params.calibration} --method {params.method} "
        "{params.allocation} {params.owl_ratios} {params.settings} --dtype {params.dtype} "
        "--device {params.device} --batch-size {params.batch_size} --seed {params.seed} {params.offload} {params.tags} "
        "--out {output} > {log} 2>&1"
