"""The adversarial audit's 47 broken configs (tests/data/audit_configs/, one change each to
config/config.yaml) are all rejected when the workflow is parsed, each in one short line that
starts with the key to fix; and settings that used to fail only inside a job fail at parse time.

Most cases call the function the workflow calls (langprune.config.check_workflow_config) on the
config as Snakemake loads it; a few real `snakemake -n` runs prove the Snakefile wires it.
"""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from snakemake.common.configfile import load_configfile
from snakemake.exceptions import WorkflowError

from langprune import registry
from langprune.cli import main
from langprune.config import check_config, check_workflow_config, load_config_file
from langprune.errors import LangpruneError

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
AUDIT = Path(__file__).with_name("data") / "audit_configs"
SNAKEMAKE = Path(sys.executable).with_name("snakemake")
DEFAULT = yaml.safe_load((REPO / "config" / "config.yaml").read_text())

# file -> (the start of the one-line message, a fragment that says what is wrong)
KEY = "config key "
EXPECTED = {
    "01_method_wand": (KEY + "pruning.methods[1]:", "'wand' is not one of"),
    "02_sparsity_1.5": (KEY + "pruning.sparsities[0]:", "1.5 is greater than or equal to the maximum of 1"),
    "03_sparsity_neg0.1": (KEY + "pruning.sparsities[0]:", "-0.1 is less than or equal to the minimum of 0"),
    "04_sparsity_string": (KEY + "pruning.sparsities[0]:", "'0.5' is not of type 'number'"),
    "05_structure_4to2": (KEY + "pruning.structures[0]:", "'4:2' is not one of"),
    "06_structure_2to0": (KEY + "pruning.structures[0]:", "'2:0' is not one of"),
    "07_languages_empty": (KEY + "languages:", "should be non-empty"),
    "08_language_xx": (KEY + "languages:", "xx are read from evaluation.perplexity.source"),
    "09_language_upper_EN": (KEY + "languages[0]:", "'EN' does not match"),
    "10_calib_set_undefined_lang_fr": (KEY + "calibration.sets:", "fr are read from calibration.source"),
    "11_calib_set_empty_list": (KEY + "calibration.sets.de:", "should be non-empty"),
    "12_nsamples_negative": (KEY + "calibration.nsamples:", "-4 is less than the minimum of 1"),
    "13_nsamples_float": (KEY + "calibration.nsamples:", "8.5 is not of type 'integer'"),
    "14_seqlen_0": (KEY + "calibration.seqlen:", "0 is less than the minimum of 8"),
    "15_models_missing": (KEY + "models:", "missing; it is required"),
    "16_model_no_tokenizer": (KEY + "models.toy.tokenizer:", "missing; it is required"),
    "17_model_tokenizer_undefined": (KEY + "models.toy.tokenizer:", "'llama3' is not a key of tokenizers"),
    "18_model_path_empty": (KEY + "models.toy.path:", "should be non-empty"),
    "19_model_dtype_float64": (KEY + "models.toy.dtype:", "'float64' is not one of"),
    "20_model_gpu_negative": (KEY + "models.toy.gpu:", "-1 is less than the minimum of 0"),
    "21_model_name_with_slash": (KEY + "models.org/toy:", "the name 'org/toy' does not match"),
    "22_seeds_not_list": (KEY + "calibration.seeds:", "0 is not of type 'array'"),
    "23_seeds_duplicate": (KEY + "calibration.seeds:", "has non-unique elements"),
    "24_resources_mem_string": (KEY + "pruning.resources.mem_mb:", "'2G' is not of type 'integer'"),
    "25_unknown_toplevel_key": (KEY + "prunning:", "unknown key (did you mean 'pruning'?)"),
    "26_unknown_nested_key_sparsity": (KEY + "pruning.sparsity:", "unknown key (did you mean 'sparsities'?)"),
    "27_calib_source_bad_scheme": (KEY + "calibration.source:", "does not match"),
    "28_calib_source_missing_dir": (KEY + "calibration.source:", "'/nonexistent/calib' is not a directory"),
    "29_packing_typo": (KEY + "calibration.packing:", "'docs' is not one of"),
    "30_offload_string": (KEY + "pruning.offload:", "'yes' is not of type 'boolean'"),
    "31_tokenizers_empty": (KEY + "tokenizers:", "should be non-empty"),
    "32_evaluation_no_perplexity": (KEY + "evaluation.perplexity:", "missing; it is required"),
    "33_eval_maxtokens_lt_seqlen": (KEY + "evaluation.perplexity.max_tokens:", "16 is less than"),
    "34_task_unknown_benchmark": (KEY + "evaluation.tasks.arcc:", "unknown benchmark; did you mean 'arc'?"),
    "35_toy_split_missing_calib": (KEY + "toy.split.calib:", "missing; it is required"),
    "36_toy_language_fr": (KEY + "toy.languages[7]:", "'fr' is not one of"),
    "37_toy_vs_languages_mismatch": (KEY + "calibration.sets:", "which the toy corpus builds only for toy.languages"),
    "38_analysis_calib_undefined": (KEY + "analysis.calibrations:", "fr not in calibration.sets"),
    "39_analysis_methods_not_pruned": (KEY + "analysis.methods:", "sparsegpt not in pruning.methods"),
    "40_model_scale_zero": (KEY + "models.toy.scale:", "0 is less than or equal to the minimum of 0"),
    "41_config_is_list": ("config file ", "the top level must be a mapping of keys"),
    "42_yaml_syntax_error": ("config file ", "line 64, column 13: expected ',' or ']', but got ':'"),
    "43_duplicate_set_names": (KEY + "calibration.sets.de:", "duplicate key in"),
    "44_empty_file": ("config file ", "is empty"),
    "45_tab_indentation": ("config file ", "line 66, column 1: found character '\\t'"),
    "46_duplicate_toplevel_key": (KEY + "pruning:", "duplicate key in"),
    "47_sparsity_percent": (KEY + "pruning.sparsities[0]:", "'50%' is not of type 'number'"),
}

