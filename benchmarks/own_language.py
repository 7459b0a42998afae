"""The paper's question asked again, per method, on a built toy (in one process, no workflow).

For each method variant (e.g. wanda, ria, dsnot, wanda+owl) and each single-language
calibration shard, prune the toy model in memory, score perplexity on every evaluation
language, then print per variant: in how many languages calibrating on that language gives
the lowest perplexity, and the mean gap (own-language perplexity minus the best other
calibration's; negative = own language better). The workflow computes the same numbers in
``target_best.csv`` (``mean_gap_to_best_other``); this script exists because a full workflow
run of every variant did not fit the loaded shared machine.

    python benchmarks/own_language.py --workdir DIR      # DIR: a workflow dir with the toy built
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch
from tabulate import tabulate

from langprune import registry
from langprune.data.shards import read_calibration
from langprune.data.sources import parse_source
from langprune.evaluate.perplexity import eval_text, make_windows, window_nll
from langprune.models import load_model, load_tokenizer
from langprune.prune.allocation import owl_sparsities
from langprune.prune.dense_pass import layer_outlier_ratios
from langprune.prune.engine import prune_model
from langprune.prune.methods import get_method
from langprune.prune.structure import unstructured


def perplexities(model, windows: dict) -> dict[str, float]:
    out = {}
    for lang, win in windows.items():
        nll, tokens = math.fsum(window_nll(model, win.input_ids, batch_size=8)), sum(len(w) - 1 for w in win.input_ids)
        out[lang] = math.exp(nll / tokens)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--variants", default="wanda,sparsegpt,ria,dsnot,wanda+owl,sparsegpt+owl,ria+owl")
    parser.add_argument("--languages", default="ar,de,en,es,ru,sw,zh")
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    root = args.workdir
    model_dir = str(root / "results/toy/model")
    languages = args.languages.split(",")
    tokenizer = load_tokenizer(model_dir)
    source = parse_source(f"text:{root / 'results/toy/text/eval'}")
    windows = {lang: make_windows(eval_text(source, lang, tokenizer, 8192), tokenizer, 128, 8192, lang)
               for lang in languages}
    rows = []
    for variant in args.variants.split(","):
        method, _, allocation = variant.partition("+")
        grid = {}
        started = time.perf_counter()
        for calib in languages:
            ids, _ = read_calibration(root / f"results/shards/toy/{calib}/seed{args.seed}.safetensors")
            model = load_model(model_dir, dtype="float32").eval()
            structure = unstructured(args.sparsity)
            if allocation == "owl":
                owl = registry.ALLOCATIONS["owl"].bind()  # published M and lambda
                ratios, _ = layer_outlier_ratios(model, ids, M=owl["M"], batch_size=8)
                structure = [unstructured(s) for s in owl_sparsities(ratios, args.sparsity, owl["lambda"])]
            prune_model(model, get_method(method), structure, ids, batch_size=8, measure_error=False, progress=False)
            grid[calib] = perplexities(model, windows)
        own_best, gaps = 0, []
        for lang in languages:
            best_other = min(grid[c][lang] for c in languages if c != lang)
            own_best += grid[lang][lang] < best_other
            gaps.append(grid[lang][lang] - best_other)
        rows.append({"method": variant, "own_language_best": f"{own_best} of {len(languages)}",
                     "mean_gap_ppl": sum(gaps) / len(gaps), "seconds": time.perf_counter() - started})
        print(f"{variant}: {rows[-1]}", file=sys.stderr, flush=True)
    print(tabulate(rows, headers="keys", floatfmt=".2f"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
