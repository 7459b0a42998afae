"""`langprune analyze ...`: the section-5 analyses (argument parsing only)."""

from __future__ import annotations

import argparse

from ..io import PLAIN_FILE
from ..ranges import NON_NEGATIVE_INT, POSITIVE_INT, Range
from .outputs import add_output

QUANTILE = Range(float, minimum=0, maximum=1)
SHARE = Range(float, minimum=0, maximum=1, min_open=True)


def _languages(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _hidden(args):
    from ..analysis.hidden import run_hidden
    from ..variant import parse_tags

    run_hidden(model=args.model, checkpoints=args.checkpoint, probe=args.probe, languages=args.languages,
               reference=args.reference, outs=args.out, tags=parse_tags(args.tag), max_passages=args.max_passages,
               max_length=args.max_length, batch_size=args.batch_size, dtype=args.dtype, device=args.device,
               revision=args.revision, seed=args.seed, threads=args.threads, force=args.force)


def _features(args):
    from ..analysis.features import run_features

    run_features(dense=args.dense, inputs=args.inputs, rank=args.rank, out_table=args.out_table,
                 out_figure=args.out_figure, out_summary=args.out_summary, out_check=args.out_check,
                 languages=args.languages)


def _drift(args):
    from ..analysis.drift import run_drift

    run_drift(inputs=args.inputs, out_table=args.out_table, out_figure=args.out_figure,
              out_summary=args.out_summary, out_benefit=args.out_benefit, languages=args.languages)


def _masks(args):
    from ..analysis.masks import run_masks

    run_masks(checkpoints=args.checkpoints, out_table=args.out_table, out_matrix=args.out_matrix,
              out_layers=args.out_layers, out_types=args.out_types, out_figure=args.out_figure,
              languages=args.languages, threads=args.threads)


def _neurons(args):
    from ..analysis.neurons import run_neurons

    run_neurons(dense=args.dense, checkpoints=args.checkpoints, top_rate=args.top_rate,
                filter_rate=args.filter_rate, activation_bar=args.activation_bar, out_table=args.out_table,
                out_neurons=args.out_neurons, out_figure=args.out_figure, out_summary=args.out_summary,
                languages=args.languages, threads=args.threads)


def _probe_text(args):
    from ..analysis.probe import write_belebele_probe

    write_belebele_probe(languages=args.languages, out=args.out, max_passages=args.max_passages, force=args.force)


def register(subparsers) -> None:
    analyze = subparsers.add_parser("analyze", help="hidden states, LSAR features, drift, mask overlap, neurons")
    sub = analyze.add_subparsers(dest="analysis", required=True, metavar="ANALYSIS")
    order = argparse.ArgumentParser(add_help=False)
    order.add_argument("--languages", type=_languages, help="comma-separated language order for figures")
    cpu = argparse.ArgumentParser(add_help=False)
    cpu.add_argument("--threads", type=POSITIVE_INT, default=None, help="torch CPU threads (default: torch's choice)")

    p = sub.add_parser("hidden", parents=[cpu],
                       help="probe states of one model: one hooked forward pass per probe language")
    p.add_argument("--model", required=True, help="base model id or directory")
    p.add_argument("--checkpoint", nargs="+", help="sparse checkpoint directories (omit for the dense model)")
    p.add_argument("--probe", required=True, help="text:DIR (or DIR) with parallel <lang>.txt probe passages")
    p.add_argument("--languages", required=True, type=_languages, help="comma-separated probe languages")
    p.add_argument("--reference", help="the dense model's probe states; with it, store drift instead of all layers")
    p.add_argument("--max-passages", type=POSITIVE_INT, default=200, help="passages per language (paper: 200)")
    p.add_argument("--max-length", type=POSITIVE_INT, default=256, help="tokens per passage")
    p.add_argument("--batch-size", type=POSITIVE_INT, default=8)
    p.add_argument("--dtype", default=None, help="auto (default), float32, bfloat16, float16")
    p.add_argument("--device", default="cpu")
    p.add_argument("--revision", default=None,
                   help="hub revision of --model (default: the checkpoint's recorded one, else the main branch)")
    p.add_argument("--seed", type=NON_NEGATIVE_INT, default=0)
    p.add_argument("--tag", action="append", metavar="KEY=VALUE", help="label (repeatable), overrides manifest tags")
    add_output(p, "--out", kind="analysis.states:STATES_KIND", nargs="+", required=True,
               help="output .safetensors, one per checkpoint")
    p.set_defaults(func=_hidden)

    p = sub.add_parser("features", parents=[order], help="LSAR language-specific/agnostic change (Figure 1)")
    p.add_argument("--dense", required=True, help="dense probe states (fits the language subspace)")
    p.add_argument("inputs", nargs="+", help="pruned models' probe states")
    p.add_argument("--rank", type=POSITIVE_INT, default=None,
                   help="subspace rank (default: number of languages - 1)")
    add_output(p, "--out-table", kind=PLAIN_FILE, required=True)
    add_output(p, "--out-figure", kind=PLAIN_FILE, required=True)
    add_output(p, "--out-summary", kind=PLAIN_FILE, required=True, help="plain-text check of the paper's two claims")
    add_output(p, "--out-check", kind=PLAIN_FILE, help="the same check as CSV")
    p.set_defaults(func=_features)

    p = sub.add_parser("drift", parents=[order], help="layer-wise dense vs pruned drift (Figure 2)")
    p.add_argument("inputs", nargs="+", help="pruned models' probe states")
    add_output(p, "--out-table", kind=PLAIN_FILE, required=True)
    add_output(p, "--out-figure", kind=PLAIN_FILE, required=True)
    add_output(p, "--out-summary", kind=PLAIN_FILE, required=True,
               help="plain text: layers that gain from target calibration")
    add_output(p, "--out-benefit", kind=PLAIN_FILE, help="per-layer benefit of target-language calibration (CSV)")
    p.set_defaults(func=_drift)

    p = sub.add_parser("masks", parents=[order, cpu], help="IoU of pruned sets between calibration languages")
    p.add_argument("checkpoints", nargs="+", help="sparse checkpoint directories")
    add_output(p, "--out-table", kind=PLAIN_FILE, required=True, help="pair x layer x linear type")
    add_output(p, "--out-matrix", kind=PLAIN_FILE, required=True, help="language x language")
    add_output(p, "--out-layers", kind=PLAIN_FILE, required=True, help="per layer, cross-language vs same-language")
    add_output(p, "--out-types", kind=PLAIN_FILE, required=True,
               help="per linear type, cross-language vs same-language")
    add_output(p, "--out-figure", kind=PLAIN_FILE, required=True)
    p.set_defaults(func=_masks)

    p = sub.add_parser("neurons", parents=[order, cpu], help="LAPE language-specific neurons vs calibration language")
    p.add_argument("--dense", required=True, help="dense probe states (activation counts)")
    p.add_argument("checkpoints", nargs="+", help="sparse checkpoint directories")
    p.add_argument("--top-rate", type=SHARE, default=0.01, help="share of all neurons kept by lowest LAPE")
    p.add_argument("--filter-rate", type=QUANTILE, default=0.95,
                   help="quantile a neuron's top probability must exceed")
    p.add_argument("--activation-bar", type=QUANTILE, default=0.95,
                   help="quantile a probability must exceed to assign the neuron to that language")
    add_output(p, "--out-table", kind=PLAIN_FILE, required=True)
    add_output(p, "--out-neurons", kind=PLAIN_FILE, required=True, help="list of selected neurons")
    add_output(p, "--out-figure", kind=PLAIN_FILE, required=True)
    add_output(p, "--out-summary", kind=PLAIN_FILE, required=True)
    p.set_defaults(func=_neurons)

    p = sub.add_parser("probe-text", help="write parallel Belebele passages as a probe text directory")
    p.add_argument("--languages", required=True, type=_languages)
    p.add_argument("--max-passages", type=POSITIVE_INT, default=200)
    add_output(p, "--out", kind="analysis.probe:PROBE_KIND", required=True, help="directory for <lang>.txt")
    p.set_defaults(func=_probe_text)
