"""`langprune prefetch` against a real Hugging Face mirror on 127.0.0.1 (olah serving small stand-ins of
the paper's repositories under their real ids), then the compute side offline.

The clients are the real ones: huggingface_hub, `datasets` and lm-eval reach the mirror through
HF_ENDPOINT, as on a site with its own mirror. After the prefetch the mirror is stopped; every
compute command then runs with HF_HUB_OFFLINE=1 / HF_DATASETS_OFFLINE=1 and a socket guard that
records any internet connection attempt.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mirror import hubfixtures as fx
from mirror.server import PAPER, offline_env, paper_config, refuses

pytestmark = pytest.mark.workflow  # a mirror server, prefetches and workflow runs: not the unit tier

LANGPRUNE = [sys.executable, "-m", "langprune"]
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def langprune(*args: str, env: dict, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([*LANGPRUNE, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def error_line(result: subprocess.CompletedProcess, command: str) -> str:
    """The one error line of a failed command (and nothing else on stderr that looks like a traceback)."""
    assert result.returncode == 2, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith(f"langprune {command}: error:")]
    assert len(lines) == 1, result.stderr[-3000:]
    return lines[0]


def prefetch(work: Path, env: dict, *extra: str, config: Path | None = None) -> subprocess.CompletedProcess:
    config = config or paper_config(work / "paper_small.yaml")
    return langprune("prefetch", "--configfile", str(config), *extra, env=env, cwd=work)


def blobs(hf_home: Path) -> list[Path]:
    return [p for p in (hf_home / "hub").glob("*/blobs/*") if p.is_file()]


@pytest.fixture(scope="module")
def fetched(mirror, tmp_path_factory):
    """One complete prefetch of the shrunk paper config: (work dir, HF_HOME, manifest)."""
    work, hf_home = tmp_path_factory.mktemp("work"), tmp_path_factory.mktemp("hf")
    result = prefetch(work, mirror.client_env(hf_home))
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    manifest = json.loads((work / "results" / "prefetch" / "manifest.json").read_text())
    return work, hf_home, manifest


def test_dry_run_lists_what_the_paper_grid_reads_without_the_network(tmp_path):
    closed = {"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(tmp_path / "hf"), **OFFLINE,
              "PATH": str(Path(sys.executable).parent), "OMP_NUM_THREADS": "1"}
    result = langprune("prefetch", "--configfile", str(PAPER), "--dry-run", env=closed, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert f"model {fx.LLAMA3} (weights and tokenizer)  <- model llama3-8b-instruct, tokenizer llama3" in out
    assert f"model {fx.AYA23} (weights and tokenizer)  <- model aya23-8b, tokenizer aya23" in out
    for lang in fx.LANGUAGES:
        assert f"multilingual/c4-{lang}.tfrecord-00000-of-*.json.gz  <- calibration {lang}" in out
        assert f"multilingual/c4-{lang}-validation.tfrecord-00000-of-*.json.gz  <- perplexity {lang}" in out
        assert f"dataset facebook/belebele config {fx.BELEBELE_CODES[lang]}" in out
    for lang in ("ar", "de", "es", "ru", "zh"):
        assert f"dataset alexandrainst/m_arc config {lang}  <- task arc_{lang}" in out
    for lang in ("ar", "de", "en", "es", "ru", "zh"):
        assert f"dataset alexandrainst/m_mmlu config {lang}  <- task m_mmlu_{lang}" in out
    for lang in ("ar", "de", "es", "ru"):
        assert f"dataset alexandrainst/m_hellaswag config {lang}  <- task hellaswag_{lang}" in out
    assert "dataset allenai/ai2_arc config ARC-Easy  <- task arc_easy" in out
    assert "dataset allenai/ai2_arc config ARC-Challenge  <- task arc_challenge" in out
    assert "dataset Rowan/hellaswag (default config)  <- task hellaswag" in out
    assert "url https://github.com/apple/ml-mkqa/raw/main/dataset/mkqa.jsonl.gz" in out
    assert not (tmp_path / "hf" / "hub").exists()  # nothing fetched, nothing asked


def test_prefetch_fetches_the_loading_files_at_resolved_commits(mirror, fetched):
    work, hf_home, manifest = fetched
    items = {(i["repo"], i["config"]): i for i in manifest["items"]}
    llama = items[(fx.LLAMA3, None)]
    assert llama["commit"] == mirror.commit("model", fx.LLAMA3)
    names = [f["path"] for f in llama["files"]]
    assert "config.json" in names and "tokenizer.json" in names and "model.safetensors.index.json" in names
    assert [n for n in names if n.endswith(".safetensors")] == ["model-00001-of-00002.safetensors",
                                                                 "model-00002-of-00002.safetensors"]
    assert not [n for n in names if n.startswith("original/") or n in ("LICENSE", "README.md")]
    assert items[(fx.AYA23, None)]["commit"] == mirror.commit("model", fx.AYA23)
    c4 = [i for i in manifest["items"] if i["repo"] == fx.MC4]
    assert sorted(f["path"] for i in c4 for f in i["files"]) == sorted(
        f"multilingual/c4-{lang}{infix}.tfrecord-00000-of-{fx.MC4_SHARDS[split]:05d}.json.gz"
        for lang in ("de", "en") for split, infix in (("train", ""), ("validation", "-validation")))
    assert items[("alexandrainst/m_hellaswag", "de")]["splits"] == {"val": 4}
    # Every file is in the cache with the hub's size and SHA-256; the cache's main ref is the commit.
    hub = hf_home / "hub"
    for item in manifest["items"]:
        if item["repo_type"] == "url":
            continue
        folder = hub / f"{item['repo_type']}s--{item['repo'].replace('/', '--')}"
        assert (folder / "refs" / "main").read_text() == item["commit"]
        for f in item["files"]:
            from langprune.io import sha256_file

            path = folder / "snapshots" / item["commit"] / f["path"]
            assert path.stat().st_size == f["size"]
            if f["sha256"]:
                assert sha256_file(path) == f["sha256"]
    assert (work / "results" / "prefetch" / "task-data" / fx.MKQA_FILE).is_file()
    # The dry run now knows the sizes from the manifest.
    again = prefetch(work, {**mirror.client_env(hf_home), **OFFLINE}, "--dry-run")
    assert "model-00001-of-00002.safetensors  " in again.stdout and "size unknown" not in again.stdout


def test_gated_model_without_a_token_names_the_model_and_the_login(mirror, tmp_path):
    result = prefetch(tmp_path, mirror.client_env(tmp_path / "hf", token=False))
    line = error_line(result, "prefetch")
    assert fx.LLAMA3 in line and "gated" in line and "`hf auth login`" in line


def test_a_repository_that_does_not_exist_is_named(mirror, tmp_path):
    config = paper_config(tmp_path / "c.yaml", **{"models.llama3-8b-instruct.path": "meta-llama/Llama-3-Nope",
                                                 "tokenizers.llama3": "meta-llama/Llama-3-Nope"})
    line = error_line(prefetch(tmp_path, mirror.client_env(tmp_path / "hf"), config=config), "prefetch")
    assert "repository meta-llama/Llama-3-Nope does not exist" in line and "model llama3-8b-instruct" in line


def test_a_file_that_does_not_exist_is_named(mirror, tmp_path):
    config = paper_config(tmp_path / "c.yaml", languages=["de", "fr"])  # the mirror has no French mC4
    line = error_line(prefetch(tmp_path, mirror.client_env(tmp_path / "hf"), config=config), "prefetch")
    assert "allenai/c4 has no file matching multilingual/c4-fr-validation.tfrecord-00000-of-*.json.gz" in line


def test_a_dataset_config_that_does_not_exist_is_named(mirror, tmp_path):
    texts = tmp_path / "text"
    texts.mkdir()
    for lang in ("de", "fr"):
        (texts / f"{lang}.txt").write_text("Ein Text.\n\nNoch einer.\n")
    config = paper_config(tmp_path / "c.yaml", languages=["de", "fr"],
                          **{"evaluation.perplexity.source": f"text:{texts}"})  # only Belebele reads French
    line = error_line(prefetch(tmp_path, mirror.client_env(tmp_path / "hf"), config=config), "prefetch")
    assert "dataset facebook/belebele has no config 'fra_Latn'" in line and "analysis probe" in line


def test_too_little_disk_is_refused_before_downloading(mirror, tmp_path):
    line = error_line(prefetch(tmp_path, mirror.client_env(tmp_path / "hf"), "--reserve", "1000000T"), "prefetch")
    assert "only" in line and "are free" in line and "HF_HOME" in line
    # Resolving read the dataset cards (their configs name the data files); nothing planned was fetched.
    fetched = {p.name for p in (tmp_path / "hf" / "hub").glob("*/snapshots/*/**/*") if not p.is_dir()}
    assert fetched <= {"README.md"}, fetched


def test_an_interrupted_prefetch_resumes_and_nothing_half_written_counts(mirror, tmp_path):
    work, hf_home = tmp_path / "work", tmp_path / "hf"
    work.mkdir()
    env = mirror.client_env(hf_home)
    config = paper_config(work / "paper_small.yaml")
    # Killed as soon as the first file is in the cache.
    process = subprocess.Popen([*LANGPRUNE, "prefetch", "--configfile", str(config)], env=env, cwd=work,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not blobs(hf_home) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (work / "results" / "prefetch" / "manifest.json").exists()
    # What an interruption leaves: a half-written weight file where the complete one belongs.
    complete = prefetch(work, env)
    assert complete.returncode == 0, complete.stderr[-3000:]
    snapshot = hf_home / "hub" / f"models--{fx.LLAMA3.replace('/', '--')}" / "snapshots"
    shard = next(snapshot.glob("*/model-00001-of-00002.safetensors"))
    blob, good = shard.resolve(), shard.read_bytes()
    blob.chmod(0o644)
    blob.write_bytes(good[: len(good) // 2])
    (blob.parent / "0123abcd.incomplete").write_bytes(b"partial")
    (work / "results" / "prefetch" / "manifest.json").unlink()
    resumed = prefetch(work, env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "model-00001-of-00002.safetensors: cached copy is incomplete or corrupt" in resumed.stderr
    assert shard.read_bytes() == good


def test_compute_jobs_on_an_empty_cache_fail_in_one_line_naming_the_prefetch(mirror, tmp_path):
    env = {**mirror.client_env(tmp_path / "empty"), **OFFLINE}
    calibrate = langprune("calibrate", "--tokenizer", fx.LLAMA3, "--source", "mc4", "--languages", "de",
                          "--nsamples", "2", "--seqlen", "16", "--out", str(tmp_path / "s.safetensors"),
                          env=env, cwd=tmp_path)
    line = error_line(calibrate, "calibrate")
    assert f"tokenizer '{fx.LLAMA3}': config.json is not in the Hugging Face cache" in line
    assert "`langprune prefetch --configfile CONFIG`" in line
    tasks = langprune("evaluate", "tasks", "--model", fx.AYA23, "--tasks", "arc", "--languages", "de",
                      "--limit", "1", "--out", str(tmp_path / "t.json"), env=env, cwd=tmp_path)
    line = error_line(tasks, "evaluate")
    assert "dataset alexandrainst/m_arc config de is not in the Hugging Face cache" in line
    assert "langprune prefetch" in line


def test_after_the_prefetch_compute_jobs_run_offline_with_the_mirror_stopped(mirror, fetched, tmp_path):
    work, hf_home, manifest = fetched
    mirror.stop()
    assert refuses(mirror.port)
    guard_log = tmp_path / "network.log"
    env = offline_env({**mirror.client_env(hf_home), **OFFLINE}, guard_log)
    shard = tmp_path / "de.safetensors"
    calibrate = langprune("calibrate", "--tokenizer", fx.LLAMA3, "--source", "mc4", "--languages", "de",
                          "--nsamples", "2", "--seqlen", "16", "--out", str(shard), env=env, cwd=work)
    assert calibrate.returncode == 0, calibrate.stderr[-3000:]
    ckpt = tmp_path / "ckpt"
    prune = langprune("prune", "--model", fx.LLAMA3, "--method", "wanda", "--sparsity", "0.5",
                      "--calibration", str(shard), "--out", str(ckpt), env=env, cwd=work)
    assert prune.returncode == 0, prune.stderr[-3000:]
    recorded = json.loads((ckpt / "manifest.json").read_text())["base"]
    assert recorded["revision"] == mirror.commit("model", fx.LLAMA3)  # the prefetched commit
    tasks = langprune("evaluate", "tasks", "--model", fx.LLAMA3, "--checkpoint", str(ckpt), "--tasks",
                      "arc,belebele,mmlu,hellaswag,mkqa", "--languages", "de,en", "--limit", "1", "--task-data",
                      str(work / "results" / "prefetch" / "task-data"), "--out", str(tmp_path / "tasks.json"),
                      env=env, cwd=work)
    assert tasks.returncode == 0, tasks.stderr[-3000:]
    records = json.loads((tmp_path / "tasks.json").read_text())["records"]
    assert {(r["benchmark"], r["language"]) for r in records if r["available"]} == {
        ("arc", "de"), ("arc", "en-e"), ("arc", "en-c"), ("belebele", "de"), ("belebele", "en"), ("mmlu", "de"),
        ("mmlu", "en"), ("hellaswag", "de"), ("hellaswag", "en"), ("mkqa", "de"), ("mkqa", "en")}
    assert all(r["n"] == 1 for r in records if r["available"])
    assert not guard_log.exists(), guard_log.read_text()
    assert "evaluate tasks" in Path(f"{guard_log}.loaded").read_text()  # the guard was in place
