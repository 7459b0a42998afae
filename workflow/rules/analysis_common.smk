# Settings, paths and input functions of the analysis stage (rules in analysis.smk).

from langprune.config import default_probe

# Defaults that depend on other keys; the rest come from the schema.
ANALYSIS = config["analysis"]
ANALYSIS_LANGUAGES = ANALYSIS.get("languages", LANGUAGES)
ANALYSIS_PROBE = ANALYSIS.get("probe", default_probe(config))
ANALYSIS_METHODS = ANALYSIS.get("methods", PRUNING["methods"])
ANALYSIS_CALIBRATIONS = [*ANALYSIS.get("calibrations", CALIB["sets"]), variant.UNCALIBRATED]
ANALYSIS_GROUPED = ANALYSIS.get("one_job_per_model", all(m["gpu"] == 0 for m in MODELS.values()))
ANALYSIS_DIR = "results/analysis/{model}"
ANALYSIS_DENSE = f"{ANALYSIS_DIR}/hidden/dense.safetensors"
ANALYSIS_PRUNED = f"{ANALYSIS_DIR}/hidden/{variant.VARIANT_PATH}.safetensors"
BELEBELE_PROBE = "results/analysis/probe/belebele"

# name -> (outputs, caption): every file an analysis writes, flagged for the report.
ANALYSIS_OUTPUTS = {
    "features": {
        "table": "features.csv",
        "check": "features_check.csv",
        "summary": "features.txt",
        "figure": "features.png",
    },
    "drift": {"table": "drift.csv", "benefit": "drift_benefit.csv", "summary": "drift.txt", "figure": "drift.png"},
    "masks": {
        "table": "masks.csv",
        "matrix": "masks_matrix.csv",
        "layers": "masks_layers.csv",
        "types": "masks_types.csv",
        "figure": "masks.png",
    },
    "neurons": {
        "table": "neurons.csv",
        "neurons": "neurons_list.csv",
        "summary": "neurons.txt",
        "figure": "neurons.png",
    },
}


def analysis_probe():
    """The probe source as `langprune analyze hidden` takes it."""
    return f"text:{BELEBELE_PROBE}" if ANALYSIS_PROBE == "belebele" else ANALYSIS_PROBE


def analysis_probe_input(wildcards=None):
    return [BELEBELE_PROBE] if ANALYSIS_PROBE == "belebele" else text_source_input(ANALYSIS_PROBE)


def analysis_variants(model):
    """Pruned variants (path parts below results/checkpoints/<model>/) of the analysed methods and calibrations."""
    return [
        v
        for v in checkpoint_variants(model)
        if variant.parse_variant_path(v)["method"] in ANALYSIS_METHODS
        and variant.parse_variant_path(v)["calib"] in ANALYSIS_CALIBRATIONS
    ]


def analysis_checkpoints(wildcards):
    return [variant.CHECKPOINT_DIR.format(model=wildcards.model, variant=v) for v in analysis_variants(wildcards.model)]


def analysis_pruned_states(wildcards):
    return [
        f"{ANALYSIS_DIR}/hidden/{v}.safetensors".format(model=wildcards.model)
        for v in analysis_variants(wildcards.model)
    ]


def analysis_outputs(name):
    """Named outputs of one analysis; figures and tables flagged for the report with a caption."""
    outputs = {}
    for key, file in ANALYSIS_OUTPUTS[name].items():
        path = f"{ANALYSIS_DIR}/{file}"
        outputs[key] = report(
            path,
            caption=f"../report/analysis_{name}.rst",
            category="Analysis",
            subcategory="{model}",
            labels={"model": "{model}", "analysis": name, "file": file},
        )
    return outputs


def analysis_targets(models):
    """Every table, summary and figure of the analyses of the given models (for `rule all`)."""
    return [
        f"{ANALYSIS_DIR}/{file}".format(model=model)
        for model in models
        for files in ANALYSIS_OUTPUTS.values()
        for file in files.values()
    ]
