"""`langprune plan`: jobs per rule, GPU time and disk of a config, without Snakemake (the dry-run
comparison is in test_workflow_dryrun.py), and docs/scaling.md is its output."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from langprune import registry
from langprune.cli import main
from langprune.config import check_config_files
from langprune.grid import Grid
from langprune.plan import PRUNE_COSTS, disk, gpu_hours, jobs_per_rule, render, requested_gpu_hours

REPO = Path(__file__).resolve().parents[1]
PAPER = REPO / "config" / "paper.yaml"


def grid_of(*files: Path) -> Grid:
    return Grid(check_config_files(list(files)))


def overlay(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def hours(lines, what: str):
    line = next(line for line in lines if line.what == what)
    return line.hours, line.bound


def test_paper_grid_gpu_hours_and_disk():
    grid = grid_of(PAPER)
    shared, hflm = gpu_hours(grid, "shared"), gpu_hours(grid, "hflm")
    wanda, sparsegpt = hours(shared, "prune wanda"), hours(shared, "prune sparsegpt")
    assert wanda == pytest.approx((228 * 5 / 60, 228 * 10 / 60)) and sparsegpt == pytest.approx((228 * 7 / 60, 95.0))
    # HFLM, one job per benchmark: 4 min perplexity + 5 task families x 20 min per variant
    assert hours(hflm, "evaluate pruned variants")[0] == pytest.approx(456 * 104 / 60)
    assert hours(shared, "analysis probe passes")[0] == pytest.approx(458 * 3 / 60)
    # The config's time limits: 15 and 30 min per billion, 10 min per probe pass, x scale 8
    assert requested_gpu_hours(grid) == pytest.approx((456 * 15 + 458 * 6 * 30 + 458 * 10) * 8 / 60)
    sizes = {line.what: line for line in disk(grid)}
    assert sizes["calibration shards"].each == 128 * 8192 * 8 and sizes["calibration shards"].count == 114
    assert sizes["wanda checkpoints"].each == pytest.approx(6.98e9 / 8)
    assert sizes["sparsegpt checkpoints"].each == pytest.approx(6.98e9 / 8 + 6.98e9 * 0.5 * 2)
    assert sizes["metrics JSONs"].count == 2748


def test_one_job_per_variant_saves_the_loads(tmp_path):
    grouped = grid_of(PAPER, overlay(tmp_path, "variant.yaml", "evaluation: {group: variant}\n"))
    jobs = jobs_per_rule(grouped)
    assert jobs["evaluate_analysed_variant"] == 456 and jobs["evaluate_dense_variant"] == 2  # every variant analysed
    assert "evaluate_pruned_variant" not in jobs
    assert not {"evaluate_perplexity", "evaluate_tasks", "analysis_hidden_dense"} & set(jobs)  # probes inside
    per_variant = hours(gpu_hours(grouped, "shared"), "evaluate pruned variants")[0] * 60 / 456
    assert per_variant == pytest.approx(3 + 1 + 19 * (0.48 + 0.29 + 0.85 + 0.82 + 1.0))  # one load
    assert hours(gpu_hours(grouped, "shared"), "analysis probe passes")[0] == pytest.approx(458 * 2 / 60)  # no load


def test_paper_extension_in_its_comment_plans_what_the_comment_says(tmp_path):
    """config/paper.yaml's commented-out RIA/DSnoT/M-Wanda/OWL/CWL extension plans the jobs its comment states."""
    text = PAPER.read_text()
    commented = re.findall(r"^  # ((?:methods|allocation): \[.*\])$", text, re.M)
    assert len(commented) == 2
    extended = overlay(tmp_path, "extension.yaml", "pruning:\n" + "".join(f"  {line}\n" for line in commented))
    jobs = jobs_per_rule(grid_of(PAPER, extended))
    assert "1830 (+1374)" in text and "10980" in text and "1830 evaluate_perplexity + 9150 evaluate_tasks" in text
    assert jobs["prune"] == 1830 and jobs["evaluate_perplexity"] == 1830 and jobs["evaluate_tasks"] == 9150
    assert "(114 owl_ratios jobs)" in text and jobs["owl_ratios"] == 114
    assert jobs["analysis_hidden_pruned"] == 1830  # every variant is analysed, +owl and +cwl included


def test_trimmed_real_overlay_is_one_seed_wanda_and_sparsegpt_unstructured():
    grid = grid_of(REPO / "config" / "real.yaml", REPO / "config" / "real_trimmed.yaml")
    checkpoints = grid.checkpoints("gemma3-270m")
    assert {(c.label, c.structure, c.seed) for c in checkpoints} == {
        ("wanda", "unstructured", 0), ("sparsegpt", "unstructured", 0)}
    assert len(checkpoints) == 2 * 8  # seven languages + all7


def test_cost_table_speaks_of_registered_methods_only():
    assert set(PRUNE_COSTS) <= set(registry.METHODS)


def test_a_method_without_a_stated_cost_is_named_not_counted(tmp_path):
    grid = grid_of(PAPER, overlay(tmp_path, "ria.yaml", "pruning: {methods: [wanda, ria]}\n"))
    assert hours(gpu_hours(grid), "prune ria") == (None, None)
    assert "not in the totals, no per-job cost stated: prune ria" in render(grid)


def test_plan_command_prints_jobs_gpu_hours_and_disk(capsys):
    assert main(["plan", "--configfile", str(REPO / "config" / "config.yaml")]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^  prune\s+33$", out, re.M) and re.search(r"^  total\s+134$", out, re.M)
    assert "none: no model sets gpu > 0" in out and "Disk" in out


def test_plan_command_refuses_a_bad_config_in_one_line(tmp_path, capsys):
    bad = overlay(tmp_path, "bad.yaml", yaml.safe_dump({**yaml.safe_load(PAPER.read_text()),
                                                         "pruning": {"methods": ["wand"], "structures": ["2:4"],
                                                                     "sparsities": [0.5]}}))
    assert main(["plan", "--configfile", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("langprune plan: error: config key pruning.methods[0]: 'wand' is not one of")


def test_scaling_doc_shows_the_plan_of_the_paper_grid():
    """docs/scaling.md pastes `langprune plan --configfile config/paper.yaml` (and the GPU section with
    --backend hflm); the blocks must be the tool's output."""
    doc = (REPO / "docs" / "scaling.md").read_text()

    def block(command: str) -> str:
        found = re.search(rf"\$ {re.escape(command)}\n(.*?)\n```", doc, re.S)
        assert found, command
        return found.group(1).strip()

    shared = render(grid_of(PAPER), "shared")
    assert block("langprune plan --configfile config/paper.yaml") == f"langprune plan: config/paper.yaml\n\n{shared}"
    gpu = re.search(r"^GPU time.*?(?=\n\n)", render(grid_of(PAPER), "hflm"), re.S | re.M).group(0)
    assert block("langprune plan --configfile config/paper.yaml --backend hflm | sed -n '/^GPU time/,/^$/p'") == gpu
