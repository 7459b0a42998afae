# langprune: prune multilingual LLMs with language-specific calibration and measure
# what it does per language. Run `snakemake --cores all` (embedded toy default) or
# `snakemake --cores all --configfile config/paper.yaml` (the paper's grid).
# Every step is one `langprune` command; this file only wires them together.

# The embedded default, unless a config was given (`--configfile` replaces it
# rather than being merged into it, so config/paper.yaml carries no toy keys).
if not config:
    # Snakemake's own loader names no line or column for a YAML mistake: read the file strictly first.
    if os.path.exists("config/config.yaml"):
        from langprune.config import load_config_file
        from langprune.errors import LangpruneError
        from snakemake.exceptions import WorkflowError

        try:
            load_config_file("config/config.yaml")
        except LangpruneError as _config_error:
            raise WorkflowError(str(_config_error)) from None

    configfile: "config/config.yaml"


# Compute jobs never reach the hub: they read what the prefetch rule (prefetch.smk, run first on the
# submit host) put into the Hugging Face cache, and a file missing there is a one-line error.
shell.prefix("set -euo pipefail; export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1; ")


include: "workflow/rules/common.smk"
include: "workflow/rules/analysis_common.smk"
include: "workflow/rules/prefetch.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/prune.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/analysis.smk"


rule all:
    default_target: True
    input:
        all_targets(),
