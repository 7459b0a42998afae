"""`langprune prune` with RIA, DSnoT and OWL allocation: manifests record every hyperparameter and the
command line; every setting the registry declares is a flag refused at parse time or before the model loads."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch
from safetensors.torch import save_file

from langprune import registry
from langprune.checkpoint import read_manifest
from langprune.cli import main
from langprune.owl_ratios import content_hash
from langprune.ranges import POSITIVE


def run_cli(argv: list[str]) -> int:
    """``main``'s exit status, whether the error came from argparse (SystemExit) or from the command."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


def one_error(capsys) -> str:
    """The one `langprune prune: error:` line of stderr (the usage lines argparse prints are not errors)."""
    errors = [line for line in capsys.readouterr().err.splitlines() if ": error: " in line]
    assert len(errors) == 1 and errors[0].startswith("langprune "), errors
    return errors[0]


@pytest.fixture
def no_model_load(monkeypatch):
    """Loading model weights fails the test: what it guards must be refused before any model loads."""
    from transformers import AutoModelForCausalLM

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the bad setting was refused")

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", refuse)


pytestmark = pytest.mark.usefixtures("private_hash_cache")


@pytest.fixture(scope="module")
def shard(tmp_path_factory):
    path = tmp_path_factory.mktemp("shard") / "calib.safetensors"
    ids = torch.randint(3, 320, (4, 32), generator=torch.Generator().manual_seed(0))
    save_file({"input_ids": ids}, str(path), metadata={"langprune": json.dumps({"languages": ["de"]})})
    return path


def test_ria_with_owl_allocation_records_its_settings(tmp_path, tiny_llama_dir, shard):
    ckpt = tmp_path / "ria"
    assert main(["prune", "--model", str(tiny_llama_dir), "--calibration", str(shard), "--method", "ria",
                 "--sparsity", "0.6", "--allocation", "owl", "--owl-lambda", "0.05", "--ria-a", "0.7",
                 "--out", str(ckpt), "--batch-size", "2"]) == 0
    manifest = read_manifest(ckpt)
    assert manifest["method"] == "ria" and manifest["method_params"] == {"a": 0.7, "per_outneuron": False}
    owl = manifest["allocation"]
    assert owl["name"] == "owl" and owl["M"] == 5.0 and owl["lambda"] == 0.05 and len(owl["outlier_ratios"]) == 2
    assert sum(owl["layer_sparsity"]) / 2 == pytest.approx(0.6)
    for layer, target in zip(manifest["layers"], owl["layer_sparsity"]):
        assert layer["sparsity"] == pytest.approx(target, abs=2e-3)


def test_dsnot_records_its_defaults_and_overrides(tmp_path, tiny_llama_dir, shard):
    ckpt = tmp_path / "dsnot"
    assert main(["prune", "--model", str(tiny_llama_dir), "--calibration", str(shard), "--method", "dsnot",
                 "--sparsity", "0.5", "--dsnot-max-cycles", "5", "--out", str(ckpt)]) == 0
    manifest = read_manifest(ckpt)
    assert manifest["method_params"] == {"initial": "wanda", "max_cycles": 5, "update_threshold": 0.1,
                                         "pow_of_var_regrowing": 1.0, "skip": "mlp"}
    assert manifest["allocation"] == {"name": "uniform"}


@pytest.mark.parametrize("extra,message", [
    (["--method", "wanda", "--sparsity", "0.5", "--ria-a", "1"], "--ria-a applies to --method ria"),
    (["--method", "wanda", "--structure", "2:4", "--allocation", "owl"], "needs unstructured sparsity"),
    (["--method", "magnitude", "--sparsity", "0.5", "--allocation", "owl", "--no-calibration"],
     "--allocation owl needs --calibration"),
    (["--method", "wanda", "--sparsity", "0.95", "--allocation", "owl", "--owl-lambda", "0.1"], "must stay below 1"),
    (["--method", "dsnot", "--sparsity", "0.5", "--dsnot-initial", "sparsegpt"],
     "--dsnot-initial: invalid choice: 'sparsegpt'"),
    (["--method", "dsnot", "--structure", "2:4"], "unstructured masks only"),
])
def test_bad_method_settings_are_one_line_errors(tmp_path, tiny_llama_dir, shard, capsys, extra, message):
    calibration = [] if "--no-calibration" in extra else ["--calibration", str(shard)]
    extra = [e for e in extra if e != "--no-calibration"]
    rc = run_cli(["prune", "--model", str(tiny_llama_dir), "--out", str(tmp_path / "ckpt"), *calibration, *extra])
    assert rc == 2 and re.search(message, one_error(capsys))
    assert not (tmp_path / "ckpt").exists()


