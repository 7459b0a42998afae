# Settings, paths and input functions of the analysis stage (rules in analysis.smk; the probe passes
# run inside the evaluation jobs when evaluation.group is variant, evaluate.smk): the grid's
# analysed checkpoints of each model (langprune.grid.Grid.analysis_checkpoints) mapped to files.

from langprune.grid import BELEBELE_PROBE

ANALYSIS = config["analysis"]
ANALYSIS_SETTINGS = GRID.analysis  # defaults that depend on other keys, resolved by the grid
ANALYSIS_LANGUAGES = ANALYSIS_SETTINGS.languages
ANALYSIS_PROBE = ANALYSIS_SETTINGS.probe
ANALYSIS_GROUPED = ANALYSIS_SETTINGS.one_job_per_model
ANALYSIS_DIR = variant.ANALYSIS_DIR
ANALYSIS_DENSE = variant.HIDDEN_STATES_FILE.replace("{variant}", variant.DENSE)
ANALYSIS_PRUNED = variant.pruned_pattern(variant.HIDDEN_STATES_FILE)

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


def probe_flags():
    """The probe set of every `langprune analyze hidden` pass, a job of its own or a `--run` of a
    variant's evaluation job."""
    words = ["--probe", analysis_probe(), "--languages", ",".join(ANALYSIS_LANGUAGES)]
    words += ["--max-passages", ANALYSIS["max_passages"], "--max-length", ANALYSIS["max_length"]]
    words += ["--batch-size", ANALYSIS["batch_size"]]
    return " ".join(map(str, words))


def analysis_probe_input(wildcards=None):
    return [BELEBELE_PROBE] if ANALYSIS_PROBE == "belebele" else text_source_input(ANALYSIS_PROBE)


def analysis_checkpoints(wildcards):
    return [c.directory for c in GRID.analysis_checkpoints(wildcards.model)]


def mask_checkpoints(wildcards):
    """The analysed checkpoints whose masks the mask analyses compare (no quantized ones)."""
    return [c.directory for c in GRID.mask_checkpoints(wildcards.model)]


def analysis_pruned_states(wildcards):
    return [c.hidden_states for c in GRID.analysis_checkpoints(wildcards.model)]


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
    """Every table, summary and figure of the analyses the grid builds for the given models (for `rule all`)."""
    return [
        f"{ANALYSIS_DIR}/{file}".format(model=model)
        for model in models
        for name in GRID.analyses(model)
        for file in ANALYSIS_OUTPUTS[name].values()
    ]
