"""`langprune prune` and `langprune export`: argument parsing only."""

from __future__ import annotations

import argparse


def parse_tag(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` -> (key, value); argparse reports the ValueError as a usage error."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"--tag '{text}' must look like KEY=VALUE")
    return key.strip(), value


def _prune(args) -> int:
    from ..prune import prune_to_checkpoint

    prune_to_checkpoint(args.model, args.out, args.method, sparsity=args.sparsity, structure=args.structure,
                        calibration=args.calibration, device=args.device, batch_size=args.batch_size,
                        dtype=args.dtype, offload=args.offload, seed=args.seed, revision=args.revision,
                        trust_remote_code=args.trust_remote_code, tags=dict(args.tag),
                        measure_error=not args.no_error)
    print(args.out)
    return 0


def _export(args) -> int:
    from ..checkpoint import export_dense

    print(export_dense(args.checkpoint, args.out, model=args.model, trust_remote_code=args.trust_remote_code))
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("prune", help="prune a model layer by layer into a sparse checkpoint",
                              description="Prune every decoder-layer linear of a causal LM (Wanda, SparseGPT or "
                                          "magnitude) and write a sparse checkpoint directory.")
    p.add_argument("--model", required=True, help="hub id or local model directory")
    p.add_argument("--calibration", metavar="SHARD", help="safetensors shard with int64 input_ids [n, seqlen] "
                                                          "(not needed for magnitude)")
    p.add_argument("--method", required=True, help="magnitude, wanda or sparsegpt")
    p.add_argument("--sparsity", type=float, help="fraction pruned, in (0, 1); implied by N:M structures")
    p.add_argument("--structure", default="unstructured", help="unstructured (default) or N:M such as 2:4, 4:8")
    p.add_argument("--out", required=True, metavar="CKPT", help="checkpoint directory to write (atomically)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    p.add_argument("--batch-size", type=int, default=8,
                   help="calibration sequences on the device at once (default %(default)s; benchmarks/RESULTS.md)")
    p.add_argument("--dtype", default=None, help="auto (default: the model's own), bfloat16, float16, float32")
    p.add_argument("--offload", action="store_true", help="keep at most one decoder layer on the device")
    p.add_argument("--seed", type=int, default=0, help="torch seed (recorded in the manifest)")
    p.add_argument("--revision", default=None, help="hub revision of --model")
    p.add_argument("--trust-remote-code", action="store_true", help="allow model code from the hub (off by default)")
    p.add_argument("--no-error", action="store_true",
                   help="skip measuring the per-layer reconstruction error (saves one matmul per linear and batch)")
    p.add_argument("--tag", type=parse_tag, action="append", default=[], metavar="KEY=VALUE",
                   help="label stored in manifest.json tags (repeatable)")
    p.set_defaults(func=_prune)

    e = subparsers.add_parser("export", help="write a dense Hugging Face model directory from a sparse checkpoint")
    e.add_argument("checkpoint", metavar="CKPT")
    e.add_argument("--out", required=True, metavar="DIR")
    e.add_argument("--model", default=None, help="base model (default: the one recorded in the checkpoint)")
    e.add_argument("--trust-remote-code", action="store_true")
    e.set_defaults(func=_export)
