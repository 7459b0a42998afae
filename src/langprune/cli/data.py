"""`langprune calibrate`: build a calibration shard (argument parsing only)."""

from __future__ import annotations

import argparse

from ..errors import LangpruneError
from ..ranges import NON_NEGATIVE_INT, POSITIVE_INT, Range
from .outputs import add_output


def parse_weights(text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(w) for w in text.split(",")]
    except ValueError as exc:
        raise LangpruneError(f"--weights '{text}' must be comma-separated numbers, e.g. 1,1") from exc


def run_calibrate(args: argparse.Namespace) -> int:
    from ..data.languages import parse_languages
    from ..data.shards import ShardSpec, build_shard

    spec = ShardSpec(tokenizer=args.tokenizer, source=args.source, languages=parse_languages(args.languages),
                     nsamples=args.nsamples, seqlen=args.seqlen, seed=args.seed, packing=args.packing,
                     weights=parse_weights(args.weights))
    meta = build_shard(spec, args.out, force=args.force)
    print(f"wrote {args.out}: {meta['nsamples']} x {meta['seqlen']} tokens, counts {meta['counts']}, "
          f"language purity {meta['purity']:.2f}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "calibrate", help="sample a calibration shard (safetensors input_ids [nsamples, seqlen])",
        description="Sample calibration windows from mc4 or text:DIR (one <lang>.txt of blank-line separated "
                    "documents, or a <lang>/ folder with one file per document) and save them as a shard.")
    p.add_argument("--tokenizer", required=True, help="tokenizer (hub id or local dir) of the model to prune")
    p.add_argument("--source", required=True, help="mc4 or text:DIR")
    p.add_argument("--languages", required=True, help="comma-separated codes, e.g. de or ar,de,en")
    p.add_argument("--weights", help="comma-separated mix weights (default: equal shares)")
    p.add_argument("--nsamples", type=POSITIVE_INT, default=128)
    p.add_argument("--seqlen", type=Range(int, minimum=2), default=8192)
    p.add_argument("--seed", type=NON_NEGATIVE_INT, default=0)
    p.add_argument("--packing", choices=["document", "concat"], default="document",
                   help="document: random window of a random long document (paper); concat: join with EOS")
    add_output(p, "--out", kind="data.shards:SHARD_KIND", required=True, help="output .safetensors path")
    p.set_defaults(func=run_calibrate)
