"""Train the toy tokenizer and the toy Llama model on the train part of the corpus.

Languages are sampled uniformly per training window (not by text size), so the model
is about equally good in all seven and perplexity differences after pruning reflect
calibration, not an imbalance in pre-training. Everything is seeded and runs a fixed
number of steps: the same inputs give the same model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from ..errors import LangpruneError
from ..io import atomic_path, check_output, json_text, marker, marker_dir_kind
from ..models import load_tokenizer

SPECIAL_TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"}
TOKENIZER_MARKER = "langprune_toy_tokenizer.json"
TRAINING_LOG = "training.json"

TOKENIZER_FORMAT = "langprune-toy-tokenizer"
MODEL_FORMAT = "langprune-toy-model"
TOKENIZER_KIND = marker_dir_kind("toy tokenizer directory", TOKENIZER_MARKER, TOKENIZER_FORMAT)
MODEL_KIND = marker_dir_kind("toy model directory", TRAINING_LOG, MODEL_FORMAT)


def read_parts(text_dir: str | Path) -> dict[str, list[str]]:
    """Language -> documents from `<text_dir>/<lang>.txt` (documents separated by blank lines)."""
    files = sorted(Path(text_dir).glob("*.txt"))
    if not files:
        raise LangpruneError(f"no <lang>.txt files in '{text_dir}': build the corpus first (langprune toy corpus)")
    return {f.stem: [d.strip() for d in f.read_text(encoding="utf-8").split("\n\n") if d.strip()] for f in files}


def train_tokenizer(text_dir: str | Path, out_dir: str | Path, *, vocab_size: int = 1024,
                    force: bool = False) -> Path:
    """Byte-level BPE (no unknown tokens in any script), saved as a transformers tokenizer."""
    if vocab_size < 1:
        raise LangpruneError(f"--vocab-size must be positive, not {vocab_size}")
    check_output(out_dir, TOKENIZER_KIND, force=force, inputs=[text_dir])
    documents = [doc for docs in read_parts(text_dir).values() for doc in docs]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS.values()),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(documents, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL_TOKENS)
    with atomic_path(out_dir, TOKENIZER_KIND, force=force) as tmp:
        fast.save_pretrained(tmp)
        (tmp / TOKENIZER_MARKER).write_text(json_text(marker(TOKENIZER_FORMAT, vocab_size=vocab_size,
                                                             text=str(text_dir))), encoding="utf-8")
    return Path(out_dir)


@dataclass(frozen=True)
class ToyModelConfig:
    """Shape and schedule of the toy model; defaults give ~1.4 M parameters."""

    hidden: int = 128
    layers: int = 4
    heads: int = 4
    kv_heads: int = 2
    intermediate: int = 384
    steps: int = 400
    batch_size: int = 16
    seqlen: int = 128
    lr: float = 3e-3
    seed: int = 0

    def check(self) -> None:
        """Shapes and schedule a Llama can be built and trained with; one error naming the flag."""
        for flag, value in [("--hidden", self.hidden), ("--layers", self.layers), ("--heads", self.heads),
                            ("--kv-heads", self.kv_heads), ("--intermediate", self.intermediate),
                            ("--steps", self.steps), ("--batch-size", self.batch_size), ("--seqlen", self.seqlen)]:
            if value < 1:
                raise LangpruneError(f"{flag} must be positive, not {value}")
        if self.seqlen < 2:
            raise LangpruneError(f"--seqlen must be at least 2, not {self.seqlen}")
        if self.hidden % self.heads:
            raise LangpruneError(f"--hidden {self.hidden} must be a multiple of --heads {self.heads}")
        if self.heads % self.kv_heads:
            raise LangpruneError(f"--heads {self.heads} must be a multiple of --kv-heads {self.kv_heads}")
        if (self.hidden // self.heads) % 2:
            raise LangpruneError(f"--hidden / --heads = {self.hidden // self.heads} must be even (rotary embeddings)")
        if not self.lr > 0:
            raise LangpruneError(f"--lr must be positive, not {self.lr}")


def token_streams(tokenizer, documents: dict[str, list[str]]):
    """Language -> one int64 tensor of all its documents, each ended by EOS."""
    streams = {}
    for lang, docs in documents.items():
        ids: list[int] = []
        for doc in docs:
            ids += tokenizer(doc, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        streams[lang] = torch.tensor(ids, dtype=torch.long)
    return streams


def sample_batch(streams, batch_size: int, seqlen: int, generator):
    """A batch of random windows, each from a uniformly drawn language."""
    langs = sorted(streams)
    rows = []
    for _ in range(batch_size):
        stream = streams[langs[int(torch.randint(len(langs), (1,), generator=generator))]]
        length = min(seqlen, len(stream) - 1)
        start = int(torch.randint(len(stream) - length, (1,), generator=generator))
        rows.append(stream[start:start + length])
    width = min(len(r) for r in rows)
    return torch.stack([r[:width] for r in rows])


def build_llama(tokenizer, cfg: ToyModelConfig):
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=cfg.hidden, num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads, num_key_value_heads=cfg.kv_heads, intermediate_size=cfg.intermediate,
        max_position_embeddings=max(512, cfg.seqlen), bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config)


def train_model(tokenizer_dir: str | Path, text_dir: str | Path, out_dir: str | Path,
                cfg: ToyModelConfig = ToyModelConfig(), *, threads: int | None = None, force: bool = False) -> dict:
    """Train with AdamW and a cosine schedule; save model + tokenizer + a training log."""
    cfg.check()
    check_output(out_dir, MODEL_KIND, force=force, inputs=[tokenizer_dir, text_dir])
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(cfg.seed)
    tokenizer = load_tokenizer(str(tokenizer_dir))
    streams = token_streams(tokenizer, read_parts(text_dir))
    model = build_llama(tokenizer, cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.1)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=0.1)
    generator = torch.Generator().manual_seed(cfg.seed)
    losses = []
    model.train()
    for _ in range(cfg.steps):
        batch = sample_batch(streams, cfg.batch_size, cfg.seqlen, generator)
        loss = model(input_ids=batch, labels=batch).loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    model.eval()
    log = {"config": cfg.__dict__, "parameters": sum(p.numel() for p in model.parameters()),
           "train_tokens": {lang: len(s) for lang, s in streams.items()},
           "final_loss": sum(losses[-20:]) / len(losses[-20:]), "loss_every_50": losses[::50]}
    with atomic_path(out_dir, MODEL_KIND, force=force) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / TRAINING_LOG).write_text(json_text(marker(MODEL_FORMAT, **log)), encoding="utf-8")
    return log
