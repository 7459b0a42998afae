"""`evaluation.group: variant`: one evaluation job per variant instead of one per (variant, benchmark)."""

from __future__ import annotations

import yaml

from test_workflow_dryrun import REPO, job_counts, run_snakemake


def grouped_config(tmp_path, configfile: str) -> str:
    config = yaml.safe_load((REPO / configfile).read_text())
    config["evaluation"]["group"] = "variant"
    path = tmp_path / "variant.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_toy_default_has_one_evaluation_job_per_variant(tmp_path):
    proc = run_snakemake("--dry-run", "-p", "--configfile", grouped_config(tmp_path, "config/config.yaml"),
                         workdir=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    counts = job_counts(proc.stdout)
    assert counts["evaluate_pruned_variant"] == 33 and counts["evaluate_dense_variant"] == 1
    per_benchmark = ["evaluate_perplexity", "evaluate_tasks", "evaluate_perplexity_dense", "evaluate_tasks_dense"]
    assert not [rule for rule in per_benchmark if rule in counts]
    dense = next(line for line in proc.stdout.splitlines() if "evaluate variant" in line and "/dense" in line)
    assert "--out-dir results/metrics/toy/dense" in dense
    assert "--run 'perplexity --source text:results/toy/text/eval" in dense and "--out udhr_mc.json'" in dense


def test_grouped_workflow_lints_clean(tmp_path):
    proc = run_snakemake("--lint", "--configfile", grouped_config(tmp_path, "config/config.yaml"), workdir=tmp_path)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "Lints for" not in output, output[-3000:]
