"""GPTQ benchmarks: wall time against SparseGPT on the same layers, and agreement with llm-compressor.

1. Each linear shape of Gemma 3 270M (``--shapes`` for others), one thread, random weights and
   the Hessian of correlated random inputs: SparseGPT (50% unstructured, 2:4) against GPTQ
   (4-bit g128, with act-order, 3-bit g128, 4-bit per-channel). Median of ``--repeats`` runs,
   methods interleaved so load from other processes hits them alike.
2. llm-compressor's GPTQ (PyPI ``llmcompressor``, never a langprune requirement: run this script
   from a separate environment that has it, with ``PYTHONPATH=src``) on the same weight and
   Hessian: the share of identical codes and its wall time. Skipped, with a message, without it.

    .venv/bin/python benchmarks/bench_gptq.py
    /path/to/scratch-venv/bin/python benchmarks/bench_gptq.py --llmcompressor-only   # with PYTHONPATH=src
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from langprune.prune.gptq import GptqSettings, gptq_quantize
from langprune.prune.methods import sparsegpt
from langprune.prune.stats import HESSIAN, SUMSQ, InputAccumulator, LinearStats
from langprune.prune.structure import n_of_m, unstructured

# Gemma 3 270M: hidden 640, 4 query heads and 1 key/value head of 256, MLP 2048 (rows = outputs, columns = inputs).
GEMMA_270M = {"q_proj": (1024, 640), "k_proj/v_proj": (256, 640), "o_proj": (640, 1024),
              "gate_proj/up_proj": (2048, 640), "down_proj": (640, 2048)}
GPTQ_SETTINGS = {"gptq w4 g128": GptqSettings(4, 128), "gptq w4 g128 act-order": GptqSettings(4, 128, act_order=True),
                 "gptq w3 g128": GptqSettings(3, 128), "gptq w4 per-channel": GptqSettings(4, 0)}


def random_layer(rows: int, columns: int, seed: int = 0, tokens: int = 2048) -> tuple[torch.Tensor, torch.Tensor]:
    """A weight and the engine's Hessian of correlated inputs with uneven feature scales."""
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(rows, columns, generator=g) * 0.02
    mixing = torch.randn(columns, columns, generator=g) / columns ** 0.5 + torch.eye(columns)
    inputs = torch.randn(tokens // 256, 256, columns, generator=g) @ mixing * torch.rand(columns, generator=g).add(0.1)
    acc = InputAccumulator(columns, frozenset({SUMSQ, HESSIAN}), inputs.device)
    acc.update(inputs)
    return weight, acc.result("layer").hessian


def _median_seconds(run, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def bench_against_sparsegpt(shapes: dict[str, tuple[int, int]], repeats: int) -> None:
    print(f"## GPTQ vs SparseGPT, seconds per linear (median of {repeats}, 1 thread)\n")
    columns = ["sparsegpt 50%", "sparsegpt 2:4", *GPTQ_SETTINGS]
    print("| linear (rows x columns) | " + " | ".join(columns) + " | slowest GPTQ / SparseGPT 50% |")
    print("|---" * (len(columns) + 2) + "|")
    for label, (rows, cols) in shapes.items():
        weight, hessian = random_layer(rows, cols)
        stats = LinearStats(label, 1, sumsq=torch.diag(hessian), hessian=hessian)
        runs = {"sparsegpt 50%": lambda: sparsegpt(weight, stats, unstructured(0.5)),
                "sparsegpt 2:4": lambda: sparsegpt(weight, stats, n_of_m(2, 4))}
        runs.update({name: (lambda s=s: gptq_quantize(weight, hessian, s)) for name, s in GPTQ_SETTINGS.items()})
        times: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(repeats):  # interleaved: a burst of load from elsewhere hits every method alike
            for name, run in runs.items():
                times[name].append(_median_seconds(run, 1))  # one timed run per round
        medians = {name: statistics.median(values) for name, values in times.items()}
        slowest = max(medians[name] for name in GPTQ_SETTINGS)
        print(f"| {label} ({rows} x {cols}) | " + " | ".join(f"{medians[c]:.3f}" for c in columns)
              + f" | {slowest / medians['sparsegpt 50%']:.2f} |")
    print()


def bench_llmcompressor(rows: int, cols: int, repeats: int) -> None:
    """llm-compressor fixes every group's grid from the original weight (its observer), as our static groups do."""
    print("## llm-compressor's GPTQ on the same layer\n")
    try:
        from compressed_tensors.quantization import QuantizationArgs  # noqa: PLC0415 - optional comparison
        from compressed_tensors.quantization.lifecycle.forward import quantize  # noqa: PLC0415
        from llmcompressor.modifiers.gptq.gptq_quantize import quantize_weight  # noqa: PLC0415
        from llmcompressor.observers import Observer  # noqa: PLC0415
    except ImportError as exc:
        print(f"SKIPPED: llm-compressor is not installed in this environment ({exc}). It is not a langprune "
              f"requirement: install it in a separate venv beside the pins and run this script from there.\n")
        return
    weight, hessian = random_layer(rows, cols)

    def theirs(settings: GptqSettings):
        args = QuantizationArgs(num_bits=settings.bits, type="int", symmetric=settings.symmetric,
                                strategy="group" if settings.group_size else "channel",
                                group_size=settings.group_size or None, observer="memoryless_minmax",
                                actorder="weight" if settings.act_order else None)
        observer = Observer.load_from_registry(args.observer, base_name="weight", args=args)
        observer(weight)
        grid = observer.get_qparams()
        quantized, _, _ = quantize_weight(weight[None].clone(), hessian[None].clone(), grid["scale"][None],
                                          grid["zero_point"][None], None, args)
        signed = quantize(quantized[0], grid["scale"], grid["zero_point"], args, dtype=torch.int8)
        return signed.to(torch.int16) + (1 << (settings.bits - 1))  # our unsigned codes

    print(f"layer {rows} x {cols}; agreement = share of identical integer codes with langprune's GPTQ, "
          f"with grids fixed before quantizing (static groups, as llm-compressor) and formed on the fly (the "
          f"reference's default)\n")
    print("| setting | agreement, static groups | agreement, groups on the fly | langprune s | llm-compressor s |")
    print("|---|---|---|---|---|")
    for name, settings in GPTQ_SETTINGS.items():
        static = GptqSettings(settings.bits, settings.group_size, settings.symmetric, settings.act_order,
                              static_groups=bool(settings.group_size))
        codes = theirs(settings)
        agreement = [float((gptq_quantize(weight, hessian, s).codes.to(torch.int16) == codes).float().mean())
                     for s in (static, settings)]
        ours_s = _median_seconds(lambda: gptq_quantize(weight, hessian, settings), repeats)
        theirs_s = _median_seconds(lambda: theirs(settings), repeats)
        print(f"| {name} | {agreement[0]:.6f} | {agreement[1]:.6f} | {ours_s:.3f} | {theirs_s:.3f} |")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--shapes", default=None, help="NAME=ROWSxCOLS,... (default: Gemma 3 270M's linears)")
    parser.add_argument("--llmcompressor-only", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    pairs = (item.split("=") for item in args.shapes.split(",")) if args.shapes else ()
    shapes = {name: tuple(int(v) for v in size.split("x")) for name, size in pairs} or GEMMA_270M
    print(f"load average at start: {' '.join(f'{v:.1f}' for v in os.getloadavg())}\n")
    if not args.llmcompressor_only:
        bench_against_sparsegpt(shapes, args.repeats)
    bench_llmcompressor(*GEMMA_270M["gate_proj/up_proj"], repeats=args.repeats)
    print(f"load average at end: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
