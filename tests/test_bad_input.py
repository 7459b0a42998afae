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

from conftest import build_model, snapshot
from langprune.checkpoint import MANIFEST, MASKS, VALUES
from langprune.cli import main

pytestmark = pytest.mark.usefixtures("private_hash_cache")


@pytest.fixture(scope="module")
def fx(tmp_path_factory, tiny_tokenizer_dir, tiny_llama_dir, text_splits) -> Path:
    """The audit's fixture directory: tokenizer, models, text, a shard, two checkpoints and broken copies."""
    root = tmp_path_factory.mktemp("audit")
    outer_cache = os.environ.get("LANGPRUNE_CACHE")
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
    if outer_cache is None:
        del os.environ["LANGPRUNE_CACHE"]
    else:
        os.environ["LANGPRUNE_CACHE"] = outer_cache
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
    del doc["manifest_sha256"]  # as in a manifest of an earlier version, which had no digest of itself
    edited.write_text(json.dumps(doc, indent=2))
    rehashed = copy("ckpt_zero_rehashed")  # zeroed masks with a manifest whose hashes were updated to match
    _edit_masks(rehashed, lambda name, packed: torch.zeros_like(packed))
    doc = json.loads((rehashed / MANIFEST).read_text())
    doc["files"][MASKS] = hashlib.sha256((rehashed / MASKS).read_bytes()).hexdigest()
    (rehashed / MANIFEST).write_text(json.dumps(doc, indent=2))
    save_file({"x": torch.zeros(2, 8, dtype=torch.int64)}, str(bad / "noids.safetensors"))
    save_file({"input_ids": torch.zeros(2, 8)}, str(bad / "float_ids.safetensors"))
    save_file({"input_ids": torch.full((2, 8), 10000)}, str(bad / "oov_ids.safetensors"))
    save_file({"input_ids": torch.full((2, 8), -1)}, str(bad / "neg_ids.safetensors"))
    save_file({"input_ids": torch.zeros(0, 16, dtype=torch.int64)}, str(bad / "empty_ids.safetensors"))
    (bad / "not_metrics.json").write_text('{"model": "x"}\n')
    (bad / "wrongcols.csv").write_text("a,b\n1,2\n")
    (bad / "metrics_corrupt.json").write_text('{"records": [')
    (bad / "empty.csv").write_text("")
    (bad / "fake.tgz").write_text("not an archive")


def run(capsys, argv: list[str]) -> tuple[int, str]:
    """Exit status and stderr, whether the error came from the command or from argparse (a flag's type)."""
    capsys.readouterr()
    try:
        rc = main(argv)
    except SystemExit as exc:
        rc = exc.code
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
        assert_one_error(rc, err, "the input", "even with --force")
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
    import langprune.prune.run

    # Patched where they are called (each module binds them at import).
    monkeypatch.setattr(langprune.prune.run, "prune_model", _fail_if_called)
    monkeypatch.setattr(langprune.checkpoint, "load_pruned_model", _fail_if_called)
    monkeypatch.setattr(langprune.evaluate.modelload, "load_pruned_model", _fail_if_called)
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
    import langprune.prune.run

    monkeypatch.setattr(langprune.prune.run, "prune_model", _fail_if_called)
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


def _cal(r: Path, *extra: str, source: str = "text/calib", languages: str = "de") -> list[str]:
    return ["calibrate", "--tokenizer", str(r / "tok"), "--source", f"text:{r / source}", "--languages", languages,
            "--nsamples", "4", "--seqlen", "32", "--packing", "concat", "--out", str(r / "out" / "c.safetensors"),
            *extra]


def _pr(r: Path, *extra: str, calibration: str = "ok/shard.safetensors") -> list[str]:
    return ["prune", "--model", str(r / "llama"), "--calibration", str(r / calibration), "--method", "wanda",
            "--sparsity", "0.5", "--out", str(r / "out" / "p"), *extra]


def _pp(r: Path, *extra: str, source: str = "text/eval", languages: str = "de,en") -> list[str]:
    return ["evaluate", "perplexity", "--model", str(r / "llama"), "--source", f"text:{r / source}", "--languages",
            languages, "--seqlen", "32", "--max-tokens", "256", "--out", str(r / "out" / "v.json"), *extra]


