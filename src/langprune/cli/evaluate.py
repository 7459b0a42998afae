"""`langprune evaluate perplexity|tasks|variant|make-mc|gather` (argument parsing only)."""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shlex

from ..io import OUTPUT_FOLDER
from ..ranges import NON_NEGATIVE_INT, POSITIVE_INT, Range
from .outputs import add_output

# Flags `evaluate variant` sets for each of its runs; a --run string must not repeat them.
VARIANT_FLAGS = ("--model", "--checkpoint", "--revision", "--dtype", "--device", "--tag")
# What a --run may be, as the `langprune` command it is: the two evaluations and the analyses' probe pass.
VARIANT_RUNS = {"perplexity": ("evaluate", "perplexity"), "tasks": ("evaluate", "tasks"),
                "hidden": ("analyze", "hidden")}


def _common_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="base model (hub id or local dir)")
    p.add_argument("--checkpoint", help="sparse checkpoint dir; omit for the dense model")
    p.add_argument("--revision", default=None,
                   help="hub revision of --model (default: the checkpoint's recorded one, else the main branch)")
    p.add_argument("--dtype", default=None, help="auto (default), float32, bfloat16, float16")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--batch-size", type=POSITIVE_INT, default=1)
    p.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE",
                   help="label written into the metrics JSON (repeatable); updates the checkpoint's tags")
    add_output(p, "--out", kind="evaluate.results:METRICS_KIND", required=True, help="metrics JSON path")


def run_perplexity(args: argparse.Namespace) -> int:
    from ..data.languages import parse_languages
    from ..evaluate.perplexity import evaluate_perplexity
    from ..variant import parse_tags

    doc = evaluate_perplexity(args.model, args.source, parse_languages(args.languages), args.seqlen,
                              args.max_tokens, args.out, checkpoint=args.checkpoint,
                              calibration=args.calibration, dtype=args.dtype, device=args.device,
                              batch_size=args.batch_size, tags=parse_tags(args.tag),
                              overlap_window=args.overlap_window, revision=args.revision, force=args.force)
    for rec in doc["records"]:
        print(f"{rec['language']}\t{rec['metric']}\t{rec['value']:.4f}\t(n={rec['n']})")
    return 0


def run_tasks(args: argparse.Namespace) -> int:
    from ..data.languages import parse_languages
    from ..evaluate.harness import evaluate_tasks
    from ..variant import parse_tags

    doc = evaluate_tasks(args.model, args.tasks.split(","), parse_languages(args.languages), args.out,
                         checkpoint=args.checkpoint, limit=args.limit, batch_size=args.batch_size,
                         max_length=args.max_length, task_data=args.task_data, dtype=args.dtype,
                         device=args.device, revision=args.revision, tags=parse_tags(args.tag), force=args.force,
                         backend=args.backend, batch_tokens=args.batch_tokens)
    for rec in doc["records"]:
        value = "n/a" if rec["value"] is None else f"{rec['value']:.4f}"
        print(f"{rec['benchmark']}\t{rec['language']}\t{rec['metric']}\t{value}\t(n={rec['n']})")
    return 0


def _run_words(run: str) -> list[str]:
    """The words of one --run string, checked for what `evaluate variant` sets itself."""
    from ..errors import LangpruneError

    try:
        words = shlex.split(run)
    except ValueError as exc:
        raise LangpruneError(f"--run '{run}' cannot be split into arguments ({exc}); check its quotes") from exc
    if not words or words[0] not in VARIANT_RUNS:
        *first, last = VARIANT_RUNS
        raise LangpruneError(f"--run '{run}' must start with {', '.join(first)} or {last}")
    clash = [w for w in words if w.split("=")[0] in VARIANT_FLAGS]
    if clash:
        raise LangpruneError(f"--run '{run}' sets {', '.join(clash)}: give those to `evaluate variant` itself")
    if "--out" not in words or words.index("--out") == len(words) - 1:
        raise LangpruneError(f"--run '{run}' needs --out FILE (relative to --out-dir)")
    return words


