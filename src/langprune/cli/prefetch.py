"""`langprune prefetch`: fill the Hugging Face cache with what a workflow config reads (argument parsing only)."""

from __future__ import annotations

import argparse

from ..errors import LangpruneError
from .outputs import add_output

UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}


def parse_size(text: str) -> int:
    """``500M``, ``2G``, ``1048576``: a number of bytes (decimal units, as the plan prints them)."""
    number, unit = text.strip().rstrip("bB"), ""
    if number and number[-1].lower() in UNITS:
        number, unit = number[:-1], number[-1].lower()
    try:
        value = float(number) * UNITS[unit]
    except ValueError as exc:
        raise LangpruneError(f"--reserve '{text}' must be a size like 500M, 2G or 1048576") from exc
    if not value >= 0 or value == float("inf"):
        raise LangpruneError(f"--reserve '{text}' must be a finite size of at least 0")
    return int(value)


def run_prefetch(args: argparse.Namespace) -> int:
    from ..prefetch import prefetch

    prefetch(args.configfile, manifest=args.manifest, dry_run=args.dry_run, reserve=parse_size(args.reserve))
    return 0


def register(subparsers) -> None:
    from ..prefetch import DEFAULT_MANIFEST, URL_MIRROR_ENV

    p = subparsers.add_parser(
        "prefetch", help="download what a workflow config reads from the hub, so compute jobs run offline",
        description="Download into the Hugging Face cache (HF_HOME) everything the configured jobs read from the "
                    "hub: each model's and tokenizer's loading files, the mC4 files of calibration (train) and "
                    "perplexity (validation) per language, every dataset of the configured lm-eval tasks, the "
                    "Belebele probe, and MKQA's release file. States the files and the disk needed first, refuses "
                    "when the disk is too small, resumes after an interruption, checks every file against the "
                    "hub's size and hash, and writes a manifest of the resolved commits. Runs where the hub can be "
                    "reached (a cluster's login node; HF_ENDPOINT selects a site mirror). The workflow runs it "
                    "first, as a local rule.")
    p.add_argument("--configfile", nargs="+", required=True, metavar="FILE",
                   help="workflow config file(s), merged in order as snakemake --configfile merges them")
    p.add_argument("--dry-run", action="store_true",
                   help="print the plan without touching the network (sizes from an earlier manifest, if any)")
    add_output(p, "--manifest", kind="prefetch:MANIFEST_KIND", default=DEFAULT_MANIFEST,
                   help=f"where the manifest is written (default: {DEFAULT_MANIFEST}); files from outside the hub "
                        f"go beside it, in task-data/")
    p.add_argument("--reserve", default="1G",
                   help="disk space to leave free in the cache after the download (default: 1G)")
    p.set_defaults(func=run_prefetch)
    p.epilog = (f"Files outside the hub (MKQA) are fetched from their URL; {URL_MIRROR_ENV}=ORIGINAL=REPLACEMENT "
                f"rewrites that URL's prefix to a site copy.")
