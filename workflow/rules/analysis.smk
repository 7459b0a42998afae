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

ANALYSIS = config.get("analysis", {})
ANALYSIS_LANGUAGES = ANALYSIS.get("languages", LANGUAGES)
ANALYSIS_PROBE = ANALYSIS.get("probe", "text:results/toy/text/probe" if config.get("toy") else "belebele")
ANALYSIS_METHODS = ANALYSIS.get("methods", PRUNING["methods"])
ANALYSIS_CALIBRATIONS = [*ANALYSIS.get("calibrations", CALIB["sets"]), NO_CALIB]
ANALYSIS_NEURONS = {"top_rate": 0.01, "filter_rate": 0.95, "activation_bar": 0.95, **ANALYSIS.get("neurons", {})}
ANALYSIS_GROUPED = ANALYSIS.get("one_job_per_model", all(m["gpu"] == 0 for m in MODELS.values()))
ANALYSIS_DIR = "results/analysis/{model}"
ANALYSIS_DENSE = f"{ANALYSIS_DIR}/hidden/dense.safetensors"
ANALYSIS_PRUNED = f"{ANALYSIS_DIR}/hidden/{{method}}_{{structure}}_{{sparsity}}/{{calib}}/seed{{seed}}.safetensors"
ANALYSIS_CHECKPOINT = "results/checkpoints/{model}/{variant}"
BELEBELE_PROBE = "results/analysis/probe/belebele"

# name -> (outputs, caption): every file an analysis writes, flagged for the report.
ANALYSIS_OUTPUTS = {
    "features": {"table": "features.csv", "check": "features_check.csv", "summary": "features.txt",
                 "figure": "features.png"},
    "drift": {"table": "drift.csv", "benefit": "drift_benefit.csv", "summary": "drift.txt", "figure": "drift.png"},
    "masks": {"table": "masks.csv", "matrix": "masks_matrix.csv", "layers": "masks_layers.csv",
              "types": "masks_types.csv", "figure": "masks.png"},
    "neurons": {"table": "neurons.csv", "neurons": "neurons_list.csv", "summary": "neurons.txt",
                "figure": "neurons.png"},
}


def analysis_probe():
    """The probe source as `langprune analyze hidden` takes it."""
    return f"text:{BELEBELE_PROBE}" if ANALYSIS_PROBE == "belebele" else ANALYSIS_PROBE


def analysis_probe_input(wildcards=None):
    return [BELEBELE_PROBE] if ANALYSIS_PROBE == "belebele" else text_source_input(ANALYSIS_PROBE)


def analysis_variants(model):
    """Pruned variants (path parts below results/checkpoints/<model>/) of the analysed methods and calibrations."""
    return [v for v in checkpoint_variants(model)
            if v.split("_", 1)[0] in ANALYSIS_METHODS and v.split("/")[1] in ANALYSIS_CALIBRATIONS]


def analysis_checkpoints(wildcards):
    return [ANALYSIS_CHECKPOINT.format(model=wildcards.model, variant=v) for v in analysis_variants(wildcards.model)]


def analysis_pruned_states(wildcards):
    return [f"{ANALYSIS_DIR}/hidden/{v}.safetensors".format(model=wildcards.model)
            for v in analysis_variants(wildcards.model)]


def analysis_outputs(name):
    """Named outputs of one analysis; figures and tables flagged for the report with a caption."""
    outputs = {}
    for key, file in ANALYSIS_OUTPUTS[name].items():
        path = f"{ANALYSIS_DIR}/{file}"
        outputs[key] = report(path, caption=f"../report/analysis_{name}.rst", category="Analysis",
                              subcategory="{model}", labels={"model": "{model}", "analysis": name, "file": file})
    return outputs


def analysis_targets(models):
    """Every table, summary and figure of the analyses of the given models (for `rule all`)."""
    return [f"{ANALYSIS_DIR}/{file}".format(model=model) for model in models
            for files in ANALYSIS_OUTPUTS.values() for file in files.values()]


def analysis_hidden_flags(wildcards):
    """Flags shared by every `langprune analyze hidden` call of a model."""
    return (f"--model {MODELS[wildcards.model]['path']} --probe {analysis_probe()} "
            f"--languages {','.join(ANALYSIS_LANGUAGES)} --max-passages {ANALYSIS.get('max_passages', 200)} "
            f"--max-length {ANALYSIS.get('max_length', 256)} --batch-size {ANALYSIS.get('batch_size', 8)} "
            f"--dtype {MODELS[wildcards.model]['dtype']} --device {device(wildcards)} --tag model={wildcards.model}")


def analysis_resources(key):
    def resource(wildcards, attempt):
        base = ANALYSIS.get("resources", {}).get(key, 2000 if key == "mem_mb" else 10)
        return int(base * MODELS[wildcards.model]["scale"] * attempt)

    return resource


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
            checkpoint="results/checkpoints/{model}/{method}_{structure}_{sparsity}/{calib}/seed{seed}",
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
