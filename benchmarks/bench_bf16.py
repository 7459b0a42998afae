"""bfloat16 against float32 evaluation: agreement on the same checkpoints, and one job's CPU time.

The evaluation jobs are the workflow's own: a dry run of ``config/real.yaml`` (``--printshellcmds``
in a scratch directory) gives each variant's ``langprune evaluate variant`` command (perplexity,
``udhr_mc`` and the analyses' probe pass), which this script runs in ``make real``'s work
directory (``real/``) with ``--dtype`` set to float32 or bfloat16 and the outputs in a scratch
directory. The checkpoints are ``make real``'s, pruned in float32; build the ones you name first,
e.g. ``snakemake --cores 2 --directory real --configfile config/real.yaml
results/checkpoints/gemma3-270m/wanda_unstructured_0.5/de/seed0``.

1. Agreement, per model and variant: each evaluation language's perplexity in both dtypes and
   its relative change; ``udhr_mc`` correct items per language and the items whose score
   changed; probe states: the cosine between the two dtypes' final embeddings of each passage
   (its minimum) and the largest relative change of a pruned variant's per-layer drift.
2. Speed (``--speed-repeats``): CPU seconds (user + system, the whole process) of one
   evaluation job, run alternately: "before" is the job as ``--before-src`` (a source tree of
   the package without the bfloat16 evaluation, e.g. ``git archive <commit> src | tar -x``)
   runs it (float32, no probe pass), and this tree's job (bfloat16, with its probe pass); the
   agreement runs' CPU seconds compare float32 and bfloat16 within this tree. On a shared
   machine only the ratios mean anything.
   ``--check-float32``: whether this tree's float32 job wrote the same values as the before job.
3. ``--matmul-only``: GFLOP/s of Gemma 3 270M's matrix products on one thread in float32,
   float32 with ``torch.set_float32_matmul_precision("medium")``, and bfloat16.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_bf16.py
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_bf16.py --before-src /tmp/before/src --speed-repeats 2
    .venv/bin/python benchmarks/bench_bf16.py --matmul-only
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from langprune.analysis.states import read_states

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")
DENSE = "dense"
DTYPES = ("float32", "bfloat16")
VARIANTS = [DENSE, "magnitude_unstructured_0.5/none/seed0", "wanda_unstructured_0.5/de/seed0",
            "sparsegpt_2of4_0.5/en/seed0"]


def workflow_jobs(configfile: Path) -> dict[tuple[str, str], list[str]]:
    """(model, variant path or 'dense') -> the argv of its `langprune evaluate variant` job, as a dry run plans it."""
    with tempfile.TemporaryDirectory() as scratch:
        proc = subprocess.run([str(SNAKEMAKE), "-s", str(REPO / "Snakefile"), "--directory", scratch, "--cores", "1",
                               "--dry-run", "--printshellcmds", "--configfile", str(configfile)],
                              capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if proc.returncode:
        sys.exit(f"bench_bf16: the dry run of {configfile} failed:\n{proc.stderr[-2000:]}")
    jobs = {}
    for line in proc.stdout.splitlines():
        if "Shell command: langprune evaluate variant " not in line:
            continue
        argv = shlex.split(line.split("Shell command:", 1)[1].split(" > ", 1)[0])
        model = Path(argv[argv.index("--model") + 1]).name
        checkpoint = argv[argv.index("--checkpoint") + 1] if "--checkpoint" in argv else None
        path = DENSE if checkpoint is None else checkpoint.split(f"/{model}/", 1)[1]
        jobs[model, path] = argv
    return jobs


def job_argv(argv: list[str], dtype: str, out_dir: Path, dense_dir: Path, probe: bool = True) -> list[str]:
    """The job's arguments after `langprune evaluate variant`, with its dtype, its outputs under
    ``out_dir``, a pruned probe pass reading the dense states under ``dense_dir``, and with or
    without its probe pass."""
    result = []
    words = iter(argv[3:])  # langprune evaluate variant
    for word in words:
        if word not in ("--dtype", "--out-dir", "--run"):
            result.append(word)
            continue
        value = next(words)
        if word == "--dtype":
            value = dtype
        elif word == "--out-dir":
            value = str(out_dir)
        elif value.startswith("hidden "):
            if not probe:
                continue
            value = value.replace("--reference results/", f"--reference {dense_dir}/")
        result += [word, value]
    return [*result, "--force"]


def run_job(args: list[str], workdir: Path, pythonpath: str | None = None) -> float:
    """CPU seconds (user + system) of one `langprune evaluate variant` process, run in ``workdir``."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run([sys.executable, "-m", "langprune", "evaluate", "variant", *args], cwd=workdir, env=env,
                          capture_output=True, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        sys.exit(f"bench_bf16: {shlex.join(args)} failed:\n{proc.stderr[-3000:]}")
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def records(path: Path, metric: str) -> dict[str, dict]:
    """Language -> record of ``metric`` in a metrics JSON."""
    doc = json.loads(path.read_text())
    return {r["language"]: r for r in doc["records"] if r["available"] and r["metric"] == metric}


