# Analysis (the paper's section 5): probe states of the dense model and of every pruned or
# quantized checkpoint -> LSAR feature change, layer-wise drift; pruned checkpoints -> mask
# overlap; dense activation counts + pruned checkpoints -> language-specific neurons.
# Outputs live in results/analysis/{model}/; tables and figures are flagged for the report.
# Its final outputs, for all_targets() in common.smk: analysis_targets(models).
# Its settings are the config's `analysis:` section (config/README.md); its paths and input
# functions are in analysis_common.smk.


if ANALYSIS_PROBE == "belebele":

    # Belebele comes from the hub, which compute nodes often cannot reach: run on the submit host.
    rule analysis_probe_text:
        input:
            hub_inputs,
        output:
            directory(BELEBELE_PROBE),
        log:
            "logs/analysis/probe_text.log",
        localrule: True
        conda:
            CONDA_ENV
        params:
            languages=",".join(ANALYSIS_LANGUAGES),
            max_passages=ANALYSIS["max_passages"],
        shell:
            "langprune analyze probe-text --languages {params.languages} --max-passages {params.max_passages} "
            "--out {output} > {log} 2>&1"


if not ANALYSIS_SETTINGS.in_evaluation:

    # One probe pass of `langprune analyze hidden` (dense, or pruned with --reference/--checkpoint).
    # With evaluation.group variant the evaluation jobs write these files instead (evaluate.smk).
    HIDDEN_PARAMS = {
        "model": lambda wc: MODELS[wc.model]["path"],
        "probe_flags": probe_flags(),
        "dtype": evaluation_dtype,
        "device": device,
        "tags": lambda wc: variant.tag_flags({"model": wc.model}),
    }
    HIDDEN_RESOURCES = {
        "gpu": gpus,
        "mem_mb": scaled("analysis", "mem_mb"),
        "runtime": scaled("analysis", "runtime"),
    }
    HIDDEN_SHELL = (
        "langprune analyze hidden --model {params.model} {params.probe_flags} "
        "--dtype {params.dtype} --device {params.device} {params.tags} {params.pruned} --threads {threads} "
        "--out {output} > {log} 2>&1"
    )

    rule analysis_hidden_dense:
        input:
            model=model_input,
            probe=analysis_probe_input,
            hub=hub_inputs,
        output:
            ANALYSIS_DENSE,
        log:
            "logs/analysis/{model}/hidden_dense.log",
        conda:
            CONDA_ENV
        threads: stage_threads("analysis")
        resources:
            **HIDDEN_RESOURCES,
        params:
            **HIDDEN_PARAMS,
            pruned="",
        shell:
            HIDDEN_SHELL

    if ANALYSIS_GROUPED:
        # Every pruned probe pass of a model in one job (one model load). A rule's outputs cannot depend
        # on its model, so the models that share one list of analysed variants share one rule.
        for _group, (_models, _paths) in enumerate(GRID.analysis_groups()):

            rule:
                name:
                    "analysis_hidden_pruned_all" + (f"_{_group + 1}" if _group else "")
                input:
                    model=model_input,
                    probe=analysis_probe_input,
                    hub=hub_inputs,
                    dense=ANALYSIS_DENSE,
                    checkpoints=analysis_checkpoints,
                output:
                    [variant.HIDDEN_STATES_FILE.replace("{variant}", path) for path in _paths],
                log:
                    "logs/analysis/{model}/hidden_pruned.log",
                wildcard_constraints:
                    model=_alternatives(_models),
                conda:
                    CONDA_ENV
                threads: stage_threads("analysis")
                resources:
                    **HIDDEN_RESOURCES,
                params:
                    **HIDDEN_PARAMS,
                    pruned=lambda wc, input: f"--reference {input.dense} --checkpoint {input.checkpoints}",
                shell:
                    HIDDEN_SHELL

    else:

        use rule analysis_hidden_dense as analysis_hidden_pruned with:
            input:
                model=model_input,
                probe=analysis_probe_input,
                hub=hub_inputs,
                dense=ANALYSIS_DENSE,
                checkpoint=variant.pruned_pattern(variant.CHECKPOINT_DIR),
            output:
                ANALYSIS_PRUNED,
            log:
                f"logs/analysis/{{model}}/hidden/{variant.VARIANT_PATH}.log",
            params:
                pruned=lambda wc, input: f"--reference {input.dense} --checkpoint {input.checkpoint}",


rule analysis_features:
    input:
        dense=ANALYSIS_DENSE,
        pruned=analysis_pruned_states,
    output:
        **analysis_outputs("features"),
    log:
        "logs/analysis/{model}/features.log",
    conda:
        CONDA_ENV
    params:
        rank=f"--rank {ANALYSIS['rank']}" if ANALYSIS["rank"] else "",
        languages=",".join(ANALYSIS_LANGUAGES),
    shell:
        "langprune analyze features --dense {input.dense} {input.pruned} {params.rank} "
        "--languages {params.languages} --out-table {output.table} --out-check {output.check} "
        "--out-summary {output.summary} --out-figure {output.figure} > {log} 2>&1"


rule analysis_drift:
    input:
        analysis_pruned_states,
    output:
        **analysis_outputs("drift"),
    log:
        "logs/analysis/{model}/drift.log",
    conda:
        CONDA_ENV
    params:
        languages=",".join(ANALYSIS_LANGUAGES),
    shell:
        "langprune analyze drift {input} --languages {params.languages} --out-table {output.table} "
        "--out-benefit {output.benefit} --out-summary {output.summary} --out-figure {output.figure} > {log} 2>&1"


rule analysis_masks:
    input:
        mask_checkpoints,
    output:
        **analysis_outputs("masks"),
    log:
        "logs/analysis/{model}/masks.log",
    conda:
        CONDA_ENV
    threads: stage_threads("analysis")
    resources:
        mem_mb=scaled("analysis", "mem_mb"),
    params:
        languages=",".join(ANALYSIS_LANGUAGES),
    shell:
        "langprune analyze masks {input} --languages {params.languages} --out-table {output.table} "
        "--out-matrix {output.matrix} --out-layers {output.layers} --out-types {output.types} "
        "--out-figure {output.figure} --threads {threads} > {log} 2>&1"


rule analysis_neurons:
    input:
        dense=ANALYSIS_DENSE,
        checkpoints=mask_checkpoints,
    output:
        **analysis_outputs("neurons"),
    log:
        "logs/analysis/{model}/neurons.log",
    conda:
        CONDA_ENV
    threads: stage_threads("analysis")
    resources:
        mem_mb=scaled("analysis", "mem_mb"),
    params:
        languages=",".join(ANALYSIS_LANGUAGES),
        top_rate=ANALYSIS["neurons"]["top_rate"],
        filter_rate=ANALYSIS["neurons"]["filter_rate"],
        activation_bar=ANALYSIS["neurons"]["activation_bar"],
    shell:
        "langprune analyze neurons --dense {input.dense} {input.checkpoints} --languages {params.languages} "
        "--top-rate {params.top_rate} --filter-rate {params.filter_rate} --activation-bar {params.activation_bar} "
        "--out-table {output.table} --out-neurons {output.neurons} --out-summary {output.summary} "
        "--out-figure {output.figure} --threads {threads} > {log} 2>&1"
