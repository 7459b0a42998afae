"""What checkpoint verification and per-sequence Hessian sums cost, next to the work they guard.

Table 1: verifying a SparseGPT-style checkpoint (SHA-256 of masks and values, kept counts,
each mask's sparsity against the manifest: per weight when unstructured, per group of M for
N:M) against loading the pruned model (base load + checkpoint applied, verification included),
and what the sparsity check alone adds.
Table 2: summing the Hessian one sequence at a time (bit-identical for any batch size)
against one matmul over the whole batch.

Run: `.venv/bin/python benchmarks/bench_verify.py [--hidden 1024 --layers 8]`; record the
tables in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

import langprune.checkpoint as ckpt_module
from langprune.bitmasks import PackedMasks
from langprune.checkpoint import (
    base_weights_hash,
    checkpoint_bytes,
    kept_values,
    load_pruned_model,
    verify_checkpoint,
    write_checkpoint,
)
from langprune.prune.selection import mask_from_scores
from langprune.prune.stats import HESSIAN, InputAccumulator
from langprune.prune.structure import parse_structure


def build_checkpoint(root: Path, hidden: int, layers: int, structure: str = "unstructured"):
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=32000, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=16,
                         num_key_value_heads=4, intermediate_size=int(hidden * 2.75), max_position_embeddings=512)
    model = LlamaForCausalLM(config)
    model.save_pretrained(root / "model")
    parsed = parse_structure(structure, 0.5)
    masks = PackedMasks()
    for name, param in model.named_parameters():
        if ".layers." in name and name.endswith("proj.weight"):
            masks.add(name, mask_from_scores(torch.rand(param.shape), parsed))
    base = base_weights_hash(str(root / "model"))
    manifest = {"base": {"model": str(root / "model"), "revision": None, "weights_sha256": base["sha256"],
                         "dtype": "float32"},
                "method": "sparsegpt", "structure": parsed.label, "sparsity": parsed.sparsity, "seed": 0}
    write_checkpoint(root / "ckpt", masks, kept_values(model, masks), manifest)
    return sum(p.numel() for p in model.parameters())


def time_it(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=8)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    for structure in ("unstructured", "2:4"):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            params = build_checkpoint(root, args.hidden, args.layers, structure)
            sizes = checkpoint_bytes(root / "ckpt")

            def verify():
                ckpt_module._VERIFIED.clear()
                verify_checkpoint(root / "ckpt")

            def verify_without_sparsity():
                real = ckpt_module.target_sparsities
                ckpt_module.target_sparsities = lambda manifest: {}
                try:
                    verify()
                finally:
                    ckpt_module.target_sparsities = real

            def load():
                ckpt_module._VERIFIED.clear()
                load_pruned_model(str(root / "model"), root / "ckpt")

            verify_s, bare_s, load_s = time_it(verify), time_it(verify_without_sparsity), time_it(load)
            print(f"Table 1 ({structure}): model {params / 1e6:.0f} M parameters (fp32), checkpoint "
                  f"{sum(sizes.values()) / 1e6:.0f} MB "
                  f"({', '.join(f'{k} {v / 1e6:.0f} MB' for k, v in sizes.items())})")
            print("| step | seconds (best of 3) |\n|---|---:|")
            print(f"| verify checkpoint (hashes, kept counts, sparsity, values) | {verify_s:.2f} |")
            print(f"| the same without the sparsity check | {bare_s:.2f} |")
            print(f"| load_pruned_model (load base, verify, apply) | {load_s:.2f} |")
            print(f"| verify / load | {verify_s / load_s:.2f} |")
            print(f"| sparsity check / load | {(verify_s - bare_s) / load_s:.3f} |\n")

    x = torch.randn(8, 512, args.hidden)
    per_sequence = InputAccumulator(args.hidden, frozenset({HESSIAN}), torch.device("cpu"))
    batched = torch.zeros(args.hidden, args.hidden)
    seq_s = time_it(lambda: per_sequence.update(x))
    flat = x.reshape(-1, args.hidden)
    batch_s = time_it(lambda: batched.addmm_(flat.t(), flat))
    print(f"Table 2: Hessian accumulation of 8 x 512 tokens, {args.hidden} features, 1 thread")
    print("| accumulation | seconds (best of 3) |\n|---|---:|")
    print(f"| one matmul over the batch (before) | {batch_s:.3f} |")
    print(f"| one sequence at a time (now) | {seq_s:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
