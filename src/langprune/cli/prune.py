"""`langprune prune` and `langprune export`: argument parsing only."""

from __future__ import annotations

import argparse

from .. import registry
from ..errors import LangpruneError
from ..owl_ratios import ALLOCATION as OWL_RATIOS_ALLOCATION
from ..ranges import OPEN_UNIT, POSITIVE_INT, SEED
from ..variant import parse_tag
from .outputs import add_output


def _tag(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` -> (key, value), a bad one reported by argparse as a usage error."""
    try:
        return parse_tag(text)
    except LangpruneError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _flag_help(owner: str, param: registry.Param) -> str:
    """A hyperparameter's help: its owner, meaning, published default and allowed values (argparse-escaped)."""
    if param.kind is bool:
        return f"{owner}: {param.help}".replace("%", "%%")
    return f"{owner}: {param.help} (default {param.default}; {param.describe()})".replace("%", "%%")


def _add_param_flag(group, owner: str, param: registry.Param) -> None:
    """One flag from its registry declaration; unset it stays None, so given flags are told from defaults."""
    if param.kind is bool:
        group.add_argument(param.flag, action="store_true", default=None, help=_flag_help(owner, param))
        return
    choices = param.allowed_choices()
    group.add_argument(param.flag, default=None, metavar=param.dest.upper(), help=_flag_help(owner, param),
                       type=param.range if param.range is not None else str, choices=choices)


def _given(args, owner_flag: str, owner: str, chosen: str, params) -> dict:
    """The flags of ``params`` that were given, by parameter name; one of an owner not ``chosen`` is an error."""
    given = {p: getattr(args, p.dest) for p in params if getattr(args, p.dest, None) is not None}
    if given and owner != chosen:
        raise LangpruneError(f"{next(iter(given)).flag} applies to {owner_flag} {owner}, not {owner_flag} {chosen}")
    return {p.name: value for p, value in given.items()}


def method_params(args) -> dict:
    """The hyperparameter flags given, checked against --method (a flag of another method is an error)."""
    params = {}
    for name, spec in registry.METHODS.items():
        params.update(_given(args, "--method", name, args.method, spec.params))
    return params


def allocation_params(args) -> dict:
    """The allocation flags given, checked against --allocation (a flag of another allocation is an error)."""
    params = {}
    for name, spec in registry.ALLOCATIONS.items():
        params.update(_given(args, "--allocation", name, args.allocation, spec.all_params))
    return params


def _prune(args) -> int:
    from ..prune import PruneRequest, prune_to_checkpoint

    request = PruneRequest(
        model=args.model, out=args.out, method=args.method, sparsity=args.sparsity, structure=args.structure,
        calibration=args.calibration, method_params=method_params(args), allocation=args.allocation,
        allocation_params=allocation_params(args), owl_ratios=args.owl_ratios, device=args.device,
        batch_size=args.batch_size, dtype=args.dtype, offload=args.offload, seed=args.seed, revision=args.revision,
        trust_remote_code=args.trust_remote_code, tags=dict(args.tag), measure_error=not args.no_error,
        force=args.force, command=("langprune", *args.argv))
    prune_to_checkpoint(request)
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
    from ..checkpoint import export_model

    print(export_model(args.checkpoint, args.out, model=args.model, trust_remote_code=args.trust_remote_code,
                       format=args.format, force=args.force))
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
    methods = ", ".join(name for name, spec in registry.METHODS.items() if not spec.quantizes)
    quantizers = ", ".join(name for name, spec in registry.METHODS.items() if spec.quantizes)
    p = subparsers.add_parser("prune", help="prune (or quantize) a model layer by layer into a checkpoint",
                              description=f"Prune every decoder-layer linear of a causal LM ({methods}; optionally "
                                          f"with a layer-wise sparsity allocation) and write a sparse checkpoint "
                                          f"directory, or quantize them ({quantizers}; no --sparsity or --structure) "
                                          f"into a quantized one.")
    p.add_argument("--model", required=True, help="hub id or local model directory")
    without = ", ".join(name for name, spec in registry.METHODS.items() if not spec.needs_calibration)
    p.add_argument("--calibration", metavar="SHARD", help=f"safetensors shard with int64 input_ids [n, seqlen] "
                                                          f"(not needed for {without})")
    p.add_argument("--method", required=True, choices=list(registry.METHODS), metavar="METHOD",
                   help="; ".join(f"{name}: {spec.summary}" + (" (needs a shard mixing two or more languages)"
                                                                if spec.needs_language_mix else "")
                                  for name, spec in registry.METHODS.items()))
    p.add_argument("--sparsity", type=OPEN_UNIT, help=f"fraction pruned, {OPEN_UNIT.describe()}; implied by N:M "
                                                      f"structures; not for a quantization method")
    p.add_argument("--structure", default="unstructured", help="unstructured (default) or N:M such as 2:4, 4:8")
    add_output(p, "--out", kind="checkpoint:CHECKPOINT_KIND", required=True, metavar="CKPT",
               help="checkpoint directory to write (atomically)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    p.add_argument("--batch-size", type=POSITIVE_INT, default=8,
                   help="calibration sequences on the device at once (default %(default)s; benchmarks/RESULTS.md)")
    p.add_argument("--dtype", default=None, help="auto (default: the model's own), bfloat16, float16, float32")
    p.add_argument("--offload", action="store_true", help="keep at most one decoder layer on the device")
    p.add_argument("--seed", type=SEED, default=0, help=f"torch seed, {SEED.describe()} (recorded in the manifest)")
    p.add_argument("--revision", default=None, help="hub revision of --model")
    p.add_argument("--trust-remote-code", action="store_true", help="allow model code from the hub (off by default)")
    p.add_argument("--no-error", action="store_true",
                   help="skip measuring the per-layer reconstruction error (saves one matmul per linear and batch)")
    p.add_argument("--tag", type=_tag, action="append", default=[], metavar="KEY=VALUE",
                   help="label stored in manifest.json tags (repeatable)")
    a = p.add_argument_group("layer-wise sparsity (defaults: the published ones)")
    a.add_argument("--allocation", default=registry.UNIFORM, choices=list(registry.ALLOCATIONS),
                   help="; ".join(f"{name}: {spec.summary}" + (" (unstructured only)" if spec.unstructured_only
                                                                else "")
                                  for name, spec in registry.ALLOCATIONS.items()) + f" (default {registry.UNIFORM})")
    for name, spec in registry.ALLOCATIONS.items():
        for param in spec.all_params:
            _add_param_flag(a, name, param)
    a.add_argument("--owl-ratios", metavar="FILE", default=None,
                   help="OWL's outlier ratios from `langprune owl-ratios` for this model, shard, dtype and M: "
                        "skips OWL's dense pass (default: computed here)")
    h = p.add_argument_group("method hyperparameters (each applies to its --method only; defaults: the published "
                             "ones)")
    for name, spec in registry.METHODS.items():
        for param in spec.params:
            _add_param_flag(h, name, param)
    p.set_defaults(func=_prune)

    o = subparsers.add_parser("owl-ratios", help="OWL's per-layer outlier ratios of a dense model, for reuse",
                              description="Compute OWL's per-layer outlier ratios of the dense model on a "
                                          "calibration shard (one forward pass) and write them as JSON. They do not "
                                          "depend on the method or the sparsity: `langprune prune --allocation owl "
                                          "--owl-ratios FILE` reuses them and refuses a file made for another "
                                          "model, dtype, shard or M.")
    o.add_argument("--model", required=True, help="hub id or local model directory")
    o.add_argument("--calibration", required=True, metavar="SHARD", help="safetensors calibration shard")
    add_output(o, "--out", kind="owl_ratios:OWL_RATIOS_KIND", required=True, metavar="FILE",
               help="JSON file to write (atomically)")
    owl = registry.allocation(OWL_RATIOS_ALLOCATION)
    for param in owl.params:  # the settings the ratios depend on (not the spread, applied when pruning)
        _add_param_flag(o, owl.name, param)
    o.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    o.add_argument("--batch-size", type=POSITIVE_INT, default=8,
                   help="calibration sequences on the device at once (default %(default)s)")
    o.add_argument("--dtype", default=None, help="as for `langprune prune` (must match it)")
    o.add_argument("--offload", action="store_true", help="keep at most one decoder layer on the device")
    o.add_argument("--revision", default=None, help="hub revision of --model")
    o.add_argument("--trust-remote-code", action="store_true", help="allow model code from the hub")
    o.set_defaults(func=_owl_ratios)

    e = subparsers.add_parser("export", help="write a Hugging Face model directory from a checkpoint")
    e.add_argument("checkpoint", metavar="CKPT")
    add_output(e, "--out", kind="checkpoint:EXPORT_KIND", required=True, metavar="DIR",
               help="model directory to write (atomically)")
    e.add_argument("--format", default="dense",
                   help="dense (default): every weight a plain tensor; compressed-tensors: a quantized checkpoint's "
                        "linears packed (W4A16 and kin), as transformers and vLLM read them")
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