def _refused_numbers():
    """(subcommand, flag, value) for every numeric setting the registry declares and each value outside its range."""
    declared = [("prune", param) for spec in registry.METHODS.values() for param in spec.params]
    declared += [("prune", param) for spec in registry.ALLOCATIONS.values() for param in spec.all_params]
    declared += [("owl-ratios", param) for param in registry.allocation("owl").params]
    for command, param in declared:
        if param.range is None:
            continue
        for value in ["nan", "inf", "-inf", "-1", "0", "0.5", "1e9", "x"]:
            try:
                number = param.range.kind(value)  # what argparse's type= parses first
            except ValueError:
                number = None
            if number is None or not param.range.allows(number):
                yield pytest.param(command, param.flag, value, param.range.describe(),
                                   id=f"{command} {param.flag} {value}")


@pytest.mark.parametrize("command,flag,value,allowed", list(_refused_numbers()))
def test_every_declared_number_is_checked_at_parse_time(tmp_path, capsys, no_model_load, command, flag, value,
                                                        allowed):
    """NaN, infinities and values outside the declared range end at argparse, naming the flag and the range."""
    argv = ["prune", "--model", "m", "--method", "wanda", "--sparsity", "0.5", "--out", str(tmp_path / "c")]
    if command == "owl-ratios":
        argv = ["owl-ratios", "--model", "m", "--calibration", "s", "--out", str(tmp_path / "r.json")]
    assert run_cli([*argv, f"{flag}={value}"]) == 2  # "=": argparse reads a bare -inf as an option
    line = one_error(capsys)
    assert f"argument {flag}: '{value}' is not {allowed}" in line, line
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("flag,value", [("--sparsity", "nan"), ("--sparsity", "1"), ("--batch-size", "0"),
                                        ("--batch-size", "8.0"), ("--seed", "-1"), ("--seed", "nan")])
def test_run_settings_are_checked_at_parse_time(tmp_path, capsys, flag, value):
    argv = ["prune", "--model", "m", "--method", "wanda", "--sparsity", "0.5", "--out", str(tmp_path / "c")]
    assert run_cli([*argv, f"{flag}={value}"]) == 2  # "=": argparse reads a bare -inf as an option
    assert f"argument {flag}: '{value}' is not " in one_error(capsys)