def _inside(out_dir: str, name: str, run: str) -> str:
    """``out_dir/name``, refused unless ``name`` is a relative path that stays inside ``out_dir``."""
    from ..errors import LangpruneError

    root = os.path.realpath(out_dir)
    path = os.path.join(out_dir, name)
    real = os.path.realpath(path)
    if os.path.isabs(name) or os.path.commonpath([root, real]) != root or real == root:
        raise LangpruneError(f"--run '{run}': --out '{name}' must be a file name or relative path inside "
                             f"--out-dir '{out_dir}'")
    return path


def variant_runs(args: argparse.Namespace) -> list[argparse.Namespace]:
    """Each --run as the namespace of its own `langprune evaluate perplexity|tasks` or `analyze hidden`
    command, per checkpoint (``run_name`` says which).

    Every run's outputs go through the output guard here, so nothing runs unless all can be written.
    """
    from ..errors import LangpruneError
    from . import build_parser
    from .outputs import command_inputs, guard

    checkpoints = args.checkpoint or ["dense"]
    if len(args.out_dir) != len(checkpoints):
        raise LangpruneError(f"evaluate variant: {len(checkpoints)} --checkpoint value(s) but {len(args.out_dir)} "
                             f"--out-dir; give one --out-dir per checkpoint, in the same order")
    parser, runs = build_parser(), []
    outer = command_inputs(args)
    for checkpoint, out_dir in zip(checkpoints, args.out_dir):
        common = ["--model", args.model, "--device", args.device]
        common += ["--checkpoint", checkpoint] if checkpoint != "dense" else []
        common += ["--revision", args.revision] if args.revision else []
        common += ["--dtype", args.dtype] if args.dtype else []
        for tag in args.tag:
            common += ["--tag", tag]
        for run in args.run:
            words = _run_words(run)
            at = words.index("--out") + 1
            words[at] = _inside(out_dir, words[at], run)
            usage = io.StringIO()
            try:
                with contextlib.redirect_stderr(usage):
                    parsed = parser.parse_args([*VARIANT_RUNS[words[0]], *words[1:], *common])
            except SystemExit as exc:
                reason = usage.getvalue().strip().splitlines()[-1].split(": error: ", 1)[-1] if usage.getvalue() else ""
                command = " ".join(VARIANT_RUNS[words[0]])
                raise LangpruneError(f"--run '{run}' is not a valid `langprune {command}` command: {reason}") from exc
            parsed.force = parsed.force or args.force
            parsed.run_name = words[0]
            runs.append(parsed)
    seen: dict[str, str] = {}
    for parsed in runs:
        for out in _outs(parsed):
            real = os.path.realpath(out)
            if real in seen:
                raise LangpruneError(f"two runs write '{out}' ({seen[real]}); give each --run its own --out")
            seen[real] = f"--run '{parsed.run_name} ... --out {out}'"
    for parsed in runs:
        parsed.guarded = guard(parsed, extra_inputs=outer)
    return runs


def _outs(run: argparse.Namespace) -> list[str]:
    """The files one run writes (`analyze hidden` takes a list)."""
    return run.out if isinstance(run.out, list) else [run.out]


def run_variant(args: argparse.Namespace) -> int:
    from ..evaluate.modelload import shared_base
    from ..io import running

    runs = variant_runs(args)  # every --run and its output are checked before the model is loaded
    with shared_base() as base:
        for run in runs:
            print(f"== {run.run_name} -> {' '.join(_outs(run))}")
            with running(run.guarded):
                run.func(run)
    print(f"model loads: {base.loads} for {len(runs)} metrics files")
    return 0


def run_make_mc(args: argparse.Namespace) -> int:
    from ..data.languages import parse_languages
    from ..evaluate.mc import make_mc

    counts = make_mc(args.source, parse_languages(args.languages), args.n_items, args.seed, args.out,
                     force=args.force)
    print(f"wrote {args.out}: {counts}")
    return 0


def run_gather(args: argparse.Namespace) -> int:
    from ..evaluate.results import gather_to_csv

    rows = gather_to_csv(args.metrics, args.out, force=args.force)
    print(f"wrote {args.out}: {rows} rows")
    return 0


