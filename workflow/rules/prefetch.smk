# Prefetch: what the configured jobs read from the Hugging Face hub (models, tokenizers, mC4 files,
# lm-eval datasets, the Belebele probe, MKQA's file), fetched once before any compute job. It runs
# on the submit host (a cluster's login node), which reaches the hub or the site's mirror
# (HF_ENDPOINT); every other job runs offline (the Snakefile's shell prefix) and reads the cache.
# Its output is what hub_inputs() (common.smk) makes every job reading the hub wait for.

import json


rule prefetch:
    output:
        PREFETCH_MANIFEST,
    log:
        "logs/prefetch.log",
    localrule: True
    conda:
        CONDA_ENV
    params:
        configfiles=" ".join(PREFETCH_CONFIGFILES),
        # a changed config (a new language, model or task) runs the prefetch again (rerun trigger: params)
        config=json.dumps(config, sort_keys=True, default=str),
    shell:
        # The only job that goes online: it undoes the offline shell prefix for itself.
        "HF_HUB_OFFLINE=0 HF_DATASETS_OFFLINE=0 langprune prefetch --configfile {params.configfiles} "
        "--manifest {output} > {log} 2>&1"
