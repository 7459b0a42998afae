"""The adversarial audit's command-line cases (issue 13): one `error:` line, never a traceback, no lost data.

Every case runs ``langprune.cli.main`` in process on a fixture directory built from the
tiny models in conftest.py, and checks the exit status 2, exactly one ``langprune ...:
error:`` line (the last line of stderr), no traceback, the words that name the problem,
and that whatever the user had at the paths involved is byte-for-byte unchanged. The
ids are the audit's (/work/shared/audit/README.md section 2).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import build_model
from langprune.checkpoint import MANIFEST, MASKS, VALUES
from langprune.cli import main


@pytest.fixture(autouse=True)
def _private_hash_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LANGPRUNE_CACHE", str(tmp_path / "cache"))


def snapshot(path: Path) -> dict[str, str]:
    """Relative path -> SHA-256 (or 'dir') of everything under ``path``: what must stay untouched."""
    if path.is_file():
        return {".": hashlib.sha256(path.read_bytes()).hexdigest()}
    return {str(p.relative_to(path)): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*"))}


@pytest.fixture(scope="module")
def fx(tmp_path_factory, tiny_tokenizer_dir, tiny_llama_dir, text_splits) -> Path:
    """The audit's fixture directory: tokenizer, models, text, a shard, two checkpoints and broken copies."""
    root = tmp_path_factory.mktemp("audit")
    os.environ["LANGPRUNE_CACHE"] = str(root / "cache")
    (root / "text").mkdir()
    for split, path in text_splits.items():
        shutil.copytree(path, root / "text" / split)
    shutil.copytree(tiny_tokenizer_dir, root / "tok")
    shutil.copytree(tiny_llama_dir, root / "llama")
    build_model(root / "llama_other", "llama", seed=1, tokenizer_dir=tiny_tokenizer_dir)
    (root / "text_empty").mkdir()
    (root / "text_tiny").mkdir()
    (root / "text_tiny" / "de.txt").write_text("Alle Menschen sind frei.\n", encoding="utf-8")
    ok, bad = root / "ok", root / "bad"
    ok.mkdir(), bad.mkdir()
    assert main(["calibrate", "--tokenizer", str(root / "tok"), "--source", f"text:{root / 'text' / 'calib'}",
                 "--languages", "de,en", "--nsamples", "4", "--seqlen", "32", "--packing", "concat",
                 "--out", str(ok / "shard.safetensors")]) == 0
    for method, name in [("wanda", "ckpt_wanda"), ("sparsegpt", "ckpt_sgpt")]:
        assert main(["prune", "--model", str(root / "llama"), "--calibration", str(ok / "shard.safetensors"),
                     "--method", method, "--sparsity", "0.5", "--out", str(ok / name)]) == 0
    assert main(["evaluate", "perplexity", "--model", str(root / "llama"), "--source",
                 f"text:{root / 'text' / 'eval'}", "--languages", "de", "--seqlen", "32", "--max-tokens", "128",
                 "--out", str(ok / "v00.json")]) == 0
    make_bad(root)
    del os.environ["LANGPRUNE_CACHE"]
    return root


def _edit_masks(ckpt: Path, edit) -> None:
    masks = load_file(str(ckpt / MASKS))
    save_file({name: edit(name, packed) for name, packed in masks.items()}, str(ckpt / MASKS))


