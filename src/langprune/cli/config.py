"""`langprune config check`: the workflow's parse-time config checks, without Snakemake (argument parsing only)."""

from __future__ import annotations

import argparse


def run_check(args: argparse.Namespace) -> int:
    from ..config import check_config_files

    config = check_config_files(args.files, args.schema, args.directory)
    models, sets = len(config["models"]), len(config["calibration"]["sets"])
    quantized = (config.get("quantization") or {}).get("methods", {})
    settings = "".join(f", {method} x {len(values)} setting(s)" for method, values in quantized.items())
    print(f"{' + '.join(args.files)}: valid ({models} model(s), {sets} calibration set(s), "
          f"methods {', '.join(config['pruning']['methods'])}{settings})")
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser("config", help="check a workflow config file")
    commands = parser.add_subparsers(dest="config_command", required=True, metavar="WHAT")
    check = commands.add_parser(
        "check", help="run the workflow's config checks; YAML mistakes with their line and column",
        description="Load FILE strictly (duplicate keys and YAML mistakes are errors, with line and column), "
                    "validate it against the workflow's schema and check the settings that refer to each other "
                    "or to text directories: the same checks `snakemake` runs when it parses the workflow. "
                    "Several files are merged in order, as `snakemake --configfile A B` does.")
    check.add_argument("files", nargs="+", metavar="FILE", help="config file(s), e.g. config/config.yaml")
    check.add_argument("--schema", default=None,
                       help="JSON schema (default: workflow/schemas/config.schema.yaml of the checkout)")
    check.add_argument("--directory", default=".",
                       help="the working directory snakemake runs in, where relative text:DIR paths start "
                            "(default: the current directory)")
    check.set_defaults(func=run_check)
