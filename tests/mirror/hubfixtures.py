"""Small stand-ins for the hub repositories the paper's grid reads, built in seconds.

Each repository is a git repository under ``ROOT/{models,datasets}/<org>/<name>`` (the layout
olah serves its local mirrors from), under the real id and in the real repository's file
layout: sharded safetensors with their index, the tokenizer files, and the folders loading
must skip (Llama 3's ``original/``); mC4's ``multilingual/c4-<lang>[-validation].tfrecord-NNNNN-
of-NNNNN.json.gz`` files; the task datasets with README ``configs:`` and the fields lm-eval's task
YAMLs read. Weights and data files are committed as git-LFS pointers with the objects in
``.git/lfs/objects``, as on the hub, so the hub API reports their sizes and SHA-256.

Nothing here is written by hand in binary form: every file is generated from a seed.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import random
import shutil
import subprocess
from pathlib import Path

from conftest import SAMPLE_TEXT

LANGUAGES = ["ar", "de", "en", "es", "ru", "sw", "zh"]
LLAMA3 = "meta-llama/Meta-Llama-3-8B-Instruct"
AYA23 = "CohereForAI/aya-23-8B"
MC4 = "allenai/c4"
# Shard counts in mC4's file names ("-of-NNNNN"); the reader globs them, so any count works.
MC4_SHARDS = {"train": 1024, "validation": 8}
MKQA_FILE = "mkqa.jsonl.gz"
GATED = [LLAMA3]  # gated on the hub: the mirror asks for a token, as the hub does
BELEBELE_CODES = {"ar": "arb_Arab", "de": "deu_Latn", "en": "eng_Latn", "es": "spa_Latn", "ru": "rus_Cyrl",
                  "sw": "swh_Latn", "zh": "zho_Hans"}


def _words(lang: str) -> list[str]:
    text = SAMPLE_TEXT[lang]
    return list(text.replace(",", "").replace("。", "")) if lang == "zh" else text.split()


def sentence(lang: str, rng: random.Random, n: int = 8) -> str:
    """Random words of one language (its UDHR sample), so language ID still recognises it."""
    words = _words(lang)
    joiner = "" if lang == "zh" else " "
    return joiner.join(rng.choice(words) for _ in range(n))


def document(lang: str, rng: random.Random, sentences: int = 30) -> str:
    return "\n".join(sentence(lang, rng, rng.randint(6, 12)) for _ in range(sentences))


# ---------------------------------------------------------------- git repositories with LFS objects


class Repo:
    """Files of one hub repository; ``commit()`` writes it as a git repository with LFS objects."""

    def __init__(self, root: Path, repo_type: str, repo_id: str):
        self.path = root / f"{repo_type}s" / repo_id
        self.files: dict[str, bytes] = {}
        self.lfs: set[str] = set()

    def add(self, name: str, data: bytes | str, lfs: bool = False) -> None:
        self.files[name] = data.encode("utf-8") if isinstance(data, str) else data
        if lfs:
            self.lfs.add(name)

    def add_json(self, name: str, obj) -> None:
        self.add(name, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")

    def commit(self) -> Path:
        shutil.rmtree(self.path, ignore_errors=True)
        self.path.mkdir(parents=True)
        git = ["git", "-c", "user.name=fixture", "-c", "user.email=fixture@localhost", "-c", "commit.gpgsign=false"]
        subprocess.run([*git, "init", "-q", "-b", "main", str(self.path)], check=True)
        for name, data in self.files.items():
            target = self.path / name
            target.parent.mkdir(parents=True, exist_ok=True)
            if name in self.lfs:
                oid = hashlib.sha256(data).hexdigest()
                obj = self.path / ".git" / "lfs" / "objects" / oid[:2] / oid[2:4] / oid
                obj.parent.mkdir(parents=True, exist_ok=True)
                obj.write_bytes(data)
                target.write_text(f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {len(data)}\n")
            else:
                target.write_bytes(data)
        subprocess.run([*git, "-C", str(self.path), "add", "-A"], check=True)
        subprocess.run([*git, "-C", str(self.path), "commit", "-q", "-m", "fixture"], check=True)
        return self.path


def head_commit(path: Path) -> str:
    return subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], check=True, capture_output=True,
                          text=True).stdout.strip()


# ---------------------------------------------------------------- models


def _bpe(texts: list[str], specials: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    return tok


def _with_bos(tok, bos: str):
    from tokenizers import processors

    bos_id = tok.token_to_id(bos)
    tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                       special_tokens=[(bos, bos_id)])
    return tok


def _texts() -> list[str]:
    rng = random.Random(0)
    return [document(lang, rng, 5) for lang in LANGUAGES for _ in range(4)] + list(SAMPLE_TEXT.values())


def _weights(repo: Repo, config: dict, seed: int) -> None:
    """Random weights of ``config``'s architecture, sharded like the real checkpoint (bfloat16)."""
    import tempfile

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**config)).to(torch.bfloat16)
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp, max_shard_size="60KB")
        for path in sorted(Path(tmp).iterdir()):
            if path.suffix == ".safetensors" or path.name == "model.safetensors.index.json":
                repo.add(path.name, path.read_bytes(), lfs=path.suffix == ".safetensors")


