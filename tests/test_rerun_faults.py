"""Interruptions and failures: a run killed while a job writes its artifact
resumes with `--rerun-incomplete` and gives the same result; nothing
half-written is ever taken as complete; a pruning job with a bad model id
fails with a clear message while the other jobs go on (`--keep-going`).

A job is frozen at the moment it writes (a sitecustomize hook holds the
artifact's final rename), then the whole run is SIGKILLed, as a lost node or
an out-of-time allocation would do.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from helpers import workflow as wf
from langprune.cli import main

pytestmark = pytest.mark.workflow

CKPT = "results/checkpoints/toy/wanda_unstructured_0.5/de/seed0"
METRICS = "results/metrics/toy/wanda_unstructured_0.5/de/seed0/perplexity.json"

# Freezes the process that renames a finished artifact into ``FREEZE_TARGET``:
# before the rename (the artifact is fully written beside its final name) or
# after it (the artifact is in place but the job has not reported back).
FREEZE_HOOK = '''
import os, time
_target, _when, _marker = (os.environ.get(k) for k in ("FREEZE_TARGET", "FREEZE_WHEN", "FREEZE_MARKER"))
if _target:
    _replace = os.replace

    def _freezing_replace(src, dst, *args, **kwargs):
        hit = os.fspath(dst).endswith(_target)
        if hit and _when == "before":
            open(_marker, "w").close()
            time.sleep(600)
        result = _replace(src, dst, *args, **kwargs)
        if hit and _when == "after":
            open(_marker, "w").close()
            time.sleep(600)
        return result

    os.replace = _freezing_replace
'''


def killed_while_writing(workdir: Path, target: str, when: str, hook_dir: Path) -> None:
    """Run Snakemake for ``target``, freeze its job at the rename, SIGKILL the
    whole process group (Snakemake and the job)."""
    hook_dir.mkdir()
    (hook_dir / "sitecustomize.py").write_text(FREEZE_HOOK)
    marker = hook_dir / "frozen"
    pythonpath = os.pathsep.join(filter(None, [str(hook_dir), os.environ.get("PYTHONPATH")]))  # keep the caller's
    env = wf.snakemake_env({"PYTHONPATH": pythonpath, "FREEZE_TARGET": target, "FREEZE_WHEN": when,
                            "FREEZE_MARKER": str(marker)})
    command = [*wf.SNAKEMAKE, "--snakefile", str(wf.SNAKEFILE), "--directory", str(workdir), "--cores", "1", target]
    run = subprocess.Popen(command, cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not marker.exists():
            assert run.poll() is None, f"the run ended ({run.returncode}) before writing {target}"
            assert time.monotonic() < deadline, f"{target} was never written"
            time.sleep(0.1)
    finally:
        os.killpg(run.pid, signal.SIGKILL)
        run.wait()


def unlock(workdir: Path) -> None:
    """What a user does first after a killed run: drop the stale lock."""
    wf.snakemake(workdir, "--unlock")


def digest(path: Path) -> dict[str, str]:
    """SHA-256 of an artifact's content: a file, or a checkpoint's data files
    (its manifest also records when and how fast it was made, so it is
    compared through the file hashes it lists)."""
    from langprune.io import read_json, sha256_file

    if not path.is_dir():
        return {path.name: sha256_file(path)}
    files = {p.name: sha256_file(p) for p in path.iterdir() if p.is_file() and not p.name.startswith(".")
             and p.name != "manifest.json"}
    assert files == read_json(path / "manifest.json")["files"]
    return files


@pytest.mark.parametrize("target", [CKPT, METRICS], ids=["checkpoint", "metrics"])
def test_killed_before_the_rename_leaves_nothing_that_looks_complete(reference_run, tmp_path, target):
    workdir = wf.copy_run(reference_run, tmp_path / "run")
    subprocess.run(["rm", "-rf", str(workdir / target)], check=True)
    killed_while_writing(workdir, target, "before", tmp_path / "hook")

    assert not (workdir / target).exists()
    leftovers = list((workdir / target).parent.glob(f".{Path(target).name}.*.tmp"))
    assert leftovers, "the job was not frozen mid-write"
    assert {rule for rule, out in wf.planned_jobs(workdir, target) if out == target}, "not planned again"

    unlock(workdir)
    wf.snakemake(workdir, "--cores", "1", "--rerun-incomplete", target)
    assert digest(workdir / target) == digest(reference_run / target)


def test_killed_after_the_rename_is_rerun_not_trusted(reference_run, tmp_path):
    workdir = wf.copy_run(reference_run, tmp_path / "run")
    subprocess.run(["rm", "-rf", str(workdir / CKPT)], check=True)
    killed_while_writing(workdir, CKPT, "after", tmp_path / "hook")
    assert (workdir / CKPT / "manifest.json").exists()

    unlock(workdir)
    refused = wf.snakemake(workdir, "--cores", "1", CKPT, check=False)
    assert refused.returncode != 0
    assert "incomplete" in (refused.stdout + refused.stderr).lower()

    resumed = wf.snakemake(workdir, "--cores", "1", "--rerun-incomplete", CKPT)
    assert "rule prune:" in resumed.stdout + resumed.stderr
    assert digest(workdir / CKPT) == digest(reference_run / CKPT)


def test_bad_model_fails_clearly_and_others_go_on(reference_run, tmp_path):
    workdir = wf.copy_run(reference_run, tmp_path / "run")
    config = wf.reduced_default()
    config["models"]["broken"] = {**config["models"]["toy"], "path": "no-such-org/no-such-model"}
    wf.write_config(workdir, config)
    good = CKPT.replace("/de/", "/en/")
    bad = CKPT.replace("/toy/", "/broken/")
    subprocess.run(["rm", "-rf", str(workdir / good)], check=True)
    # A hub model makes every job wait for the prefetch; say it ran (its own errors are
    # test_prefetch_mirror.py's): this is about the pruning job of a model the cache lacks.
    (workdir / "results" / "prefetch").mkdir(parents=True)
    (workdir / "results" / "prefetch" / "manifest.json").write_text("{}\n")

    run = wf.snakemake(workdir, "--cores", "2", "--keep-going", bad, good, check=False)
    assert run.returncode != 0
    assert (workdir / good / "masks.safetensors").exists()
    assert not (workdir / bad).exists()
    log = (workdir / "logs" / bad.replace("results/checkpoints/", "prune/")).with_suffix(".log")
    message = log.read_text().strip()
    assert "no-such-org/no-such-model" in message
    assert "Traceback" not in message
    assert "Error in rule prune" in run.stdout + run.stderr


def test_corrupted_checkpoint_is_refused_and_rebuilt_after_verify(reference_run, tmp_path, monkeypatch, capsys):
    """Bit rot that keeps the mtime does not make Snakemake re-prune, so the evaluation refuses the checkpoint
    by its SHA-256, and the one documented command (docs/reruns.md) makes the next run rebuild it."""
    import shutil

    from safetensors.torch import load_file, save_file

    workdir = wf.copy_run(reference_run, tmp_path / "run")
    ckpt = workdir / CKPT
    if ckpt.is_symlink():  # a between-workflow cache entry of the reference run: corrupt a private copy
        real = ckpt.resolve()
        ckpt.unlink()
        shutil.copytree(real, ckpt)
        shutil.copystat(real, ckpt)
    masks_file = ckpt / "masks.safetensors"
    times = masks_file.stat()
    masks = load_file(str(masks_file))
    save_file({name: 255 - packed for name, packed in masks.items()}, str(masks_file))
    os.utime(masks_file, ns=(times.st_atime_ns, times.st_mtime_ns))
    assert "prune" not in {rule for rule, _ in wf.planned_jobs(workdir, METRICS)}  # Snakemake cannot see it

    metrics = workdir / METRICS
    metrics.unlink()  # say this evaluation had not run yet: it must refuse the checkpoint
    failed = wf.snakemake(workdir, "--cores", "1", METRICS, check=False)
    assert failed.returncode != 0 and not metrics.exists()
    assert any("does not match the SHA-256" in log.read_text() for log in (workdir / "logs").rglob("*.log"))

    # docs/reruns.md: snakemake --cores all $(langprune verify --remove-broken results/checkpoints/*/*/*/seed*) all
    checkpoints = sorted(str(path.relative_to(workdir)) for path in workdir.glob("results/checkpoints/*/*/*/seed*"))
    monkeypatch.chdir(workdir)
    assert main(["verify", "--remove-broken", *checkpoints]) == 0
    removed = capsys.readouterr().out.split()
    assert removed == [CKPT]
    rerun = wf.snakemake(workdir, "--cores", "1", *removed, METRICS)
    assert "rule prune:" in rerun.stdout + rerun.stderr and metrics.is_file()
    assert digest(ckpt) == digest(reference_run / CKPT)