def register(subparsers) -> None:
    ev = subparsers.add_parser("evaluate", help="perplexity, lm-eval tasks, toy MC items, metrics table")
    sub = ev.add_subparsers(dest="evaluate_command", required=True, metavar="EVALUATION")

    p = sub.add_parser("perplexity", help="token perplexity and bits-per-byte per language")
    _common_model_args(p)
    p.add_argument("--source", required=True, help="mc4 (validation split) or text:DIR of held-out text")
    p.add_argument("--languages", required=True)
    p.add_argument("--seqlen", type=Range(int, minimum=2), required=True)
    p.add_argument("--max-tokens", type=Range(int, minimum=2), required=True,
                   help="token budget per language (at least --seqlen)")
    p.add_argument("--calibration", nargs="*", default=[], metavar="SHARD",
                   help="calibration shard(s) the evaluation text must not overlap")
    p.add_argument("--overlap-window", type=POSITIVE_INT, default=None, help="words per hashed window (default 32)")
    p.set_defaults(func=run_perplexity)

    p = sub.add_parser("tasks", help="zero-shot lm-eval tasks (arc, hellaswag, mmlu, belebele, mkqa, udhr_mc)")
    _common_model_args(p)
    p.add_argument("--tasks", required=True, help="comma-separated benchmarks, e.g. arc,belebele,mkqa")
    p.add_argument("--languages", required=True)
    p.add_argument("--limit", type=POSITIVE_INT, default=None, help="items per task (for tests); default all")
    p.add_argument("--max-length", type=POSITIVE_INT, default=None,
                   help="context length for lm-eval (default: model's)")
    p.add_argument("--task-data", action="append", default=[], metavar="DIR",
                   help="local task data: DIR/<task>/<split>.jsonl, DIR/<task>.jsonl, or the registry's file")
    p.add_argument("--backend", choices=["shared", "hflm"], default="shared",
                   help="shared: each distinct context runs once for all its continuations (default); "
                        "hflm: lm-eval's plain HFLM, for comparison. Same scores")
    p.add_argument("--batch-tokens", type=POSITIVE_INT, default=None,
                   help="token budget per batch of the shared backend (default 4096); --batch-size is HFLM's, "
                        "and the shared backend pads no more than HFLM's batches of that size")
    p.set_defaults(func=run_tasks)

    p = sub.add_parser("variant", help="perplexity, tasks and probe states of one or more checkpoints of one base, "
                                       "one model load")
    p.add_argument("--model", required=True, help="base model (hub id or local dir)")
    p.add_argument("--checkpoint", action="append", default=[],
                   help="sparse checkpoint dir (repeatable; 'dense' = the base model); omit for the dense model")
    add_output(p, "--out-dir", kind=OUTPUT_FOLDER, action="append", default=[], required=True,
               help="directory of the runs' outputs, one per --checkpoint, in the same order")
    p.add_argument("--run", action="append", default=[], required=True, metavar="COMMAND",
                   help="one benchmark as `langprune evaluate` arguments without the model flags, e.g. "
                        "'tasks --tasks arc --languages de,en --out arc.json', or the analyses' probe pass as "
                        "`langprune analyze hidden` arguments: 'hidden --probe text:DIR --languages de,en "
                        "[--reference DENSE] --out states.safetensors' (repeatable; --out is under --out-dir)")
    p.add_argument("--revision", default=None, help="hub revision of --model (default: the checkpoint's)")
    p.add_argument("--dtype", default=None, help="auto (default), float32, bfloat16, float16")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE", help="label for every metrics file")
    p.set_defaults(func=run_variant)

    p = sub.add_parser("make-mc", help="build the toy udhr_mc multiple-choice items from held-out text")
    p.add_argument("--source", required=True, help="text:DIR (or mc4 validation)")
    p.add_argument("--languages", required=True)
    p.add_argument("--n-items", type=POSITIVE_INT, required=True)
    p.add_argument("--seed", type=NON_NEGATIVE_INT, default=0)
    add_output(p, "--out", kind="evaluate.mc:MC_KIND", required=True, help="output directory of <lang>.jsonl")
    p.set_defaults(func=run_make_mc)

    p = sub.add_parser("gather", help="tidy CSV from metrics JSON files")
    p.add_argument("metrics", nargs="+", help="metrics JSON files")
    add_output(p, "--out", kind="evaluate.results:TABLE_KIND", required=True, help="tidy CSV to write")
    p.set_defaults(func=run_gather)