# Both lines of each duplicate key are named.
DUPLICATE_LINES = {"43_duplicate_set_names": (54, 55), "46_duplicate_toplevel_key": (62, 85)}
MAX_MESSAGE = 400  # characters: the audit saw 31-407 *lines* of schema and config


def test_every_audit_config_has_an_expectation():
    assert sorted(p.stem for p in AUDIT.glob("*.yaml")) == sorted(EXPECTED)
    assert len(EXPECTED) == 47


def workflow_check(path: Path, workdir: Path) -> str:
    """What parsing the workflow with `--configfile path` reports: Snakemake's loader first
    (before any workflow code runs), then the workflow's own check on Snakemake's config."""
    config = load_configfile(path)  # may raise WorkflowError: Snakemake itself rejects the file
    with pytest.raises(LangpruneError) as error:
        check_workflow_config(config, [path], SCHEMA, root=workdir)
    return str(error.value)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_audit_config_is_rejected_at_parse_time_naming_the_key(name, tmp_path):
    path = AUDIT / f"{name}.yaml"
    start, fragment = EXPECTED[name]
    try:
        message = workflow_check(path, tmp_path)
    except WorkflowError as snakemake_error:
        # Unreadable as YAML or not a mapping: Snakemake stops before the workflow is parsed.
        # Its message has no position; `langprune config check` (the same loader) gives it.
        assert "Config file" in str(snakemake_error)
        with pytest.raises(LangpruneError) as error:
            load_config_file(path)
        message = str(error.value)
    assert message.startswith(start), message
    assert fragment in message, message
    assert "\n" not in message and len(message) < MAX_MESSAGE, message
    if name in DUPLICATE_LINES:
        first, second = DUPLICATE_LINES[name]
        assert f"at line {first} and again at line {second}" in message


