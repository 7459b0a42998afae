"""`langprune prune` and `langprune export`: argument parsing only."""

from __future__ import annotations

import argparse

from ..errors import LangpruneError
from ..variant import parse_tag
from .outputs import add_output


def _tag(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` -> (key, value), a bad one reported by argparse as a usage error."""
    try:
        return parse_tag(text)
    except LangpruneError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


# --flag -> (method it belongs to, that method's hyperparameter)
HYPERPARAMETER_FLAGS = {
    "ria_a": ("ria", "a"), "ria_per_outneuron": ("ria", "per_outneuron"),
    "dsnot_initial": ("dsnot", "initial"), "dsnot_max_cycles": ("dsnot", "max_cycles"),
    "dsnot_update_threshold": ("dsnot", "update_threshold"),
    "dsnot_pow_of_var": ("dsnot", "pow_of_var_regrowing"), "dsnot_skip": ("dsnot", "skip"),
    "mwanda_spread_weight": ("mwanda", "spread_weight"),
    "mwanda_probability_weight": ("mwanda", "probability_weight"),
}


def method_params(args) -> dict:
    """The hyperparameter flags given, checked against --method (a flag of another method is an error)."""
    from ..errors import LangpruneError

    params = {}
    for dest, (method, name) in HYPERPARAMETER_FLAGS.items():
        value = getattr(args, dest)
        if value is None or value is False:
            continue
        if method != args.method:
            raise LangpruneError(f"--{dest.replace('_', '-')} applies to --method {method}, not {args.method}")
        params[name] = value
    return params


def _prune(args) -> int:
    from ..prune import prune_to_checkpoint

    prune_to_checkpoint(args.model, args.out, args.method, sparsity=args.sparsity, structure=args.structure,
                        calibration=args.calibration, device=args.device, batch_size=args.batch_size,
                        dtype=args.dtype, offload=args.offload, seed=args.seed, revision=args.revision,
                        trust_remote_code=args.trust_remote_code, tags=dict(args.tag),
                        measure_error=not args.no_error, method_params=method_params(args),
                        allocation=args.allocation, owl_m=args.owl_m, owl_lambda=args.owl_lambda,
                        cwl_lambda=args.cwl_lambda, owl_ratios=args.owl_ratios, force=args.force)
    print(args.out)
    return 0


def _owl_ratios(args) -> int:
    from ..prune import write_owl_ratios

    record = write_owl_ratios(args.model, args.calibration, args.out, m=args.owl_m, device=args.device,
                              batch_size=args.batch_size, dtype=args.dtype, offload=args.offload,
                              revision=args.revision, trust_remote_code=args.trust_remote_code, force=args.force)
    print(f"outlier ratios of {len(record['outlier_ratios'])} layers in {record['seconds']:.1f} s")
    print(args.out)
    return 0


def _export(args) -> int:
    from ..checkpoint import export_dense

    print(export_dense(args.checkpoint, args.out, model=args.model, trust_remote_code=args.trust_remote_code,
                       force=args.force))
    return 0


def _verify(args) -> int:
    """Print the broken checkpoints' paths on stdout (one a line, for `snakemake $(...)`), reasons on stderr."""
    import shutil
    import sys
    from pathlib import Path

    from ..checkpoint import is_checkpoint_dir, read_manifest
    from ..errors import LangpruneError

    kept_broken = 0
    for ckpt in args.checkpoints:
        try:
            read_manifest(ckpt)
            continue
        except LangpruneError as exc:
            reason = " ".join(str(exc).split())
        path = Path(ckpt)
        real = path.resolve()  # a Snakemake cache entry behind a symlink goes too, or it would be restored
        if args.remove_broken and real.is_dir() and is_checkpoint_dir(real):
            shutil.rmtree(real)
            if path.is_symlink():
                path.unlink()
            print(f"removed {ckpt}: {reason}", file=sys.stderr)
        else:
            kept_broken += 1
            print(f"broken {ckpt}: {reason}", file=sys.stderr)
        print(ckpt)
    return 1 if kept_broken else 0


def register(subparsers) -> None:
    p = subparsers.add_parser("prune", help="prune a model layer by layer into a sparse checkpoint",
                              description="Prune every decoder-layer linear of a causal LM (Wanda, SparseGPT, "
                                          "magnitude, RIA, DSnoT or M-Wanda; optionally with OWL's or M-Wanda's "
                                          "CWL layer-wise sparsity) "
                                          "and write a sparse checkpoint directory.")
    p.add_argument("--model", required=True, help="hub id or local model directory")
    p.add_argument("--calibration", metavar="SHARD", help="safetensors shard with int64 input_ids [n, seqlen] "
                                                          "(not needed for magnitude)")
    p.add_argument("--method", required=True, help="magnitude, wanda, sparsegpt, ria, dsnot or mwanda "
                                                   "(M-Wanda: needs a shard mixing two or more languages)")
    p.add_argument("--sparsity", type=float, help="fraction pruned, in (0, 1); implied by N:M structures")
    p.add_argument("--structure", default="unstructured", help="unstructured (default) or N:M such as 2:4, 4:8")
    add_output(p, "--out", kind="checkpoint:CHECKPOINT_KIND", required=True, metavar="CKPT",
               help="checkpoint directory to write (atomically)")
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
    p.add_argument("--tag", type=_tag, action="append", default=[], metavar="KEY=VALUE",
                   help="label stored in manifest.json tags (repeatable)")
    h = p.add_argument_group("layer-wise sparsity and method hyperparameters (defaults: the published ones)")
    h.add_argument("--allocation", default="uniform", choices=["uniform", "owl", "cwl"],
                   help="uniform (default): every layer at --sparsity; owl: outlier-weighted layer-wise sparsity "
                        "averaging to --sparsity; cwl: M-Wanda's, from each layer's cross-lingual correlation "
                        "(a shard of two or more languages); both unstructured only")
    h.add_argument("--owl-m", type=float, default=None, help="OWL outlier threshold M (default 5)")
    h.add_argument("--owl-lambda", type=float, default=None, help="OWL sparsity spread lambda (default 0.08)")
    h.add_argument("--owl-ratios", metavar="FILE", default=None,
                   help="OWL's outlier ratios from `langprune owl-ratios` for this model, shard, dtype and M: "
                        "skips OWL's dense pass (default: computed here)")
    h.add_argument("--cwl-lambda", type=float, default=None, help="CWL sparsity spread lambda (default 0.08)")
    h.add_argument("--mwanda-spread-weight", type=float, default=None,
                   help="M-Wanda: weight of the cross-language spread of input norms (default 1)")
    h.add_argument("--mwanda-probability-weight", type=float, default=None,
                   help="M-Wanda: weight of the mean activation probability (default 1)")
    h.add_argument("--ria-a", type=float, default=None, help="RIA activation exponent a (default 0.5)")
    h.add_argument("--ria-per-outneuron", action="store_true",
                   help="RIA: compare scores within each output row instead of the whole matrix")
    h.add_argument("--dsnot-initial", default=None, help="DSnoT: method whose mask is refined (default wanda)")
    h.add_argument("--dsnot-max-cycles", type=int, default=None, help="DSnoT: prune-and-grow cycles (default 50)")
    h.add_argument("--dsnot-update-threshold", type=float, default=None,
                   help="DSnoT: a row stops once |expected error| <= this (default 0.1)")
    h.add_argument("--dsnot-pow-of-var", type=float, default=None,
                   help="DSnoT: power of the input variance dividing the grow score (default 1)")
    h.add_argument("--dsnot-skip", default=None,
                   help="DSnoT: linears under modules with this name keep the initial mask "
                        "(default mlp; none: refine all)")
    p.set_defaults(func=_prune)

    o = subparsers.add_parser("owl-ratios", help="OWL's per-layer outlier ratios of a dense model, for reuse",
                              description="Compute OWL's per-layer outlier ratios of the dense model on a "
                                          "calibration shard (one forward pass) and write them as JSON. They do not "
                                          "depend on the method or the sparsity: `langprune prune --allocation owl "
                                          "--owl-ratios FILE` reuses them and refuses a file made for another "
                                          "model, dtype, shard or M.")
    o.add_argument("--model", required=True, help="hub id or local model directory")
    o.add_argument("--calibration", required=True, metavar="SHARD", help="safetensors calibration shard")
    add_output(o, "--out", kind="prune:OWL_RATIOS_KIND", required=True, metavar="FILE",
               help="JSON file to write (atomically)")
    o.add_argument("--owl-m", type=float, default=None, help="OWL outlier threshold M (default 5)")
    o.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    o.add_argument("--batch-size", type=int, default=8, help="calibration sequences on the device at once")
    o.add_argument("--dtype", default=None, help="as for `langprune prune` (must match it)")
    o.add_argument("--offload", action="store_true", help="keep at most one decoder layer on the device")
    o.add_argument("--revision", default=None, help="hub revision of --model")
    o.add_argument("--trust-remote-code", action="store_true", help="allow model code from the hub")
    o.set_defaults(func=_owl_ratios)

    e = subparsers.add_parser("export", help="write a dense Hugging Face model directory from a sparse checkpoint")
    e.add_argument("checkpoint", metavar="CKPT")
    add_output(e, "--out", kind="checkpoint:EXPORT_KIND", required=True, metavar="DIR",
               help="dense model directory to write (atomically)")
    e.add_argument("--model", default=None, help="base model (default: the one recorded in the checkpoint)")
    e.add_argument("--trust-remote-code", action="store_true")
    e.set_defaults(func=_export)

    v = subparsers.add_parser("verify", help="check sparse checkpoints against their manifests (SHA-256, masks)",
                              description="Check each checkpoint as every reader does (file hashes, mask tensors "
                                          "and kept counts, kept values). Prints the paths of broken ones on stdout, "
                                          "one per line, and the reasons on stderr; exit status 1 if a broken one "
                                          "is kept.")
    v.add_argument("checkpoints", nargs="+", metavar="CKPT")
    v.add_argument("--remove-broken", action="store_true",
                   help="delete broken checkpoint directories (only ones holding nothing but checkpoint files, "
                        "their manifest carrying the checkpoint format marker), "
                        "so the workflow rebuilds them on its next run")
    v.set_defaults(func=_verify)