def llama3(root: Path) -> Repo:
    """meta-llama/Meta-Llama-3-8B-Instruct: its config keys with small sizes, a small BPE with its specials."""
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    tok = _with_bos(_bpe(_texts(), specials, 384), "<|begin_of_text|>")
    vocab = tok.get_vocab_size()
    bos, eos, eot = (tok.token_to_id(t) for t in ("<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"))
    config = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "attention_bias": False,
              "attention_dropout": 0.0, "bos_token_id": bos, "eos_token_id": eot, "hidden_act": "silu",
              "hidden_size": 32, "initializer_range": 0.02, "intermediate_size": 64, "max_position_embeddings": 8192,
              "num_attention_heads": 4, "num_hidden_layers": 2, "num_key_value_heads": 2, "pretraining_tp": 1,
              "rms_norm_eps": 1e-05, "rope_scaling": None, "rope_theta": 500000.0, "tie_word_embeddings": False,
              "torch_dtype": "bfloat16", "use_cache": True, "vocab_size": vocab}
    repo = Repo(root, "model", LLAMA3)
    repo.add_json("config.json", config)
    repo.add_json("generation_config.json", {"bos_token_id": bos, "eos_token_id": [eos, eot], "do_sample": True,
                                             "temperature": 0.6, "top_p": 0.9})
    _weights(repo, config, seed=1)
    repo.add("tokenizer.json", tok.to_str())
    repo.add_json("tokenizer_config.json", {
        "added_tokens_decoder": {str(tok.token_to_id(t)): {"content": t, "special": True, "lstrip": False,
                                                           "rstrip": False, "normalized": False,
                                                           "single_word": False} for t in specials},
        "bos_token": "<|begin_of_text|>", "clean_up_tokenization_spaces": True, "eos_token": "<|eot_id|>",
        "model_input_names": ["input_ids", "attention_mask"], "model_max_length": 1000000000000000019884624838656,
        "tokenizer_class": "PreTrainedTokenizerFast"})
    repo.add_json("special_tokens_map.json", {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"})
    repo.add("LICENSE", "META LLAMA 3 COMMUNITY LICENSE AGREEMENT (fixture stand-in)\n")
    repo.add("README.md", "---\nlanguage:\n- en\nextra_gated_prompt: accept the license\n---\n# fixture\n")
    repo.add("USE_POLICY.md", "Meta Llama 3 Acceptable Use Policy (fixture stand-in)\n")
    # The original (non-transformers) checkpoint: the real one is 16 GB that loading never reads.
    repo.add_json("original/params.json", {"dim": 32, "n_layers": 2})
    repo.add("original/consolidated.00.pth", random.Random(2).randbytes(4096), lfs=True)
    repo.add("original/tokenizer.model", random.Random(3).randbytes(2048), lfs=True)
    return repo


def aya23(root: Path) -> Repo:
    """CohereForAI/aya-23-8B: Cohere's config keys with small sizes, its tokenizer's special tokens."""
    specials = ["<PAD>", "<UNK>", "<CLS>", "<SEP>", "<MASK_TOKEN>", "<BOS_TOKEN>", "<EOS_TOKEN>", "<EOP_TOKEN>",
                "<|START_OF_TURN_TOKEN|>", "<|END_OF_TURN_TOKEN|>", "<|USER_TOKEN|>", "<|CHATBOT_TOKEN|>"]
    tok = _with_bos(_bpe(_texts(), specials, 400), "<BOS_TOKEN>")
    vocab = tok.get_vocab_size()
    pad, bos, eot = (tok.token_to_id(t) for t in ("<PAD>", "<BOS_TOKEN>", "<|END_OF_TURN_TOKEN|>"))
    config = {"model_type": "cohere", "architectures": ["CohereForCausalLM"], "attention_bias": False,
              "attention_dropout": 0.0, "bos_token_id": bos, "eos_token_id": eot, "hidden_act": "silu",
              "hidden_size": 32, "initializer_range": 0.02, "intermediate_size": 64, "layer_norm_eps": 1e-05,
              "logit_scale": 0.0625, "max_position_embeddings": 8192, "num_attention_heads": 4,
              "num_hidden_layers": 2, "num_key_value_heads": 2, "pad_token_id": pad, "rope_theta": 10000,
              "tie_word_embeddings": True, "torch_dtype": "float16", "use_cache": True, "use_qk_norm": False,
              "vocab_size": vocab}
    repo = Repo(root, "model", AYA23)
    repo.add_json("config.json", config)
    repo.add_json("generation_config.json", {"bos_token_id": bos, "eos_token_id": eot, "pad_token_id": pad})
    _weights(repo, config, seed=4)
    repo.add("tokenizer.json", tok.to_str())
    repo.add_json("tokenizer_config.json", {
        "add_bos_token": True, "add_eos_token": False, "bos_token": "<BOS_TOKEN>", "clean_up_tokenization_spaces":
        False, "eos_token": "<|END_OF_TURN_TOKEN|>", "pad_token": "<PAD>", "unk_token": None, "legacy": True,
        "model_max_length": 1000000000000000019884624838656, "sp_model_kwargs": {}, "spaces_between_special_tokens":
        False, "tokenizer_class": "CohereTokenizer", "use_default_system_prompt": False})
    repo.add_json("special_tokens_map.json", {"bos_token": "<BOS_TOKEN>", "eos_token": "<|END_OF_TURN_TOKEN|>",
                                              "pad_token": "<PAD>"})
    repo.add("README.md", "---\nlicense: cc-by-nc-4.0\n---\n# fixture\n")
    return repo


# ---------------------------------------------------------------- datasets


def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def _parquet(rows: list[dict]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), sink)
    return sink.getvalue()


def _card(configs: dict[str, dict[str, str]]) -> str:
    """A dataset card whose YAML ``configs:`` maps each config's splits to files, as hub cards do."""
    lines = ["---", "configs:"]
    for name, splits in configs.items():
        lines += [f"- config_name: {name}", "  data_files:"]
        lines += [f"  - split: {split}\n    path: {path}" for split, path in splits.items()]
    return "\n".join(lines + ["---", "# fixture", ""])


def c4(root: Path, languages=LANGUAGES, documents: int = 6) -> Repo:
    """allenai/c4's multilingual files: two train shards and one validation shard per language."""
    repo = Repo(root, "dataset", MC4)
    for lang in languages:
        for split, infix in (("train", ""), ("validation", "-validation")):
            for shard in range(2 if split == "train" else 1):
                rng = random.Random(f"{lang}-{split}-{shard}")
                rows = [{"text": document(lang, rng), "timestamp": "2020-01-01T00:00:00Z",
                         "url": f"https://example.org/{lang}/{split}/{shard}/{i}"} for i in range(documents)]
                name = f"multilingual/c4-{lang}{infix}.tfrecord-{shard:05d}-of-{MC4_SHARDS[split]:05d}.json.gz"
                repo.add(name, gzip.compress(_jsonl(rows).encode("utf-8"), mtime=0), lfs=True)
    repo.add("README.md", "---\npretty_name: C4\n---\n# fixture\n")
    return repo


def _mc_rows(lang: str, split: str, n: int, options: int) -> list[dict]:
    rng = random.Random(f"{lang}-{split}-mc")
    letters = "ABCDE"[:options]
    return [{"id": f"{lang}-{split}-{i}", "instruction": sentence(lang, rng) + "?",
             **{f"option_{c.lower()}": sentence(lang, rng, 3) for c in letters},
             "answer": rng.choice(letters)} for i in range(n)]


def m_arc(root: Path, languages=("ar", "de", "es", "ru", "zh"), n: int = 4) -> Repo:
    repo = Repo(root, "dataset", "alexandrainst/m_arc")
    configs = {}
    for lang in languages:
        configs[lang] = {}
        for split in ("train", "validation", "test"):
            repo.add(f"data/{lang}/{split}.jsonl", _jsonl(_mc_rows(lang, split, n, 5)), lfs=True)
            configs[lang][split] = f"data/{lang}/{split}.jsonl"
    repo.add("README.md", _card(configs))
    return repo


def m_mmlu(root: Path, languages=("ar", "de", "en", "es", "ru", "zh"), n: int = 4) -> Repo:
    repo = Repo(root, "dataset", "alexandrainst/m_mmlu")
    configs = {}
    for lang in languages:
        configs[lang] = {}
        for split in ("train", "test"):
            repo.add(f"data/{lang}/{split}.jsonl", _jsonl(_mc_rows(lang, split, n, 4)), lfs=True)
            configs[lang][split] = f"data/{lang}/{split}.jsonl"
    repo.add("README.md", _card(configs))
    return repo


def _hellaswag_rows(lang: str, split: str, n: int) -> list[dict]:
    rng = random.Random(f"{lang}-{split}-hs")
    rows = []
    for i in range(n):
        ctx_a, ctx_b = sentence(lang, rng, 6), sentence(lang, rng, 3)
        rows.append({"ind": i, "activity_label": sentence(lang, rng, 2), "ctx_a": ctx_a, "ctx_b": ctx_b,
                     "ctx": f"{ctx_a} {ctx_b}", "endings": [sentence(lang, rng, 4) for _ in range(4)],
                     "source_id": f"fixture~{i}", "split": split, "split_type": "indomain",
                     "label": str(rng.randrange(4))})
    return rows


def m_hellaswag(root: Path, languages=("ar", "de", "es", "ru"), n: int = 4) -> Repo:
    repo = Repo(root, "dataset", "alexandrainst/m_hellaswag")
    configs = {}
    for lang in languages:
        repo.add(f"data/{lang}/val.jsonl", _jsonl(_hellaswag_rows(lang, "val", n)), lfs=True)
        configs[lang] = {"val": f"data/{lang}/val.jsonl"}
    repo.add("README.md", _card(configs))
    return repo


def hellaswag(root: Path, n: int = 4) -> Repo:
    repo = Repo(root, "dataset", "Rowan/hellaswag")
    configs = {"default": {}}
    for split in ("train", "validation", "test"):
        path = f"data/{split}-00000-of-00001.parquet"
        repo.add(path, _parquet(_hellaswag_rows("en", split, n)), lfs=True)
        configs["default"][split] = path
    repo.add("README.md", _card(configs))
    return repo


def ai2_arc(root: Path, n: int = 4) -> Repo:
    repo = Repo(root, "dataset", "allenai/ai2_arc")
    configs = {}
    for name in ("ARC-Challenge", "ARC-Easy"):
        configs[name] = {}
        for split in ("train", "test", "validation"):
            rng = random.Random(f"{name}-{split}")
            rows = [{"id": f"{name}-{split}-{i}", "question": sentence("en", rng) + "?",
                     "choices": {"text": [sentence("en", rng, 3) for _ in range(4)], "label": list("ABCD")},
                     "answerKey": rng.choice("ABCD")} for i in range(n)]
            path = f"{name}/{split}-00000-of-00001.parquet"
            repo.add(path, _parquet(rows), lfs=True)
            configs[name][split] = path
    repo.add("README.md", _card(configs))
    return repo


def belebele(root: Path, languages=LANGUAGES, passages: int = 3) -> Repo:
    """facebook/belebele: one test file per FLORES code, two questions per passage, aligned across languages."""
    repo = Repo(root, "dataset", "facebook/belebele")
    configs = {}
    for lang in languages:
        code = BELEBELE_CODES[lang]
        rng = random.Random(f"{lang}-belebele")
        rows = []
        for p in range(passages):
            passage = " ".join(sentence(lang, rng, 10) for _ in range(3))
            for q in (1, 2):
                rows.append({"link": f"https://example.org/flores/{p}", "question_number": q,
                             "flores_passage": passage, "question": sentence(lang, rng, 5) + "?",
                             **{f"mc_answer{k}": sentence(lang, rng, 2) for k in range(1, 5)},
                             "correct_answer_num": str(rng.randint(1, 4)), "dialect": code, "ds": "2023-05-03"})
        repo.add(f"data/{code}.jsonl", _jsonl(rows), lfs=True)
        configs[code] = {"test": f"data/{code}.jsonl"}
    repo.add("README.md", _card(configs))
    return repo


def mkqa_release(path: Path, n: int = 4) -> Path:
    """The MKQA release file (``mkqa.jsonl.gz``): queries and typed answers per language."""
    keys = {"ar": "ar", "de": "de", "en": "en", "es": "es", "ru": "ru", "zh": "zh_cn"}
    rng = random.Random("mkqa")
    rows = []
    for i in range(n):
        answer = {key: [{"type": "entity", "text": sentence(lang, rng, 1), "aliases": []}]
                  for lang, key in keys.items()}
        rows.append({"example_id": i, "query": sentence("en", rng), "answers": answer,
                     "queries": {key: sentence(lang, rng) + "?" for lang, key in keys.items()}})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(_jsonl(rows).encode("utf-8"), mtime=0))
    return path


BUILDERS = [llama3, aya23, c4, m_arc, m_mmlu, m_hellaswag, hellaswag, ai2_arc, belebele]


def build_all(root: Path) -> dict[str, str]:
    """Every repository the paper's grid reads, under ``root``; returns ``{repo id: commit}``."""
    commits = {}
    for build in BUILDERS:
        repo = build(root)
        commits[str(repo.path.relative_to(root))] = head_commit(repo.commit())
    return commits