def test_help_is_generated_from_the_registry(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100000")  # no wrapping inside the texts compared
    with pytest.raises(SystemExit):
        main(["prune", "--help"])
    text = capsys.readouterr().out
    for spec in [*registry.METHODS.values(), *registry.ALLOCATIONS.values()]:
        assert spec.summary in text, spec.name
        params = spec.all_params if isinstance(spec, registry.AllocationSpec) else spec.params
        for param in params:
            assert param.flag in text
            if param.kind is not bool:
                assert f"(default {param.default}; {param.describe()})" in text, param.flag


def test_a_flag_of_another_allocation_is_an_error(tmp_path, tiny_llama_dir, shard, capsys, no_model_load):
    rc = run_cli(["prune", "--model", str(tiny_llama_dir), "--calibration", str(shard), "--method", "wanda",
                  "--sparsity", "0.5", "--allocation", "cwl", "--owl-lambda", "0.05", "--out", str(tmp_path / "c")])
    assert rc == 2 and "--owl-lambda applies to --allocation owl, not --allocation cwl" in one_error(capsys)


@pytest.fixture(scope="module")
def owl_files(tmp_path_factory, tiny_llama_dir, shard):
    """A good OWL-ratios file, broken copies of it (edited, letters, negative, old format), a foreign shard."""
    root = tmp_path_factory.mktemp("owl")
    ratios = root / "RATIOS.json"
    assert main(["owl-ratios", "--model", str(tiny_llama_dir), "--calibration", str(shard), "--out", str(ratios),
                 "--batch-size", "2"]) == 0
    record = json.loads(ratios.read_text())
    variants = {"EDITED": {**record, "outlier_ratios": [record["outlier_ratios"][0], 0.0]}}
    for name, values in [("LETTERS", ["a", "b"]), ("NEGATIVE", [-3.0, 7.0])]:  # with a matching hash
        edited = {**record, "outlier_ratios": values}
        variants[name] = {**edited, "sha256": content_hash(edited)}
    variants["UNHASHED"] = {**{k: v for k, v in record.items() if k != "sha256"}, "format": 1}
    paths = {"RATIOS": ratios, "OOV": root / "oov.safetensors"}
    for name, content in variants.items():
        paths[name] = root / f"{name}.json"
        paths[name].write_text(json.dumps(content))
    save_file({"input_ids": torch.full((2, 8), 999)}, str(paths["OOV"]))  # not this model's tokens
    return paths


@pytest.mark.parametrize("case,extra,message", [
    ("infeasible", ["--method", "wanda", "--sparsity", "0.95", "--allocation", "owl", "--owl-lambda", "0.2"],
     "must stay below 1"),
    ("infeasible with ratios", ["--method", "wanda", "--sparsity", "0.95", "--allocation", "owl", "--owl-lambda",
                                "0.2", "--owl-ratios", "RATIOS"], "must stay below 1"),
    ("cwl infeasible", ["--method", "wanda", "--sparsity", "0.9", "--allocation", "cwl", "--cwl-lambda", "0.1"],
     "must stay below 1"),
    ("dsnot 2:4", ["--method", "dsnot", "--structure", "2:4"], "unstructured masks only"),
    ("dsnot skip", ["--method", "dsnot", "--sparsity", "0.5", "--dsnot-skip", "nonexistent"],
     "--dsnot-skip 'nonexistent' names no module inside the decoder layers .* mlp, .*self_attn"),
    ("ratios edited", ["--method", "wanda", "--sparsity", "0.5", "--allocation", "owl", "--owl-ratios", "EDITED"],
     "does not match the SHA-256 it records"),
    ("ratios not numbers", ["--method", "wanda", "--sparsity", "0.5", "--allocation", "owl", "--owl-ratios",
                            "LETTERS"], r"finite percentages in \[0, 100\], not \['a', 'b'\]"),
    ("ratios negative", ["--method", "wanda", "--sparsity", "0.5", "--allocation", "owl", "--owl-ratios",
                         "NEGATIVE"], r"not \[-3\.0\]"),
    ("ratios old format", ["--method", "wanda", "--sparsity", "0.5", "--allocation", "owl", "--owl-ratios",
                           "UNHASHED"], "is not an OWL ratios file of format 2"),
    ("foreign shard", ["--method", "wanda", "--sparsity", "0.5", "--calibration", "OOV"], r"outside \[0, 320\)"),
])
def test_refused_before_the_model_loads(tmp_path, tiny_llama_dir, shard, owl_files, capsys, no_model_load, case,
                                        extra, message):
    """Settings that used to be refused only after the model load (or OWL's dense pass), or never."""
    extra = [str(owl_files[e]) if e in owl_files else e for e in extra]
    rc = run_cli(["prune", "--model", str(tiny_llama_dir), "--calibration", str(shard), "--out",
                  str(tmp_path / "c"), *extra])
    assert rc == 2 and re.search(message, one_error(capsys))
    assert not (tmp_path / "c").exists()


def test_dsnot_skip_takes_the_models_module_names(tmp_path, tiny_llama_dir, shard):
    common = ["prune", "--model", str(tiny_llama_dir), "--calibration", str(shard), "--method", "dsnot",
              "--sparsity", "0.5", "--dsnot-max-cycles", "3", "--batch-size", "2"]
    for skip in ("self_attn", "none"):
        assert main([*common, "--dsnot-skip", skip, "--out", str(tmp_path / skip)]) == 0
        assert read_manifest(tmp_path / skip)["method_params"]["skip"] == skip


def test_the_manifest_records_the_command_line(tmp_path, tiny_llama_dir, shard):
    argv = ["prune", "--model", str(tiny_llama_dir), "--calibration", str(shard), "--method", "ria", "--sparsity",
            "0.5", "--ria-a", "0.25", "--allocation", "owl", "--owl-m", "4", "--out", str(tmp_path / "c"),
            "--batch-size", "2"]
    assert main(argv) == 0
    manifest = read_manifest(tmp_path / "c")
    assert manifest["command"] == ["langprune", *argv]
    assert manifest["method_params"]["a"] == 0.25 and manifest["allocation"]["M"] == 4.0
    assert all(math.isfinite(r) for r in manifest["allocation"]["outlier_ratios"])


def test_cached_owl_ratios_give_the_in_process_masks(tmp_path, tiny_llama_dir, shard):
    """`langprune owl-ratios` once, then any number of OWL runs without their dense pass: same checkpoint."""
    ratios = tmp_path / "ratios.json"
    assert main(["owl-ratios", "--model", str(tiny_llama_dir), "--calibration", str(shard), "--out", str(ratios),
                 "--batch-size", "2"]) == 0
    record = json.loads(ratios.read_text())
    assert record["kind"] == "owl-ratios" and record["M"] == 5.0 and len(record["outlier_ratios"]) == 2
    assert record["format"] == 2 and record["sha256"] == content_hash(record)
    common = ["prune", "--model", str(tiny_llama_dir), "--calibration", str(shard), "--method", "wanda",
              "--sparsity", "0.6", "--allocation", "owl", "--owl-lambda", "0.05", "--batch-size", "2"]
    assert main([*common, "--out", str(tmp_path / "here")]) == 0
    assert main([*common, "--owl-ratios", str(ratios), "--out", str(tmp_path / "cached")]) == 0
    here, cached = read_manifest(tmp_path / "here"), read_manifest(tmp_path / "cached")
    assert cached["allocation"]["outlier_ratios"] == here["allocation"]["outlier_ratios"]
    assert cached["allocation"]["layer_sparsity"] == here["allocation"]["layer_sparsity"]
    assert cached["files"]["masks.safetensors"] == here["files"]["masks.safetensors"]
    assert cached["allocation"]["seconds"] == 0.0 and "ratios_file" not in here["allocation"]
    assert cached["allocation"]["ratios_file"]["path"] == str(ratios)


def test_stale_or_misplaced_owl_ratios_are_refused(tmp_path, tiny_llama_dir, shard, capsys):
    ratios = tmp_path / "ratios.json"
    assert main(["owl-ratios", "--model", str(tiny_llama_dir), "--calibration", str(shard), "--out", str(ratios)]) == 0
    other = tmp_path / "other.safetensors"
    save_file({"input_ids": torch.randint(3, 320, (4, 32), generator=torch.Generator().manual_seed(9))}, str(other))
    base = ["prune", "--model", str(tiny_llama_dir), "--method", "wanda", "--sparsity", "0.5",
            "--owl-ratios", str(ratios), "--out", str(tmp_path / "c")]
    for extra, message in [
        (["--calibration", str(other), "--allocation", "owl"], "computed for another calibration shard"),
        (["--calibration", str(shard), "--allocation", "owl", "--owl-m", "3"], "computed for another M"),
        (["--calibration", str(shard)], "--owl-ratios applies to --allocation owl"),
    ]:
        assert main([*base, *extra]) == 2
        errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
        assert len(errors) == 1 and errors[0].startswith("langprune prune: error: ") and message in errors[0], errors
        assert "computed for" not in message or "recompute it with `langprune owl-ratios`" in errors[0]
        assert not (tmp_path / "c").exists()


def scaled_magnitude(weight, stats, structure, *, scale):
    """A method for a test registry: magnitude of the weights times ``scale`` (the same mask)."""
    from langprune.prune.methods import magnitude

    return magnitude(weight * scale, stats, structure)


def test_a_method_is_one_registry_entry_and_one_function(tmp_path, tiny_llama_dir, capsys, monkeypatch):
    """Registered in a temporary registry, a new method gets its flag, its range check and its manifest."""
    scale = registry.Param("scale", "--scaled-scale", 1.0, "factor on |W|", range=POSITIVE)
    spec = registry.MethodSpec("scaled", f"{__name__}:scaled_magnitude", "magnitude, scaled", params=(scale,))
    monkeypatch.setattr(registry, "METHODS", {**registry.METHODS, "scaled": spec})
    argv = ["prune", "--model", str(tiny_llama_dir), "--method", "scaled", "--sparsity", "0.5"]
    assert run_cli([*argv, "--scaled-scale=nan", "--out", str(tmp_path / "bad")]) == 2
    assert "argument --scaled-scale: 'nan' is not a number > 0" in one_error(capsys)
    assert main([*argv, "--scaled-scale", "3", "--out", str(tmp_path / "scaled")]) == 0
    assert main(["prune", "--model", str(tiny_llama_dir), "--method", "magnitude", "--sparsity", "0.5",
                 "--out", str(tmp_path / "magnitude")]) == 0
    scaled, plain = read_manifest(tmp_path / "scaled"), read_manifest(tmp_path / "magnitude")
    assert scaled["method"] == "scaled" and scaled["method_params"] == {"scale": 3.0}
    assert scaled["files"]["masks.safetensors"] == plain["files"]["masks.safetensors"]
