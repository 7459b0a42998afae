# Prefetch: what the configured jobs read from the Hugging Face hub (models, tokenizers, mC4 files,
# lm-eval datasets, the Belebele probe, MKQA's file), fetched once before any compute job. It runs
# on the submit host (a cluster's login node), which reaches the hub or the site's mirror
# (HF_ENDPOINT); every other job runs offline (the Snakefile's shell prefix) and reads the cache.

import json

from langprune.prefetch import reads_hub, saves_task_data

PREFETCH_MANIFEST = "results/prefetch/manifest.json"
PREFETCH_TASK_DATA = "results/prefetch/task-data"
PREFETCH_CONFIGFILES = [str(f) for f in workflow.configfiles] or ["config/config.yaml"]
READS_HUB = reads_hub(GRID)


def prefetch_manifest(wildcards=None):
    """The input every job reading the hub waits for: the prefetch's manifest, when the config reads the
    hub. ancient(): a prefetch rerun for a changed config does not make finished jobs outdated."""
    return [ancient(PREFETCH_MANIFEST)] if READS_HUB else []


def prefetch_task_data(benchmark):
    """`--task-data` directories of a benchmark whose data the prefetch saved beside its manifest (MKQA)."""
    return [PREFETCH_TASK_DATA] if READS_HUB and saves_task_data(benchmark) else []


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