@pytest.mark.parametrize("name", ["42_yaml_syntax_error", "45_tab_indentation", "43_duplicate_set_names",
                                  "33_eval_maxtokens_lt_seqlen"])
def test_config_check_command_prints_one_error_line(name, capsys):
    assert main(["config", "check", str(AUDIT / f"{name}.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("langprune config: error: ") and "\n" not in err
    assert EXPECTED[name][1] in err


@pytest.mark.parametrize("config_file", ["config.yaml", "paper.yaml"])
def test_shipped_configs_pass_the_check_command(config_file, capsys):
    assert main(["config", "check", str(REPO / "config" / config_file)]) == 0
    assert "valid" in capsys.readouterr().out


# ---- cross-key checks beyond the audit's cases -------------------------------------------------

def changed(**changes) -> dict:
    """The default config with dotted keys set (value None deletes the key)."""
    config = copy.deepcopy(DEFAULT)
    for dotted, value in changes.items():
        *parents, leaf = dotted.split(".")
        node = config
        for key in parents:
            node = node[key]
        if value is None:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    return config


def text_dir(root: Path, languages: list[str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for lang in languages:
        (root / f"{lang}.txt").write_text("Some text.\n\nMore text.\n", encoding="utf-8")
    return root


def user_text_config(source: str) -> dict:
    """The default without `toy:`, calibrated and evaluated on a user's text:DIR."""
    return changed(**{"toy": None, "languages": ["de", "en"], "calibration.source": source,
                      "calibration.sets": {"de": ["de"], "en": ["en"]}, "evaluation.perplexity.source": source,
                      "evaluation.multiple_choice": None, "evaluation.tasks": {}})


CROSS_KEY_CASES = [
    ("udhr_mc_without_items", changed(**{"evaluation.multiple_choice": None}),
     "evaluation.tasks.udhr_mc:", "evaluation.multiple_choice, which is not set"),
    ("udhr_mc_language_not_built", changed(**{"evaluation.tasks": {"udhr_mc": {"languages": ["de", "fi"]}}}),
     "evaluation.tasks.udhr_mc.languages:", "fi not in languages"),
    ("probe_part_not_split", changed(**{"toy.split": {"train": 16, "calib": 5, "eval": 6}}),
     "analysis.probe (default):", "toy.split has no 'probe'"),
    ("analysis_one_checkpoint_per_method",
     changed(**{"calibration.seeds": [0], "analysis": {"calibrations": ["de"]}}),
     "analysis.calibrations:", "at least two checkpoints"),
    ("analysis_one_probe_language", changed(**{"analysis": {"languages": ["de"]}}),
     "analysis.languages:", "at least two probe languages"),
    ("mc4_unknown_language", changed(**{"toy": None, "calibration.source": "mc4", "evaluation.multiple_choice": None,
                                        "evaluation.tasks": {}, "calibration.sets": {"xx": ["xx"]},
                                        "analysis": {"probe": "belebele"}}),
     "calibration.sets:", "mC4 (calibration.source) has no language xx"),
]


REAL = yaml.safe_load((REPO / "config" / "real.yaml").read_text())
QUANTIZER = next(name for name, spec in registry.METHODS.items() if spec.quantizes)
GGUF_ELSEWHERE = copy.deepcopy(REAL)
GGUF_ELSEWHERE["models"]["smollm2-135m"]["path"] = "somewhere/else"

# What only the plan shows: configured keys that build nothing, layer sparsities reaching 1.
CROSS_KEY_CASES += [
    ("gguf_model_built_elsewhere", GGUF_ELSEWHERE,
     "models.smollm2-135m.path:", "a model with gguf: is built at results/models/smollm2-135m"),
    ("owl_with_only_nm", changed(**{"pruning.allocation": "owl", "pruning.structures": ["2:4"]}),
     "pruning.allocation:", "owl builds no checkpoint: magnitude+owl, wanda+owl, sparsegpt+owl are "
                            "unstructured-only and pruning.structures has only 2:4; remove it from pruning.allocation"),
    ("dsnot_with_only_nm", changed(**{"pruning.methods": ["wanda", "dsnot"], "pruning.structures": ["2:4"]}),
     "pruning.methods:", "dsnot builds no checkpoint: dsnot is unstructured-only and pruning.structures has only 2:4"),
    ("nm_with_only_unstructured_methods", changed(**{"pruning.methods": ["dsnot"], "pruning.structures":
                                                     ["unstructured", "2:4"]}),
     "pruning.structures:", "2:4 builds no checkpoint: every configured method and allocation is unstructured-only"),
    ("mwanda_without_a_mix", changed(**{"pruning.methods": ["wanda", "mwanda"], "calibration.sets": {"de": ["de"]},
                                        "languages": ["de", "en"]}),
     "pruning.methods:", "mwanda builds no checkpoint: mwanda is only calibrated on a set mixing two or more languages "
                        "and calibration.sets has none (de)"),
    ("owl_sparsity_reaching_one", changed(**{"pruning.allocation": ["uniform", "owl"], "pruning.sparsities":
                                             [0.5, 0.95]}),
     "pruning.sparsities[1]:", "0.95 with pruning.allocation owl fails its check (--allocation owl: --sparsity "
                               "0.95 with --owl-lambda 0.08 can give a layer a sparsity of up to 0.95 + 2 x 0.08"),
    ("quantization_method", changed(**{"pruning.methods": ["wanda", QUANTIZER]}),
     "pruning.methods:", f"{QUANTIZER} builds no checkpoint: {QUANTIZER} is a quantization method"),
    ("integer_given_a_float", changed(**{"evaluation.perplexity.batch_size": 8.0}),
     "evaluation.perplexity.batch_size:", "8.0 is not of type 'integer'"),
]


@pytest.mark.parametrize("config,start,fragment", [c[1:] for c in CROSS_KEY_CASES], ids=[c[0] for c in CROSS_KEY_CASES])
def test_cross_key_mistake_fails_at_parse_time(config, start, fragment, tmp_path):
    with pytest.raises(LangpruneError) as error:
        check_config(config, SCHEMA, root=tmp_path)
    assert str(error.value).startswith(KEY + start), error.value
    assert fragment in str(error.value)


def test_owl_at_a_feasible_sparsity_and_cwl_on_a_mix_are_accepted(tmp_path):
    check_config(changed(**{"pruning.allocation": ["uniform", "owl", "cwl"], "pruning.sparsities": [0.5, 0.8]}),
                 SCHEMA, root=tmp_path)


def test_the_check_command_names_an_integer_key_given_a_float(tmp_path, capsys):
    path = tmp_path / "float.yaml"
    path.write_text(yaml.safe_dump(changed(**{"evaluation.perplexity.batch_size": 8.0})))
    assert main(["config", "check", str(path)]) == 2
    assert capsys.readouterr().err.strip() == (
        "langprune config: error: config key evaluation.perplexity.batch_size: 8.0 is not of type 'integer' "
        "(schema rule 'type')")


def test_default_analysis_settings_do_not_block_a_one_set_run(tmp_path):
    """With `analysis:` left to its defaults, one set and one seed (nothing for the mask overlap to
    compare) stay valid: targets without the analysis, such as the metrics tables, still build."""
    check_config(changed(**{"languages": ["de"], "calibration.seeds": [0], "calibration.sets": {"de": ["de"]},
                            "pruning.methods": ["wanda"]}), SCHEMA, root=tmp_path)


def test_existing_text_dir_must_hold_every_language(tmp_path):
    text_dir(tmp_path / "corpus", ["de"])
    with pytest.raises(LangpruneError, match=r"^config key calibration.sets: language\(s\) en not found in .*corpus"):
        check_config(user_text_config("text:corpus"), SCHEMA, root=tmp_path)
    text_dir(tmp_path / "corpus", ["en"])
    check_config(user_text_config("text:corpus"), SCHEMA, root=tmp_path)


def test_yaml_merge_keys_and_aliases_are_no_duplicates(tmp_path):
    path = tmp_path / "merge.yaml"
    path.write_text("base: &base {mem_mb: 100, runtime: 1}\nother:\n  <<: *base\n  runtime: 2\n"
                    "again: *base\nloop: &loop [1, *loop]\n")
    config = load_config_file(path)
    assert config["other"] == {"mem_mb": 100, "runtime": 2} and config["again"] == config["base"]


def test_yte_template_keys_are_no_duplicates(tmp_path):
    """Snakemake's YAML templating repeats `?else` in one mapping; that is not a duplicate key."""
    path = tmp_path / "yte.yaml"
    path.write_text("__use_yte__: true\npruning:\n  ?if True:\n    batch_size: 4\n  ?else:\n    batch_size: 2\n"
                    "  ?if False:\n    offload: true\n  ?else:\n    offload: false\n")
    assert "?else" in load_config_file(path)["pruning"]


# ---- the real workflow: a few `snakemake -n` runs ------------------------------------------------

def snakemake_dry_run(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [str(SNAKEMAKE), "-s", str(REPO / "Snakefile"), "--directory", str(workdir), "--dry-run",
           "--cores", "1", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})


@pytest.mark.parametrize("name", ["01_method_wand", "43_duplicate_set_names", "08_language_xx",
                                  "28_calib_source_missing_dir", "39_analysis_methods_not_pruned"])
def test_snakemake_rejects_audit_config_in_one_line(name, tmp_path):
    proc = snakemake_dry_run(tmp_path, "--configfile", str(AUDIT / f"{name}.yaml"))
    output = (proc.stdout + proc.stderr).strip()
    assert proc.returncode == 1 and "Job stats" not in output
    lines = output.splitlines()
    # Snakemake's header (where it was raised), our line, Snakemake's one-frame trace.
    assert lines[0].startswith("WorkflowError in file") and len(lines) <= 4, output
    start, fragment = EXPECTED[name]
    assert lines[1].startswith(start) and fragment in lines[1]


def test_snakemake_gives_no_position_for_a_broken_configfile_but_the_check_command_does(tmp_path, capsys):
    """Snakemake reads --configfile before any workflow code runs, and says only that the file is
    not valid YAML; config/README.md points to `langprune config check`, which gives the line."""
    path = AUDIT / "45_tab_indentation.yaml"
    proc = snakemake_dry_run(tmp_path, "--configfile", str(path))
    assert proc.returncode == 1 and "Config file is not valid JSON or YAML" in proc.stdout + proc.stderr
    assert main(["config", "check", str(path)]) == 2
    assert "line 66, column 1" in capsys.readouterr().err


def test_snakemake_names_the_line_of_a_mistake_in_the_default_config(tmp_path):
    """Without --configfile, the Snakefile reads config/config.yaml itself: strictly, with position."""
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_bytes((AUDIT / "45_tab_indentation.yaml").read_bytes())
    proc = snakemake_dry_run(tmp_path)
    assert proc.returncode == 1
    assert "config file config/config.yaml, line 66, column 1: found character '\\t'" in proc.stdout + proc.stderr


def test_snakemake_accepts_a_user_text_dir_relative_to_the_working_directory(tmp_path):
    text_dir(tmp_path / "corpus", ["de", "en"])
    config = user_text_config("text:corpus")
    config["models"]["toy"]["path"] = "some-org/some-model"
    config["tokenizers"]["toy"] = "some-org/some-model"
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    proc = snakemake_dry_run(tmp_path, "--configfile", str(tmp_path / "config.yaml"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r"^calibration_shard\s+4$", proc.stdout, re.M)  # 2 sets x 2 seeds
    assert "toy_corpus" not in proc.stdout
