"""`evaluation.group: variant`: one evaluation job per variant instead of one per (variant, benchmark),
which also writes the analyses' probe states of the variants they read."""

from __future__ import annotations

import yaml

from langprune.config import check_config_files
from langprune.grid import Grid
from langprune.plan import jobs_per_rule
from test_workflow_dryrun import REPO, job_counts, run_snakemake

PROBE_PASSES = ["analysis_hidden_dense", "analysis_hidden_pruned", "analysis_hidden_pruned_all"]


def grouped_config(tmp_path, configfile: str, **sections) -> str:
    config = yaml.safe_load((REPO / configfile).read_text())
    config["evaluation"]["group"] = "variant"
    for key, value in sections.items():
        config[key] = {**config.get(key, {}), **value}
    path = tmp_path / "variant.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def planned(tmp_path, configfile: str) -> tuple[dict[str, int], list[str]]:
    """Jobs per rule of a dry run (checked against `langprune plan`) and its variant commands."""
    proc = run_snakemake("--dry-run", "-p", "--configfile", configfile, workdir=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    counts = job_counts(proc.stdout)
    assert counts == jobs_per_rule(Grid(check_config_files([configfile])))
    return counts, [line for line in proc.stdout.splitlines() if "langprune evaluate variant" in line]


def test_toy_default_has_one_evaluation_job_per_variant_that_also_writes_its_probe_states(tmp_path):
    counts, commands = planned(tmp_path, grouped_config(tmp_path, "config/config.yaml"))
    assert counts["evaluate_analysed_variant"] == 33 and counts["evaluate_dense_variant"] == 1
    per_benchmark = ["evaluate_perplexity", "evaluate_tasks", "evaluate_perplexity_dense", "evaluate_tasks_dense"]
    assert not [rule for rule in [*per_benchmark, *PROBE_PASSES, "evaluate_pruned_variant"] if rule in counts]
    dense = next(line for line in commands if "--out metrics/toy/dense/" in line)
    assert "--out-dir results " in dense and "--dtype float32" in dense
    assert "--run 'hidden --probe text:results/toy/text/probe --languages ar,de,en,es,ru,sw,zh" in dense
    assert "--out analysis/toy/hidden/dense.safetensors'" in dense and "--reference" not in dense
    assert "--run 'perplexity --source text:results/toy/text/eval" in dense
    assert "--out metrics/toy/dense/udhr_mc.json'" in dense
    pruned = next(line for line in commands if "wanda_unstructured_0.5/de/seed1" in line)
    assert "--reference results/analysis/toy/hidden/dense.safetensors " in pruned
    assert "--out analysis/toy/hidden/wanda_unstructured_0.5/de/seed1.safetensors'" in pruned


def test_variants_the_analyses_skip_are_evaluated_without_a_probe_pass(tmp_path):
    config = grouped_config(tmp_path, "config/config.yaml", analysis={"methods": ["wanda"], "calibrations": ["de"]},
                            evaluation={"dtype": "bfloat16"})
    counts, commands = planned(tmp_path, config)
    assert counts["evaluate_analysed_variant"] == 2 and counts["evaluate_pruned_variant"] == 31  # wanda de, 2 seeds
    plain = next(line for line in commands if "sparsegpt_unstructured_0.5/de/seed0" in line)
    assert "hidden" not in plain and "--out-dir results/metrics/toy/sparsegpt_unstructured_0.5/de/seed0 " in plain
    assert "--out perplexity.json'" in plain
    assert all("--dtype bfloat16" in line for line in commands)  # evaluation.dtype, the probe passes too


def test_grouped_workflow_lints_clean(tmp_path):
    proc = run_snakemake("--lint", "--configfile", grouped_config(tmp_path, "config/config.yaml"), workdir=tmp_path)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "Lints for" not in output, output[-3000:]