def make_bad(root: Path) -> None:
    """The broken inputs of the audit's make_bad.py, built from the good ones."""
    ok, bad = root / "ok", root / "bad"

    def copy(name: str, source: str = "ckpt_wanda") -> Path:
        return Path(shutil.copytree(ok / source, bad / name))

    (bad / "notsafe.safetensors").write_text("not a safetensors file\n")
    save_file({"input_ids": torch.randint(3, 300, (2, 600))}, str(bad / "long_seq.safetensors"))
    trunc = copy("ckpt_trunc") / MASKS
    trunc.write_bytes(trunc.read_bytes()[: trunc.stat().st_size // 2])
    manifest = copy("ckpt_badjson") / MANIFEST
    manifest.write_text(manifest.read_text()[: len(manifest.read_text()) // 2])
    (copy("ckpt_nomanifest") / MANIFEST).unlink()
    first = sorted(load_file(str(ok / "ckpt_wanda" / MASKS)))[0]
    _edit_masks(copy("ckpt_flip"), lambda name, packed: 255 - packed if name == first else packed)
    _edit_masks(copy("ckpt_zero"), lambda name, packed: torch.zeros_like(packed))
    values = copy("ckpt_values_trunc", "ckpt_sgpt") / VALUES
    values.write_bytes(values.read_bytes()[:-1000])
    (copy("ckpt_no_values", "ckpt_sgpt") / VALUES).unlink()
    edited = copy("ckpt_manifest_edit") / MANIFEST
    doc = json.loads(edited.read_text())
    del doc["tensors"][first]
    edited.write_text(json.dumps(doc, indent=2))
    rehashed = copy("ckpt_zero_rehashed")  # zeroed masks with a manifest whose hashes were updated to match
    _edit_masks(rehashed, lambda name, packed: torch.zeros_like(packed))
    doc = json.loads((rehashed / MANIFEST).read_text())
    doc["files"][MASKS] = hashlib.sha256((rehashed / MASKS).read_bytes()).hexdigest()
    (rehashed / MANIFEST).write_text(json.dumps(doc, indent=2))
    (bad / "metrics_corrupt.json").write_text('{"records": [')
    (bad / "empty.csv").write_text("")
    (bad / "fake.tgz").write_text("not an archive")


def run(capsys, argv: list[str]) -> tuple[int, str]:
    capsys.readouterr()
    rc = main(argv)
    return rc, capsys.readouterr().err


def assert_one_error(rc: int, err: str, *words: str) -> str:
    """rc 2, one `langprune ...: error:` line that is the last line, no traceback, the words in it."""
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if ": error: " in line]
    assert rc == 2 and "Traceback" not in err, err
    assert len(errors) == 1 and lines[-1] == errors[0] and errors[0].startswith("langprune "), err
    for word in words:
        assert word in errors[0], (word, errors[0])
    return errors[0]


def _ppl(root: Path, *, model="llama", checkpoint=None, out="out/v.json", extra=()) -> list[str]:
    argv = ["evaluate", "perplexity", "--model", str(root / model), "--source", f"text:{root / 'text' / 'eval'}",
            "--languages", "de,en", "--seqlen", "32", "--max-tokens", "256", "--out", str(root / out), *extra]
    return argv + (["--checkpoint", str(root / checkpoint)] if checkpoint else [])


def _calibrate(root: Path, out: str, *extra: str) -> list[str]:
    return ["calibrate", "--tokenizer", str(root / "tok"), "--source", f"text:{root / 'text' / 'calib'}",
            "--languages", "de", "--nsamples", "4", "--seqlen", "32", "--packing", "concat", "--out",
            str(root / out), *extra]


def _prune(root: Path, out: str, *extra: str, model: str = "llama", calibration: str = "ok/shard.safetensors"):
    return ["prune", "--model", str(root / model), "--calibration", str(root / calibration), "--method", "wanda",
            "--sparsity", "0.5", "--out", str(root / out), *extra]


def _masks(root: Path, first: str) -> list[str]:
    outs = [f"--out-{kind}" for kind in ("table", "matrix", "layers", "types")]
    argv = ["analyze", "masks", str(root / first), str(root / "ok" / "ckpt_wanda")]
    for flag in outs:
        argv += [flag, str(root / "out" / f"a{flag}.csv")]
    return argv + ["--out-figure", str(root / "out" / "a.png")]


# --- damaged checkpoints: every reader refuses them (the audit's tracebacks and silent results) ---------------

INTEGRITY_CASES = {
    # id: (checkpoint, words in the error)
    "trunc_masks": ("bad/ckpt_trunc", ("masks.safetensors", "SHA-256", "--force")),
    "corrupt_manifest": ("bad/ckpt_badjson", ("manifest.json", "not valid JSON")),
    "flipped_masks": ("bad/ckpt_flip", ("masks.safetensors", "SHA-256")),
    "zero_masks": ("bad/ckpt_zero", ("masks.safetensors", "SHA-256")),
    "values_trunc": ("bad/ckpt_values_trunc", ("values.safetensors", "SHA-256")),
    "values_deleted": ("bad/ckpt_no_values", ("values.safetensors", "missing")),
    "manifest_tensor_removed": ("bad/ckpt_manifest_edit", ("disagree on the pruned tensors",)),
    "density_contradicts_manifest": ("bad/ckpt_zero_rehashed", ("keeps 0 weights but the manifest says",)),
}


@pytest.mark.parametrize("case", sorted(INTEGRITY_CASES))
@pytest.mark.parametrize("reader", ["evaluate", "export", "analyze_masks"])
def test_damaged_checkpoint_is_one_error_in_every_reader(fx, capsys, case, reader):
    """V07 V08 V09 V17 V18, E02 E06 E07 E08, A01: verified against the manifest before use."""
    ckpt, words = INTEGRITY_CASES[case]
    before = snapshot(fx / ckpt)
    argv = {"evaluate": _ppl(fx, checkpoint=ckpt, out=f"out/int_{case}.json"),
            "export": ["export", str(fx / ckpt), "--out", str(fx / "out" / f"int_{case}")],
            "analyze_masks": _masks(fx, ckpt)}[reader]
    rc, err = run(capsys, argv)
    assert_one_error(rc, err, *words)
    assert snapshot(fx / ckpt) == before
    assert not (fx / "out" / f"int_{case}.json").exists() and not (fx / "out" / f"int_{case}").exists()


def test_verify_reports_and_removes_broken_checkpoints(fx, tmp_path, capsys):
    """`langprune verify`: the documented way to make the workflow rebuild a damaged checkpoint."""
    broken = Path(shutil.copytree(fx / "bad" / "ckpt_flip", tmp_path / "flip"))
    good = str(fx / "ok" / "ckpt_sgpt")
    capsys.readouterr()
    assert main(["verify", good, str(broken)]) == 1
    out = capsys.readouterr()
    assert out.out == f"{broken}\n" and "SHA-256" in out.err and broken.is_dir()
    link = tmp_path / "link"  # a Snakemake cache entry: the link and what it points to go
    cached = Path(shutil.copytree(fx / "bad" / "ckpt_zero", tmp_path / "cache" / "entry"))
    link.symlink_to(cached)
    assert main(["verify", "--remove-broken", good, str(broken), str(link)]) == 0
    assert capsys.readouterr().out == f"{broken}\n{link}\n"
    assert not broken.exists() and not cached.exists() and not link.is_symlink()
    assert (fx / "ok" / "ckpt_sgpt" / MASKS).is_file()


# --- outputs: never destroy what is there --------------------------------------------------------------------

def _user_dir(root: Path, name: str) -> Path:
    path = root / "user" / name
    (path / "sub").mkdir(parents=True, exist_ok=True)
    (path / "notes.txt").write_text("my notes\n")
    (path / "sub" / "other.json").write_text('{"mine": true}\n')
    return path


OVERWRITE_CASES = {
    # id: (argv builder given the fixture root and the protected path, words in the error)
    "C15_calibrate_over_empty_dir": (lambda r, p: _calibrate(r, str(p)), ("not a calibration shard",)),
    "C15b_calibrate_over_user_dir": (lambda r, p: _calibrate(r, str(p)), ("not a calibration shard", "--force")),
    "V21_evaluate_over_user_dir": (lambda r, p: _ppl(r, out=str(p)), ("not a metrics JSON",)),
    "G06_gather_over_user_dir": (lambda r, p: ["evaluate", "gather", str(r / "ok" / "v00.json"), "--out", str(p)],
                                 ("not a metrics table",)),
    "P_prune_over_user_dir": (lambda r, p: _prune(r, str(p)), ("not a sparse checkpoint directory",)),
    "E_export_over_user_dir": (lambda r, p: ["export", str(r / "ok" / "ckpt_wanda"), "--out", str(p)],
                               ("not a model directory exported",)),
    "calibrate_over_other_file": (lambda r, p: _calibrate(r, str(p / "notes.txt")), ("not a calibration shard",)),
    "evaluate_over_a_shard": (lambda r, p: _ppl(r, out=str(r / "ok" / "shard.safetensors")), ("not a metrics JSON",)),
}


@pytest.mark.parametrize("case", sorted(OVERWRITE_CASES))
def test_out_that_is_not_our_artifact_is_refused(fx, capsys, case):
    build, words = OVERWRITE_CASES[case]
    target = fx / "user" / case
    if case.startswith("C15_"):
        target.mkdir(parents=True)
    else:
        _user_dir(fx, case)
    protected = [target, fx / "ok"]
    before = [snapshot(p) for p in protected]
    rc, err = run(capsys, build(fx, target))
    assert_one_error(rc, err, *words)
    assert [snapshot(p) for p in protected] == before


def test_force_replaces_a_user_path_but_never_an_input(fx, tmp_path, capsys):
    user = _user_dir(tmp_path, "d")
    assert main(_calibrate(fx, str(user), "--force")) == 0 and user.is_file()
    model = Path(shutil.copytree(fx / "llama", tmp_path / "llama_copy"))
    before = snapshot(model)
    for argv in (_prune(fx, str(model), "--force", model=str(model)),                       # P29
                 ["export", str(fx / "ok" / "ckpt_wanda"), "--model", str(model), "--out", str(model),  # E11
                  "--force"],
                 _calibrate(fx, str(fx / "text"), "--force"),
                 ["evaluate", "gather", str(fx / "ok" / "v00.json"), "--out", str(fx / "ok" / "v00.json"), "--force"]):
        rc, err = run(capsys, argv)
        assert_one_error(rc, err, "is or contains the input", "even with --force")
    assert snapshot(model) == before and (fx / "ok" / "v00.json").is_file()


def test_same_kind_is_replaced_but_extra_files_in_a_checkpoint_are_kept(fx, tmp_path, capsys):
    """C18/V22 stay overwrites by design; P28 (a checkpoint holding the user's notes) now needs --force."""
    shard = tmp_path / "exist.safetensors"
    shutil.copy(fx / "ok" / "shard.safetensors", shard)
    assert main(_calibrate(fx, str(shard))) == 0  # languages de, not the fixture's de,en: new bytes
    assert shard.read_bytes() != (fx / "ok" / "shard.safetensors").read_bytes()
    ckpt = Path(shutil.copytree(fx / "ok" / "ckpt_wanda", tmp_path / "p28"))
    (ckpt / "my_notes.txt").write_text("keep me\n")
    rc, err = run(capsys, _prune(fx, str(ckpt)))
    assert_one_error(rc, err, "not a sparse checkpoint directory", "my_notes.txt")
    assert (ckpt / "my_notes.txt").read_text() == "keep me\n"
    (ckpt / "my_notes.txt").unlink()
    assert main(_prune(fx, str(ckpt), "--tag", "run=2")) == 0
    assert json.loads((ckpt / MANIFEST).read_text())["tags"] == {"run": "2"}


def _fail_if_called(*args, **kwargs):
    raise AssertionError("the expensive work ran before the output was checked")


UNWRITABLE_CASES = {
    "R01_calibrate": lambda r, o: _calibrate(r, f"{o}/s.safetensors"),
    "R02_prune": lambda r, o: _prune(r, f"{o}/ckpt"),
    "R03_evaluate": lambda r, o: _ppl(r, checkpoint="ok/ckpt_wanda", out=f"{o}/m.json"),
    "R04_export": lambda r, o: ["export", str(r / "ok" / "ckpt_wanda"), "--out", str(r / o / "dense")],
    "R05_prune_parent_missing": lambda r, o: _prune(r, f"{o}/sub/ckpt"),
}


@pytest.mark.parametrize("how", ["parent_is_a_file", "read_only_dir"])
@pytest.mark.parametrize("case", sorted(UNWRITABLE_CASES))
def test_unwritable_out_fails_before_the_work(fx, tmp_path, capsys, monkeypatch, case, how):
    """R01-R05: a write that cannot succeed is found before pruning, evaluation or export run."""
    import langprune.checkpoint
    import langprune.evaluate.modelload
    import langprune.prune.engine

    monkeypatch.setattr(langprune.prune.engine, "prune_model", _fail_if_called)
    monkeypatch.setattr(langprune.evaluate.modelload, "load_evaluated_model", _fail_if_called)
    monkeypatch.setattr(langprune.checkpoint, "load_pruned_model", _fail_if_called)
    blocked = tmp_path / "ro"
    if how == "parent_is_a_file":
        blocked.write_text("a file where a folder is needed\n")
    else:
        if os.geteuid() == 0:
            pytest.skip("root ignores directory permissions")
        blocked.mkdir()
        blocked.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        rc, err = run(capsys, UNWRITABLE_CASES[case](fx, blocked))
    finally:
        if blocked.is_dir():
            blocked.chmod(0o755)
    assert_one_error(rc, err, "cannot write --out")


def test_free_space_is_checked_before_the_work(fx, tmp_path, capsys, monkeypatch):
    import collections

    import langprune.io
    import langprune.prune.engine

    monkeypatch.setattr(langprune.prune.engine, "prune_model", _fail_if_called)
    monkeypatch.setattr(langprune.io.shutil, "disk_usage",
                        lambda path: collections.namedtuple("usage", "total used free")(10, 10, 0))
    rc, err = run(capsys, _prune(fx, str(tmp_path / "ckpt")))
    assert_one_error(rc, err, "MB free")


# --- the remaining tracebacks and silent results -------------------------------------------------------------

OTHER_CASES = {
    # id: (argv builder, words)
    "V20_batch_0": (lambda r: _ppl(r, extra=["--batch-size", "0"]), ("--batch-size",)),
    "G01_gather_missing": (lambda r: ["evaluate", "gather", str(r / "out" / "nope.json"), "--out",
                                      str(r / "out" / "g01.csv")], ("does not exist",)),
    "G02_gather_corrupt": (lambda r: ["evaluate", "gather", str(r / "bad" / "metrics_corrupt.json"), "--out",
                                      str(r / "out" / "g02.csv")], ("not valid JSON",)),
    "G05_gather_duplicate": (lambda r: ["evaluate", "gather", str(r / "ok" / "v00.json"), str(r / "ok" / "v00.json"),
                                        "--out", str(r / "out" / "g05.csv")], ("given twice",)),
    "RP03_tables_empty_csv": (lambda r: ["report", "tables", "--metrics", str(r / "bad" / "empty.csv"), "--out-dir",
                                         str(r / "out" / "rp03")], ("not a readable CSV",)),
    "Y01_toy_corpus_missing_archive": (lambda r: ["toy", "corpus", "--archive", str(r / "nonexistent.tgz"),
                                                  "--languages", "de", "--out", str(r / "out" / "y01")],
                                       ("does not exist", "toy fetch")),
    "Y04_toy_model_steps_0": (lambda r: ["toy", "model", "--tokenizer", str(r / "tok"), "--text",
                                         str(r / "text" / "calib"), "--steps", "0", "--hidden", "16", "--layers", "1",
                                         "--heads", "2", "--kv-heads", "1", "--intermediate", "16", "--out",
                                         str(r / "out" / "y04")], ("--steps",)),
    "Y06_toy_model_bad_heads": (lambda r: ["toy", "model", "--tokenizer", str(r / "tok"), "--text",
                                           str(r / "text" / "calib"), "--steps", "1", "--hidden", "30", "--layers",
                                           "1", "--heads", "4", "--kv-heads", "3", "--intermediate", "16", "--out",
                                           str(r / "out" / "y06")], ("--hidden 30", "--heads 4")),
    "P25_windows_longer_than_positions": (lambda r: _prune(r, "out/p25", calibration="bad/long_seq.safetensors"),
                                          ("600 tokens", "512 positions")),
    "C_window_longer_than_positions": (
        lambda r: ["calibrate", "--tokenizer", str(r / "llama"), "--source", f"text:{r / 'text' / 'calib'}",
                   "--languages", "de", "--nsamples", "1", "--seqlen", "600", "--packing", "concat", "--out",
                   str(r / "out" / "c_long.safetensors")], ("--seqlen 600", "512 positions")),
}


@pytest.mark.parametrize("case", sorted(OTHER_CASES))
def test_other_audit_cases_are_one_error(fx, capsys, case):
    build, words = OTHER_CASES[case]
    inputs = [fx / "ok", fx / "bad"]
    before = [snapshot(p) for p in inputs]
    rc, err = run(capsys, build(fx))
    assert_one_error(rc, err, *words)
    assert [snapshot(p) for p in inputs] == before


def test_calibrate_warns_when_the_model_length_is_unknown(fx, tmp_path, capsys):
    rc, err = run(capsys, _calibrate(fx, str(tmp_path / "s.safetensors")))
    assert rc == 0 and "warning: cannot tell the maximum positions" in err


@pytest.mark.parametrize("in_place", [False, True])
def test_swapped_base_weights_with_the_old_mtime_are_refused(fx, tmp_path, capsys, in_place):
    """H02: the hash cache keys on inode, ctime and sampled content too, so `touch -r` cannot fool it."""
    base = Path(shutil.copytree(fx / "llama", tmp_path / "base3"))
    assert main(_prune(fx, str(tmp_path / "h01"), model=str(base))) == 0
    weights = base / "model.safetensors"
    old = weights.stat()
    other = (fx / "llama_other" / "model.safetensors").read_bytes()
    assert len(other) == old.st_size
    if in_place:
        with open(weights, "r+b") as f:
            f.write(other)
    else:
        (base / "m.new").write_bytes(other)
        os.replace(base / "m.new", weights)
    os.utime(weights, ns=(old.st_atime_ns, old.st_mtime_ns))
    rc, err = run(capsys, _ppl(fx, model=str(base), checkpoint=str(tmp_path / "h01"),
                               out=str(tmp_path / "h02.json")))
    assert_one_error(rc, err, "does not match the checkpoint")


# --- permissions: every artifact honours the umask -----------------------------------------------------------

@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_artifacts_honour_the_umask(fx, tmp_path, umask):
    old = os.umask(umask)
    try:
        out = tmp_path / "out"
        assert main(_calibrate(fx, str(out / "s.safetensors"))) == 0
        assert main(_prune(fx, str(out / "ckpt"), calibration=str(out / "s.safetensors"))) == 0
        assert main(["export", str(out / "ckpt"), "--out", str(out / "dense")]) == 0
        assert main(_ppl(fx, checkpoint=str(out / "ckpt"), out=str(out / "m.json"))) == 0
    finally:
        os.umask(old)
    paths = [p for p in out.rglob("*")]
    assert len(paths) > 8
    for path in paths:
        expected = (0o777 if path.is_dir() else 0o666) & ~umask
        assert stat.S_IMODE(path.stat().st_mode) == expected, (path, oct(path.stat().st_mode), oct(expected))