def output_paths(argv: list[str], out_dir: Path) -> dict[str, Path]:
    """'hidden' / 'perplexity' / 'tasks' -> the file that run of the job writes."""
    outs = {}
    for index, word in enumerate(argv):
        if word == "--run":
            run = shlex.split(argv[index + 1])
            outs[run[0]] = out_dir / run[run.index("--out") + 1]
    return outs


def compare(argv: list[str], out: dict[str, Path]) -> dict:
    """float32 against bfloat16 of one variant, from the two runs' outputs."""
    f32, bf16 = (output_paths(argv, out[dtype]) for dtype in DTYPES)
    ppl = {lang: (r["value"], records(bf16["perplexity"], "perplexity")[lang]["value"])
           for lang, r in records(f32["perplexity"], "perplexity").items()}
    mc32, mc16 = records(f32["tasks"], "acc"), records(bf16["tasks"], "acc")
    mc = {}
    for lang, rec in mc32.items():
        a, b = rec["units"], mc16[lang]["units"]
        assert a["ids"] == b["ids"] and a["fingerprints"] == b["fingerprints"], f"udhr_mc {lang}: different items"
        mc[lang] = (int(sum(a["score"])), int(sum(b["score"])), sum(x != y for x, y in zip(a["score"], b["score"])),
                    len(a["ids"]))
    (s32, _), (s16, _) = read_states(f32["hidden"]), read_states(bf16["hidden"])
    cosine = min(torch.nn.functional.cosine_similarity(s32[k].float(), s16[k].float(), dim=-1).min().item()
                 for k in s32 if k.startswith("final."))
    drift = [((s16[k].float() - s32[k].float()).abs() / s32[k].float()).max().item()
             for k in s32 if k.startswith("drift.")]
    return {"perplexity": ppl, "udhr_mc": mc, "cosine": cosine, "drift": max(drift) if drift else None}


def agreement(jobs, models, variants, workdir: Path, scratch: Path) -> dict:
    results = {}
    for model in models:
        for path in variants:
            argv = jobs[model, path]
            out = {dtype: scratch / dtype / model / path for dtype in DTYPES}
            seconds = {}
            for dtype in DTYPES:  # the dense run first in each dtype: pruned probe passes read its states
                job = job_argv(argv, dtype, out[dtype], scratch / dtype / model / DENSE)
                done = out[dtype] / "cpu_seconds.json"  # a run finished in the same --scratch earlier
                if not done.exists():
                    done.write_text(json.dumps(run_job(job, workdir)))
                seconds[dtype] = json.loads(done.read_text())
            results[model, path] = {**compare(argv, out), "seconds": seconds}
            print(f"  {model} {path}: {seconds['float32']:.0f} s float32, {seconds['bfloat16']:.0f} s bfloat16 CPU",
                  flush=True)
    return results


