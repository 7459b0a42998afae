"""Evaluation throughput: the shared-context backend vs lm-eval's HFLM, and one load per variant.

Everything is local and synthetic (no hub): a byte-level BPE tokenizer trained on seeded
pseudo-words, a random Llama saved as a model directory (the "exported model" both sides
load), and items written in the hub datasets' own columns, so lm-eval's real task configs
(prompts, choices, metrics) run on them through ``--task-data``:

- HellaSwag (``hellaswag``): activity label + context, four endings of 12-25 words;
- ARC (``arc_easy``/``arc_challenge``): a question, four or five answers of 1-6 words;
- Belebele (``belebele_eng_Latn``): passage, question, four lettered answers;
- MMLU (``m_mmlu_en``, Okapi): instruction and four lettered options;
- MKQA (``mkqa_en``): short questions, greedy generation;
- perplexity: held-out text (``text:DIR``).

1. Per task family, in one process: wall time of ``evaluate_tasks`` with ``--backend hflm``
   (lm-eval's HFLM, fixed batch) and the default shared backend (token budget), after one
   warm-up so lm-eval's task index is built before either is timed; best of two alternating
   runs each; the time spent inside ``loglikelihood`` (scoring) besides the wall time, and
   that scoring's process CPU time (steadier than wall time on a loaded machine); the tokens
   the shared backend runs (padding included) over those HFLM runs (its own one-token sharing
   counted), without and with HFLM's batch padding; the records must be equal.
2. One variant (a magnitude 2:4 checkpoint of the model), six benchmarks: one
   ``langprune evaluate variant`` process vs six ``langprune evaluate perplexity|tasks``
   processes, loads and interpreter start included; the metrics files must be equal.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_eval.py                  # CPU, small model
    .venv/bin/python benchmarks/bench_eval.py --model-dir real/results/models/gemma3-270m --skip-variant  # a real model
    .venv/bin/python benchmarks/bench_eval.py --shape llama3-8b --device cuda --dtype bfloat16  # on a GPU

Targets: shared/hflm <= 0.6 on HellaSwag and ARC shapes, <= 1.0 on the lettered shapes,
one variant process <= 0.6 of six processes.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHAPES = {
    "small": dict(hidden=512, layers=4, heads=8, kv_heads=2, intermediate=1408),
    "tiny": dict(hidden=64, layers=2, heads=4, kv_heads=2, intermediate=128),
    "llama3-8b": dict(hidden=4096, layers=32, heads=32, kv_heads=8, intermediate=14336),
}
FAMILIES = ("hellaswag", "arc", "belebele", "mmlu")
SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "an", "el", "is", "or", "um", "bra", "ste",
             "gri", "pla", "tro", "que", "dan", "fel", "mor", "sin"]


class Words:
    """Seeded pseudo-words with a Zipf-like frequency, so BPE learns word pieces as on real text."""

    def __init__(self, seed: int = 0, size: int = 3000):
        rng = random.Random(seed)
        self.vocab = ["".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 4))) for _ in range(size)]
        self.weights = [1 / (rank + 1) for rank in range(size)]
        self.rng = random.Random(seed + 1)

    def __call__(self, low: int, high: int | None = None) -> str:
        n = low if high is None else self.rng.randint(low, high)
        return " ".join(self.rng.choices(self.vocab, self.weights, k=n))

    def sentence(self, low: int, high: int) -> str:
        return self(low, high).capitalize() + "."


def build_assets(root: Path, shape: str, dtype: str, device: str, seed: int = 0) -> Path:
    """Tokenizer + random Llama of ``shape``, saved together as one model directory."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

    words = Words(seed)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=4096, special_tokens=["<s>", "</s>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([words.sentence(5, 30) for _ in range(20000)], trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    out = root / "model"
    fast.save_pretrained(out)
    s = SHAPES[shape]
    torch.manual_seed(seed)
    config = AutoConfig.for_model("llama", vocab_size=len(fast), hidden_size=s["hidden"], num_hidden_layers=s["layers"],
                                  num_attention_heads=s["heads"], num_key_value_heads=s["kv_heads"],
                                  intermediate_size=s["intermediate"], max_position_embeddings=2048,
                                  bos_token_id=0, eos_token_id=1, pad_token_id=2)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    model.save_pretrained(out)
    return out


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def write_task_data(root: Path, items: int, seed: int = 0) -> Path:
    """Items in the hub datasets' columns under ``root/tasks`` (the --task-data DIR) and text for perplexity."""
    w, rng = Words(seed + 7), random.Random(seed)
    data = root / "tasks"
    _jsonl(data / "hellaswag" / "validation.jsonl", [
        {"ind": i, "activity_label": w(1, 3).capitalize(), "ctx_a": w.sentence(20, 35), "ctx_b": w(6, 12),
         "endings": [w(12, 25) + "." for _ in range(4)], "source_id": str(i), "split": "val",
         "split_type": "indomain", "label": str(rng.randrange(4))} for i in range(items)])
    for task in ("arc_easy", "arc_challenge"):
        rows = []
        for i in range(items // 2):
            labels = list("ABCDE"[:rng.choice((4, 4, 4, 5))])
            rows.append({"id": f"{task}-{i}", "question": w(12, 30).capitalize() + "?", "answerKey": rng.choice(labels),
                         "choices": {"text": [w(1, 6) for _ in labels], "label": labels}})
        _jsonl(data / f"{task}.jsonl", rows)
    _jsonl(data / "belebele_eng_Latn.jsonl", [
        {"flores_passage": " ".join(w.sentence(10, 25) for _ in range(4)), "question": w(8, 15).capitalize() + "?",
         **{f"mc_answer{k}": w(2, 6) for k in range(1, 5)}, "correct_answer_num": str(rng.randint(1, 4))}
        for _ in range(items)])
    _jsonl(data / "m_mmlu_en.jsonl", [
        {"id": str(i), "instruction": w(15, 40).capitalize() + "?", **{f"option_{x}": w(1, 6) for x in "abcd"},
         "answer": rng.choice("ABCD")} for i in range(items)])
    _jsonl(data / "mkqa.jsonl", [
        {"example_id": i, "query": q, "queries": {"en": q},
         "answers": {"en": [{"type": "entity", "text": w(1, 2), "aliases": []}]}}
        for i, q in enumerate(w(5, 10).capitalize() + "?" for _ in range(max(4, items // 10)))])
    (root / "text").mkdir(exist_ok=True)
    (root / "text" / "en.txt").write_text("\n\n".join(w.sentence(40, 80) for _ in range(60)) + "\n", encoding="utf-8")
    return data


SCORING = {"s": 0.0, "cpu_s": 0.0}
LAST_LM = {}


def _keep_lm() -> None:
    """Remember the shared backend's LM of the last evaluation, for its token counts."""
    from langprune.evaluate import harness, sharedlm

    real = sharedlm.make_lm
    if getattr(real, "kept", False):
        return

    def make_lm(*args, **kwargs):
        LAST_LM["lm"] = real(*args, **kwargs)
        return LAST_LM["lm"]

    make_lm.kept = True
    sharedlm.make_lm = make_lm
    harness.make_lm = make_lm  # harness binds make_lm when imported


def _timed_scoring() -> None:
    """Accumulate the time spent in lm-eval's loglikelihood (both backends inherit HFLM's entry point)."""
    from lm_eval.models.huggingface import HFLM

    real = HFLM.loglikelihood
    if getattr(real, "timed", False):
        return

    def loglikelihood(self, *args, **kwargs):
        start, cpu = time.perf_counter(), time.process_time()
        try:
            return real(self, *args, **kwargs)
        finally:
            SCORING["s"] += time.perf_counter() - start
            SCORING["cpu_s"] += time.process_time() - cpu

    loglikelihood.timed = True
    HFLM.loglikelihood = loglikelihood


def time_family(model: str, family: str, data: Path, out: Path, backend: str, batch_size: int, device: str,
                dtype: str | None) -> tuple[float, float, float, list]:
    """Wall seconds of one `evaluate tasks` call, wall and CPU seconds of it spent scoring, and its records."""
    from langprune.evaluate.harness import evaluate_tasks

    _timed_scoring()
    _keep_lm()
    SCORING.update(s=0.0, cpu_s=0.0)
    start = time.perf_counter()
    doc = evaluate_tasks(model, [family], ["en"], str(out), task_data=[str(data)], batch_size=batch_size,
                         device=device, dtype=dtype, backend=backend)
    return time.perf_counter() - start, SCORING["s"], SCORING["cpu_s"], doc["records"]


def family_table(model: str, data: Path, root: Path, batch_size: int, device: str, dtype: str | None,
                 families=FAMILIES, repeats: int = 2) -> list[dict]:
    time_family(model, "mmlu", data, root / "warmup.json", "shared", batch_size, device, dtype)  # task index
    rows = []
    for family in families:
        seconds, scoring, cpu = ({"hflm": [], "shared": []} for _ in range(3))
        records = {}
        for backend in ("hflm", "shared", "shared", "hflm")[:2 * repeats]:  # alternating, best of `repeats`
            wall, spent, spent_cpu, records[backend] = time_family(
                model, family, data, root / f"{family}-{backend}.json", backend, batch_size, device, dtype)
            seconds[backend].append(wall)
            scoring[backend].append(spent)
            cpu[backend].append(spent_cpu)
            if backend == "shared":
                stats = LAST_LM["lm"].stats
        seconds, scoring, cpu = ({k: min(v) for k, v in d.items()} for d in (seconds, scoring, cpu))
        rows.append({"family": family, "items": sum(r["n"] for r in records["shared"]),
                     "token_ratio": stats["padded_tokens"] / stats["hflm_tokens"],
                     "padded_token_ratio": stats["padded_tokens"] / stats["hflm_padded_tokens"],
                     "hflm_wall_s": seconds["hflm"], "shared_wall_s": seconds["shared"],
                     "wall_ratio": seconds["shared"] / seconds["hflm"],
                     "hflm_scoring_s": scoring["hflm"], "shared_scoring_s": scoring["shared"],
                     "scoring_ratio": scoring["shared"] / scoring["hflm"],
                     "scoring_cpu_ratio": cpu["shared"] / cpu["hflm"],
                     "identical": records["shared"] == records["hflm"]})
    return rows


def benchmark_runs(root: Path, data: Path, limit: int, batch_size: int) -> dict[str, str]:
    """The six benchmarks of one variant as `langprune evaluate` arguments (as the workflow writes them)."""
    runs = {"perplexity": f"perplexity --source text:{root / 'text'} --languages en --seqlen 256 --max-tokens 4096"}
    for family in (*FAMILIES, "mkqa"):
        runs[family] = (f"tasks --tasks {family} --languages en --task-data {data} --limit {limit} "
                        f"--batch-size {batch_size}")
    return {name: f"{run} --out {name}.json" for name, run in runs.items()}


def _langprune(args: list[str]) -> float:
    start = time.perf_counter()
    entry = "import sys; from langprune.cli import main; sys.exit(main(sys.argv[1:]))"
    subprocess.run([sys.executable, "-c", entry, *args], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def variant_table(model: str, checkpoint: Path, root: Path, data: Path, limit: int, batch_size: int,
                  device: str) -> dict:
    runs = benchmark_runs(root, data, limit, batch_size)
    common = ["--model", model, "--checkpoint", str(checkpoint), "--device", device]
    separate = 0.0
    for name, run in runs.items():
        words = shlex.split(run)
        words[words.index("--out") + 1] = str(root / "separate" / f"{name}.json")
        separate += _langprune(["evaluate", *words, *common])
    argv = ["evaluate", "variant", *common, "--out-dir", str(root / "variant")]
    for run in runs.values():
        argv += ["--run", run]
    together = _langprune(argv)
    identical = all(json.loads((root / "variant" / f"{n}.json").read_text())["records"]
                    == json.loads((root / "separate" / f"{n}.json").read_text())["records"] for n in runs)
    return {"benchmarks": len(runs), "six_processes_s": separate, "one_process_s": together,
            "ratio": together / separate, "identical": identical}


def prune_checkpoint(model: str, out: Path) -> Path:
    from langprune.cli import main

    if main(["prune", "--model", model, "--method", "magnitude", "--structure", "2:4", "--out", str(out)]) != 0:
        raise SystemExit("pruning the benchmark model failed")
    return out


def _print_table(rows: list[dict]) -> None:
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |")
    print("|" + "|".join("---" for _ in keys) + "|")
    for row in rows:
        print("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row.values()) + " |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="small")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--items", type=int, default=120, help="items per task family (per-family timing)")
    parser.add_argument("--variant-limit", type=int, default=40, help="--limit per task in the variant timing")
    parser.add_argument("--batch-size", type=int, default=8, help="HFLM's requests per batch (the workflow default)")
    parser.add_argument("--skip-variant", action="store_true")
    parser.add_argument("--families", default=",".join(FAMILIES), help="task families to time")
    parser.add_argument("--repeats", type=int, choices=(1, 2), default=2, help="timings per backend (best kept)")
    parser.add_argument("--json", help="also write the tables here")
    parser.add_argument("--model-dir", help="time this model directory (weights + tokenizer, read only) instead of "
                        "a random --shape model, e.g. a real large-vocabulary Gemma 3")
    args = parser.parse_args(argv)
    if args.model_dir and not (Path(args.model_dir) / "config.json").is_file():
        parser.error(f"--model-dir {args.model_dir}: no config.json there; give a model directory")
    with tempfile.TemporaryDirectory(prefix="bench_eval.") as tmp:
        root = Path(tmp)
        model = args.model_dir or str(build_assets(root, args.shape, args.dtype, args.device))
        data = write_task_data(root, args.items)
        print(f"# model {args.model_dir or 'shape ' + args.shape}, {args.dtype} on {args.device}, torch threads "
              f"{__import__('torch').get_num_threads()}, {args.items} items per family")
        families = family_table(model, data, root, args.batch_size, args.device, args.dtype,
                                args.families.split(","), args.repeats)
        _print_table(families)
        result = {"families": families}
        if not args.skip_variant:
            checkpoint = prune_checkpoint(model, root / "ckpt")
            variant = variant_table(model, checkpoint, root, data, args.variant_limit, args.batch_size, args.device)
            print()
            _print_table([variant])
            result["variant"] = variant
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
