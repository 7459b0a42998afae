"""`langprune plan`: jobs, GPU time and disk of a workflow config (argument parsing only)."""

from __future__ import annotations

import argparse


def run_plan(args: argparse.Namespace) -> int:
    from ..config import check_config_files
    from ..grid import Grid
    from ..plan import render

    config = check_config_files(args.configfile, args.schema, args.directory)
    print(f"langprune plan: {' + '.join(args.configfile)}\n")
    print(render(Grid(config), args.backend))
    return 0


def register(subparsers) -> None:
    from ..plan import BACKENDS

    p = subparsers.add_parser(
        "plan", help="jobs per rule, GPU-hours and disk of a workflow config",
        description="Check the config as `langprune config check` does, then print what the workflow would "
                    "run: jobs per rule (the same as `snakemake -n` in an empty working directory), GPU-hours "
                    "from per-job costs (langprune.plan says which are measured and which extrapolated) and from "
                    "the config's resources, and disk per kind of output.")
    p.add_argument("--configfile", action="append", required=True, metavar="FILE",
                   help="config file; give it again to merge more, in order, as `snakemake --configfile A B` does")
    p.add_argument("--backend", choices=BACKENDS, default="shared",
                   help="lm-eval scoring backend to estimate evaluation time for (default: shared, what the "
                        "workflow runs; hflm: lm-eval's own)")
    p.add_argument("--schema", default=None,
                   help="JSON schema (default: workflow/schemas/config.schema.yaml of the checkout)")
    p.add_argument("--directory", default=".",
                   help="the working directory snakemake runs in, where relative text:DIR paths start")
    p.set_defaults(func=run_plan)