# The audit's cases that were already one clear line; kept here so they stay that way.
CLEAR_CASES = {
    "C01_missing_tokenizer": (lambda r: _cal(r)[:2] + ["/nonexistent/tok"] + _cal(r)[3:], "cannot load"),
    "C02_missing_textdir": (lambda r: _cal(r, source="/nonexistent"), "is not a directory"),
    "C03_empty_textdir": (lambda r: _cal(r, source="text_empty"), "not found in"),
    "C05_too_little_text": (lambda r: _cal(r, "--nsamples", "1000", "--seqlen", "512"), "add text"),
    "C07_tiny_text": (lambda r: _cal(r, source="text_tiny"), "lower --nsamples or --seqlen"),
    "C08_lang_not_in_dir": (lambda r: _cal(r, languages="xx"), "language(s) xx not found"),
    "C09_nsamples_0": (lambda r: _cal(r, "--nsamples", "0"), "--nsamples: '0' is not an integer >= 1"),
    "C11_seqlen_0": (lambda r: _cal(r, "--seqlen", "0"), "--seqlen: '0' is not an integer >= 2"),
    "C12_weights_mismatch": (lambda r: _cal(r, "--weights", "1", languages="de,en"), "--weights has 1 values"),
    "C16_source_not_text": (lambda r: _cal(r)[:4] + ["file:x"] + _cal(r)[5:], "must be 'mc4' or 'text:DIR'"),
    "C17_languages_dup": (lambda r: _cal(r, languages="de,de"), "more than once"),
    "P02_missing_calib": (lambda r: _pr(r, calibration="out/nope.safetensors"), "does not exist"),
    "P03_calib_not_safetensors": (lambda r: _pr(r, calibration="bad/notsafe.safetensors"), "not a safetensors"),
    "P04_calib_no_input_ids": (lambda r: _pr(r, calibration="bad/noids.safetensors"), "no tensor 'input_ids'"),
    "P05_calib_float_ids": (lambda r: _pr(r, calibration="bad/float_ids.safetensors"), "must be a non-empty int64"),
    "P06_calib_oov_ids": (lambda r: _pr(r, calibration="bad/oov_ids.safetensors"), "outside [0, 320)"),
    "P08_calib_neg_ids": (lambda r: _pr(r, calibration="bad/neg_ids.safetensors"), "outside [0, 320)"),
    "P09_calib_empty": (lambda r: _pr(r, calibration="bad/empty_ids.safetensors"), "must be a non-empty int64"),
    "P10_method_wand": (lambda r: _pr(r)[:6] + ["wand"] + _pr(r)[7:], "--method: invalid choice: 'wand'"),
    "P11_sparsity_0": (lambda r: _pr(r)[:8] + ["0"] + _pr(r)[9:], "--sparsity: '0' is not a number in (0, 1)"),
    "P14_sparsity_nan": (lambda r: _pr(r)[:8] + ["nan"] + _pr(r)[9:], "--sparsity: 'nan' is not a number in (0, 1)"),
    "P15_structure_3:2": (lambda r: _pr(r, "--structure", "3:2"), "needs 0 < N < M"),
    "P17_structure_conflict": (lambda r: _pr(r)[:8] + ["0.7"] + _pr(r)[9:] + ["--structure", "2:4"], "contradicts"),
    "P18_structure_garbage": (lambda r: _pr(r, "--structure", "semi"), "is not 'unstructured' or N:M"),
    "P19_no_calib_for_wanda": (lambda r: _pr(r)[:3] + _pr(r)[5:], "needs --calibration"),
    "P20_device_cuda_or_bad": (lambda r: _pr(r, "--device", "tpu"), "--device 'tpu'"),
    "P21_batch_0": (lambda r: _pr(r, "--batch-size", "0"), "--batch-size: '0' is not an integer >= 1"),
    "P22_dtype_float64": (lambda r: _pr(r, "--dtype", "float64"), "--dtype 'float64'"),
    "P24_model_is_checkpoint": (lambda r: _pr(r)[:2] + [str(r / "ok" / "ckpt_wanda")] + _pr(r)[3:],
                                "cannot load a model"),
    "E01_missing_ckpt": (lambda r: ["export", str(r / "out" / "nope"), "--out", str(r / "out" / "e")],
                         "manifest.json is missing"),
    "E04_no_manifest": (lambda r: ["export", str(r / "bad" / "ckpt_nomanifest"), "--out", str(r / "out" / "e")],
                        "manifest.json is missing"),
    "E05_other_base": (lambda r: ["export", str(r / "ok" / "ckpt_wanda"), "--model", str(r / "llama_other"), "--out",
                                  str(r / "out" / "e")], "does not match the checkpoint"),
    "V01_max_tokens_0": (lambda r: _pp(r)[:-2] + ["--max-tokens", "0"] + _pp(r)[-2:], "--max-tokens: '0' is not"),
    "V02_max_tokens_lt_seqlen": (lambda r: _pp(r)[:-2] + ["--max-tokens", "16"] + _pp(r)[-2:],
                                 "--max-tokens >= --seqlen"),
    "V04_seqlen_0": (lambda r: _pp(r, "--seqlen", "0"), "--seqlen: '0' is not an integer >= 2"),
    "V06_other_base": (lambda r: _pp(r, "--checkpoint", str(r / "ok" / "ckpt_wanda"))[:2] + ["--model",
                       str(r / "llama_other")] + _pp(r, "--checkpoint", str(r / "ok" / "ckpt_wanda"))[4:],
                       "does not match the checkpoint"),
    "V10_lang_missing": (lambda r: _pp(r, languages="xx"), "language(s) xx not found"),
    "V11_empty_source": (lambda r: _pp(r, source="text_empty", languages="de"), "not found in"),
    "V12_tiny_source": (lambda r: _pp(r, source="text_tiny", languages="de"), "add text or lower --seqlen"),
    "V14_missing_ckpt": (lambda r: _pp(r, "--checkpoint", str(r / "out" / "none_ckpt")), "manifest.json is missing"),
    "V15_bad_tag": (lambda r: _pp(r, "--tag", "novalue"), "must look like KEY=VALUE"),
    "V16_overlap_shard_missing": (lambda r: _pp(r, "--calibration", str(r / "out" / "none.safetensors")),
                                  "does not exist"),
    "T01_unknown_task": (lambda r: ["evaluate", "tasks", "--model", str(r / "llama"), "--tasks", "arcc",
                                    "--languages", "de", "--out", str(r / "out" / "t.json")], "unknown benchmark"),
    "T04_limit_0": (lambda r: ["evaluate", "tasks", "--model", str(r / "llama"), "--tasks", "udhr_mc", "--languages",
                               "de", "--limit", "0", "--out", str(r / "out" / "t.json")], "--limit: '0' is not"),
    "M01_mc_n_items_0": (lambda r: ["evaluate", "make-mc", "--source", f"text:{r / 'text' / 'eval'}", "--languages",
                                    "de", "--n-items", "0", "--out", str(r / "out" / "mc")], "--n-items: '0' is not"),
    "G03_gather_not_metrics": (lambda r: ["evaluate", "gather", str(r / "bad" / "not_metrics.json"), "--out",
                                          str(r / "out" / "g.csv")], "not a langprune metrics JSON"),
    "RP01_tables_missing": (lambda r: ["report", "tables", "--metrics", str(r / "out" / "nope.csv"), "--out-dir",
                                       str(r / "out" / "rp")], "does not exist"),
    "RP02_tables_wrong_cols": (lambda r: ["report", "tables", "--metrics", str(r / "bad" / "wrongcols.csv"),
                                          "--out-dir", str(r / "out" / "rp")], "lacks column(s)"),
    "RP04_figures_wrong_cols": (lambda r: ["report", "figures", "--metrics", str(r / "bad" / "wrongcols.csv"),
                                           "--out-dir", str(r / "out" / "rp")], "lacks column(s)"),
    "A02_masks_badjson": (lambda r: _masks(r, "bad/ckpt_badjson"), "not valid JSON"),
    "A03_hidden_missing_probe": (lambda r: ["analyze", "hidden", "--model", str(r / "llama"), "--probe",
                                            "text:/nonexistent", "--languages", "de", "--out",
                                            str(r / "out" / "h.safetensors")], "--probe"),
    "A04_hidden_without_reference": (lambda r: ["analyze", "hidden", "--model", str(r / "llama"), "--checkpoint",
                                                str(r / "ok" / "ckpt_wanda"), "--probe", f"text:{r / 'text' / 'eval'}",
                                                "--languages", "de", "--out", str(r / "out" / "h.safetensors")],
                                     "need --reference"),
    "Y02_toy_corpus_corrupt_archive": (lambda r: ["toy", "corpus", "--archive", str(r / "bad" / "fake.tgz"),
                                                  "--languages", "de", "--out", str(r / "out" / "y")], "SHA-256"),
    "Y03_toy_corpus_lang_fr": (lambda r: ["toy", "corpus", "--archive", str(r / "bad" / "fake.tgz"), "--languages",
                                          "fr", "--out", str(r / "out" / "y")], "no UDHR text known for fr"),
    "Y05_toy_tokenizer_empty": (lambda r: ["toy", "tokenizer", "--text", str(r / "text_empty"), "--out",
                                           str(r / "out" / "y")], "no <lang>.txt files"),
}


@pytest.mark.parametrize("case", sorted(CLEAR_CASES))
def test_clear_audit_cases_stay_one_error(fx, capsys, case):
    build, words = CLEAR_CASES[case]
    before = [snapshot(fx / "ok"), snapshot(fx / "bad")]
    rc, err = run(capsys, build(fx))
    assert_one_error(rc, err, words)
    assert [snapshot(fx / "ok"), snapshot(fx / "bad")] == before


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