def print_agreement(results: dict, models, variants) -> None:
    for model in models:
        languages = list(results[model, DENSE]["perplexity"])
        print(f"\n{model}: perplexity float32 -> bfloat16 (relative change)\n")
        print("| variant | " + " | ".join(languages) + " |")
        print("|---|" + "---:|" * len(languages))
        for path in variants:
            cells = [f"{a:.2f} -> {b:.2f} ({100 * (b - a) / a:+.2f}%)"
                     for a, b in results[model, path]["perplexity"].values()]
            print(f"| {path} | " + " | ".join(cells) + " |")
        print(f"\n{model}: udhr_mc correct items of {next(iter(results[model, DENSE]['udhr_mc'].values()))[3]} "
              "(float32/bfloat16 where they differ); probe states\n")
        print("| variant | " + " | ".join(languages) + " | items changed | min cosine (final) | max drift change |")
        print("|---|" + "---:|" * (len(languages) + 3))
        for path in variants:
            res = results[model, path]
            cells = [str(a) if a == b else f"{a}/{b}" for a, b, _, _ in res["udhr_mc"].values()]
            changed = sum(c for _, _, c, _ in res["udhr_mc"].values())
            drift = "-" if res["drift"] is None else f"{100 * res['drift']:.2f}%"
            print(f"| {path} | " + " | ".join(cells) + f" | {changed} | {res['cosine']:.5f} | {drift} |")
    print("\nSummary")
    for label, keep in (("dense, wanda, sparsegpt", lambda p: not p.startswith("magnitude")),
                        ("magnitude", lambda p: p.startswith("magnitude"))):
        changes = [100 * (b - a) / a for (_, path), res in results.items() if keep(path)
                   for a, b in res["perplexity"].values()]
        if changes:
            print(f"  perplexity change, {label}: {min(changes):+.2f}% to {max(changes):+.2f}% (largest |change| "
                  f"{max(map(abs, changes)):.2f}%, {sum(c > 0 for c in changes)} of {len(changes)} up)")
    changed = sum(c for res in results.values() for _, _, c, _ in res["udhr_mc"].values())
    total = sum(n for res in results.values() for _, _, _, n in res["udhr_mc"].values())
    print(f"  udhr_mc item scores changed: {changed} of {total}")
    print(f"  probe final-embedding cosine, minimum: {min(r['cosine'] for r in results.values()):.5f}")
    drifts = [r["drift"] for r in results.values() if r["drift"] is not None]
    print(f"  per-layer drift, largest relative change: {100 * max(drifts):.2f}%")
    print("\nCPU seconds of each job above (user + system, with its probe pass)\n")
    print("| model | variant | float32 | bfloat16 | bfloat16 / float32 |")
    print("|---|---|---:|---:|---:|")
    for (model, path), res in results.items():
        f32, bf16 = res["seconds"]["float32"], res["seconds"]["bfloat16"]
        print(f"| {model} | {path} | {f32:.0f} | {bf16:.0f} | {bf16 / f32:.2f} |")


def speed(jobs, model: str, path: str, workdir: Path, scratch: Path, repeats: int, before_src: str | None) -> None:
    """CPU seconds of one evaluation job in each setting, run alternately ``repeats`` times."""
    argv = jobs[model, path]
    dense = {dtype: scratch / dtype / model / DENSE for dtype in DTYPES}  # the agreement runs' dense states
    settings = {}
    if before_src:
        job = job_argv(argv, "float32", scratch / "speed", dense["float32"], probe=False)
        settings["before: float32, no probe pass"] = (job, before_src)
    job = job_argv(argv, "bfloat16", scratch / "speed", dense["bfloat16"])
    settings["after: bfloat16, with the probe pass"] = (job, None)
    seconds = {name: [] for name in settings}
    for _ in range(repeats):
        for name, (job, pythonpath) in settings.items():
            seconds[name].append(run_job(job, workdir, pythonpath))
            print(f"  {name}: {seconds[name][-1]:.1f} s", flush=True)
    reference = statistics.median(seconds[next(iter(settings))])
    print(f"\n{model} {path}: CPU seconds of one evaluation job (user + system), {repeats} alternating runs\n")
    print("| job | CPU s (each run) | median / first row |")
    print("|---|---|---:|")
    for name, values in seconds.items():
        print(f"| {name} | {', '.join(f'{v:.1f}' for v in values)} | {statistics.median(values) / reference:.2f} |")


# The products of one Gemma 3 270M evaluation: (name, output features, input features, tokens per call).
GEMMA_PRODUCTS = [("LM head 262144 x 640", 262144, 640, 128), ("MLP gate/up 2048 x 640", 2048, 640, 1024),
                  ("MLP down 640 x 2048", 640, 2048, 1024), ("attention q 1024 x 640", 1024, 640, 1024)]


