# Analysis (the paper's section 5): probe states of the dense model and of every pruned
# checkpoint -> LSAR feature change, layer-wise drift; checkpoints -> mask overlap;
# dense activation counts + checkpoints -> language-specific neurons.
# Outputs live in results/analysis/{model}/; tables and figures are flagged for the report.
# Target list for `rule all`: analysis_targets(models).
#
# Config (all optional; `analysis:` in the config file):
#   probe: text:DIR | belebele     parallel probe text (default: the toy corpus's held-out UDHR
#                                  articles text:results/toy/text/probe when `toy:` is configured,
#                                  else Belebele passages, the paper's choice)
#   languages: [..]                probe/evaluation languages (default: top-level `languages`)
#   methods: [..]                  pruning methods analysed (default: all of pruning.methods)
#   calibrations: [..]             calibration sets analysed (default: all of calibration.sets;
#                                  the paper's figures use the monolingual ones)
#   max_passages: 200              passages per language
#   max_length: 256                tokens per passage
#   batch_size: 8
#   rank: null                     LSAR subspace rank (null: number of languages - 1)
#   neurons: {top_rate: 0.01, filter_rate: 0.95, activation_bar: 0.95}
#   one_job_per_model: bool        all pruned probe passes of a model in one job (default: true
#                                  when no model needs a GPU, since process start-up dominates on CPU)
#   resources: {mem_mb, runtime, threads}


include: "analysis_common.smk"


if ANALYSIS_PROBE == "belebele":

    # Belebele comes from the hub, which compute nodes often cannot reach: run on the submit host.
    rule analysis_probe_text:
        localrule: True
        output:
            directory(BELEBELE_PROBE),
        params:
            languages=",".join(ANALYSIS_LANGUAGES),
            max_passages=ANALYSIS.get("max_passages", 200),
        conda:
            CONDA_ENV
        log:
            "logs/analysis/probe_text.log",
        shell:
            "langprune analyze probe-text --languages {params.languages} --max-passages {params.max_passages} "
            "--out {output} > {log} 2>&1"


rule analysis_hidden_dense:
    input:
        model=model_input,
        probe=analysis_probe_input,
    output:
        ANALYSIS_DENSE,
    params:
        flags=analysis_hidden_flags,
    threads: ANALYSIS.get("resources", {}).get("threads", 1)
    resources:
        gpu=gpus,
        mem_mb=analysis_resources("mem_mb"),
        runtime=analysis_resources("runtime"),
    conda:
        CONDA_ENV
    log:
        "logs/analysis/{model}/hidden_dense.log",
    shell:
        "langprune analyze hidden {params.flags} --threads {threads} --out {output} > {log} 2>&1"


if ANALYSIS_GROUPED:

    rule analysis_hidden_pruned_all:
        input:
            model=model_input,
            probe=analysis_probe_input,
            dense=ANALYSIS_DENSE,
            checkpoints=analysis_checkpoints,
        output:
            [f"{ANALYSIS_DIR}/hidden/{v}.safetensors" for v in analysis_variants(next(iter(MODELS)))],
        params:
            flags=analysis_hidden_flags,
        threads: ANALYSIS.get("resources", {}).get("threads", 1)
        resources:
            gpu=gpus,
            mem_mb=analysis_resources("mem_mb"),
            runtime=analysis_resources("runtime"),
        conda:
            CONDA_ENV
        log:
            "logs/analysis/{model}/hidden_pruned.log",
        shell:
            "langprune analyze hidden {params.flags} --reference {input.dense} "
            "--checkpoint {input.checkpoints} --threads {threads} --out {output} > {log} 2>&1"

else:

    rule analysis_hidden_pruned:
        input:
            model=model_input,
            probe=analysis_probe_input,
            dense=ANALYSIS_DENSE,
            checkpoint=variant.pruned_pattern(variant.CHECKPOINT_DIR),
        output:
            ANALYSIS_PRUNED,
        params:
            flags=analysis_hidden_flags,
        threads: ANALYSIS.get("resources", {}).get("threads", 1)
        resources:
            gpu=gpus,
            mem_mb=analysis_resources("mem_mb"),
            runtime=analysis_resources("runtime"),
        conda:
            CONDA_ENV
        log:
            "logs/analysis/{model}/hidden/{method}_{structure}_{sparsity}/{calib}/seed{seed}.log",
        shell:
            "langprune analyze hidden {params.flags} --reference {input.dense} "
            "--checkpoint {input.checkpoint} --threads {threads} --out {output} > {log} 2>&1"


rule analysis_features:
    input:
        dense=ANALYSIS_DENSE,
        pruned=analysis_pruned_states,
    output:
        **analysis_outputs("features"),
    params:
        rank=f"--rank {ANALYSIS['rank']}" if ANALYSIS.get("rank") else "",
        languages=",".join(ANALYSIS_LANGUAGES),
    conda:
        CONDA_ENV
    log:
        "logs/analysis/{model}/features.log",
    shell:
        "langprune analyze features --dense {input.dense} {input.pruned} {params.rank} "
        "--languages {params.languages} --out-table {output.table} --out-check {output.check} "
        "--out-summary {output.summary} --out-figure {output.figure} > {log} 2>&1"


rule analysis_drift:
    input:
        analysis_pruned_states,
    output:
        **analysis_outputs("drift"),
    params:
        languages=",".join(ANALYSIS_LANGUAGES),
    conda:
        CONDA_ENV
    log:
        "logs/analysis/{model}/drift.log",
    shell:
        "langprune analyze drift {input} --languages {params.languages} --out-table {output.table} "
        "--out-benefit {output.benefit} --out-summary {output.summary} --out-figure {output.figure} > {log} 2>&1"


rule analysis_masks:
    input:
        analysis_checkpoints,
    output:
        **analysis_outputs("masks"),
    params:
        languages=",".join(ANALYSIS_LANGUAGES),
    threads: ANALYSIS.get("resources", {}).get("threads", 1)
    resources:
        mem_mb=analysis_resources("mem_mb"),
    conda:
        CONDA_ENV
    log:
        "logs/analysis/{model}/masks.log",
    shell:
        "langprune analyze masks {input} --languages {params.languages} --out-table {output.table} "
        "--out-matrix {output.matrix} --out-layers {output.layers} --out-types {output.types} "
        "--out-figure {output.figure} --threads {threads} > {log} 2>&1"


rule analysis_neurons:
    input:
        dense=ANALYSIS_DENSE,
        checkpoints=analysis_checkpoints,
    output:
        **analysis_outputs("neurons"),
    params:
        languages=",".join(ANALYSIS_LANGUAGES),
        top_rate=ANALYSIS_NEURONS["top_rate"],
        filter_rate=ANALYSIS_NEURONS["filter_rate"],
        activation_bar=ANALYSIS_NEURONS["activation_bar"],
    threads: ANALYSIS.get("resources", {}).get("threads", 1)
    resources:
        mem_mb=analysis_resources("mem_mb"),
    conda:
        CONDA_ENV
    log:
        "logs/analysis/{model}/neurons.log",
    shell:
        "langprune analyze neurons --dense {input.dense} {input.checkpoints} --languages {params.languages} "
        "--top-rate {params.top_rate} --filter-rate {params.filter_rate} --activation-bar {params.activation_bar} "
        "--out-table {output.table} --out-neurons {output.neurons} --out-summary {output.summary} "
        "--out-figure {output.figure} --threads {threads} > {log} 2>&1"