def float32_unchanged(jobs, model: str, path: str, workdir: Path, scratch: Path, before_src: str) -> None:
    """Whether this tree's float32 job (the agreement run) wrote the same perplexity and ``udhr_mc``
    values, window by window and item by item, as the job of ``before_src``."""
    argv = jobs[model, path]
    job = job_argv(argv, "float32", scratch / "before", scratch / "float32" / model / DENSE, probe=False)
    run_job(job, workdir, before_src)
    before, now = output_paths(argv, scratch / "before"), output_paths(argv, scratch / "float32" / model / path)
    for run, metric in (("perplexity", "perplexity"), ("tasks", "acc")):
        old, new = records(before[run], metric), records(now[run], metric)
        same = {lang: (old[lang]["value"], old[lang]["units"]) == (new[lang]["value"], new[lang]["units"])
                for lang in old}
        print(f"  {model} {path} {run}: float32 values and units equal to the before job's in "
              f"{sum(same.values())} of {len(same)} languages")


def matmul_rates(repeats: int = 5) -> None:
    """GFLOP/s of Gemma 3 270M's matrix products on one thread: float32, float32 with
    ``set_float32_matmul_precision("medium")`` and bfloat16 (best of ``repeats``)."""
    torch.set_num_threads(1)
    modes = {"float32": (torch.float32, "highest"), "float32, matmul precision medium": (torch.float32, "medium"),
             "bfloat16": (torch.bfloat16, "highest")}
    print("\nMatrix products on one thread, GFLOP/s (best of", repeats, "runs)\n")
    print("| product | tokens | " + " | ".join(modes) + " |")
    print("|---|---:|" + "---:|" * len(modes))
    for name, rows, columns, tokens in GEMMA_PRODUCTS:
        rates = []
        for dtype, precision in modes.values():
            torch.set_float32_matmul_precision(precision)
            weight = torch.randn(rows, columns).to(dtype)
            inputs = torch.randn(tokens, columns).to(dtype)
            best = float("inf")
            for _ in range(repeats):
                start = time.perf_counter()
                torch.nn.functional.linear(inputs, weight)
                best = min(best, time.perf_counter() - start)
            rates.append(2 * rows * columns * tokens / best / 1e9)
        torch.set_float32_matmul_precision("highest")
        print(f"| {name} | {tokens} | " + " | ".join(f"{r:.0f}" for r in rates) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--configfile", type=Path, default=REPO / "config" / "real.yaml")
    parser.add_argument("--workdir", type=Path, default=REPO / "real", help="make real's work directory")
    parser.add_argument("--models", default="gemma3-270m,smollm2-135m")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="variant paths, or 'dense' (always run first)")
    parser.add_argument("--scratch", type=Path, help="outputs (default: a temporary directory); runs that "
                        "finished in it before are not run again")
    parser.add_argument("--speed-repeats", type=int, default=0, help="alternating runs of each speed setting (0: none)")
    parser.add_argument("--speed-variant", default="wanda_unstructured_0.5/de/seed0")
    parser.add_argument("--before-src", help="a source tree (its src/) whose job is the speed table's 'before'")
    parser.add_argument("--check-float32", action="store_true",
                        help="with --before-src: this tree's float32 results equal to the before job's (first model, "
                        "--speed-variant)")
    parser.add_argument("--matmul-only", action="store_true", help="only the matrix products' rates (3.)")
    args = parser.parse_args()
    if args.matmul_only:
        matmul_rates()
        return
    models = args.models.split(",")
    variants = [DENSE, *(v for v in args.variants.split(",") if v != DENSE)]
    jobs = workflow_jobs(args.configfile)
    missing = [f"{args.workdir}/results/checkpoints/{m}/{v}" for m in models for v in variants
               if v != DENSE and not (args.workdir / "results" / "checkpoints" / m / v).is_dir()]
    if missing:
        sys.exit("bench_bf16: build these checkpoints first (make real's snakemake with them as targets): "
                 + " ".join(missing))
    with tempfile.TemporaryDirectory() as temporary:
        scratch = (args.scratch or Path(temporary)).resolve()
        print(f"threads: OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; "
              f"load average at start: {os.getloadavg()[0]:.1f}", flush=True)
        results = agreement(jobs, models, variants, args.workdir, scratch)
        print_agreement(results, models, variants)
        if args.check_float32 and args.before_src:
            float32_unchanged(jobs, models[0], args.speed_variant, args.workdir, scratch, args.before_src)
        if args.speed_repeats:
            print(f"\nload average before the speed runs: {os.getloadavg()[0]:.1f}", flush=True)
            speed(jobs, models[0], args.speed_variant, args.workdir, scratch, args.speed_repeats, args.before_src)
            print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
