"""47 broken configs, each one mistake in config/config.yaml, are all rejected when the workflow
is parsed, each in one short line that starts with the key to fix; and settings that used to fail
only inside a job fail at parse time.

Each broken config is written from its case: an edit of the default's data (dumped as YAML), or,
for what only text can hold (a YAML syntax error, a tab, a duplicate key, an empty file), an edit
of the default's text. Most cases call the function the workflow calls
(langprune.config.check_workflow_config) on the config as Snakemake loads it; a few real
`snakemake -n` runs prove the Snakefile wires it.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import yaml
from snakemake.common.configfile import load_configfile
from snakemake.exceptions import WorkflowError

from helpers.workflow import REPO, snakemake, with_changes
from langprune import registry
from langprune.cli import main
from langprune.config import check_config, check_workflow_config, load_config_file
from langprune.errors import LangpruneError

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
DEFAULT_TEXT = (REPO / "config" / "config.yaml").read_text()
DEFAULT = yaml.safe_load(DEFAULT_TEXT)


@dataclass(frozen=True)
class Broken:
    """One broken config: ``data`` edits a copy of the default's data (the file is its YAML dump),
    ``text`` edits the default's text and gives the line numbers the message must name; ``start``
    begins the one-line message, ``fragment`` says what is wrong and ``also`` (where given) where
    (both formatted with those line numbers)."""

    start: str
    fragment: str
    data: Callable[[dict], object] | None = None
    text: Callable[[str], tuple[str, dict]] | None = None
    also: str = ""

    def write(self, path: Path) -> Path:
        if self.text is not None:
            path.write_text(self.text(DEFAULT_TEXT)[0])
        else:
            path.write_text(yaml.safe_dump(self.data(copy.deepcopy(DEFAULT)), sort_keys=False))
        return path

    def expected(self) -> list[str]:
        """The fragments the message must hold."""
        lines = self.text(DEFAULT_TEXT)[1] if self.text is not None else {}
        return [part.format(**lines) for part in (self.fragment, self.also) if part]


def setting(**changes) -> Callable[[dict], dict]:
    """Set dotted keys (``None`` deletes one), e.g. ``setting(**{"calibration.seeds": 0})``."""
    return lambda config: with_changes(config, **changes)


def adding(dotted: str, value) -> Callable[[dict], dict]:
    """Add ``value`` under a new dotted key (the mapping above it exists)."""
    return lambda config: with_changes(config, **{dotted: value})


def renaming(dotted: str, new: str) -> Callable[[dict], dict]:
    """Rename the last part of a dotted key, keeping its place in its mapping."""
    def edit(config: dict) -> dict:
        *parents, old = dotted.split(".")
        node = config
        for key in parents:
            node = node[key]
        items = [(new if key == old else key, value) for key, value in node.items()]
        node.clear()
        node.update(items)
        return config
    return edit


def line_number(text: str, line: str) -> int:
    """The 1-based number of the one line of ``text`` equal to ``line``."""
    found = [n for n, candidate in enumerate(text.splitlines(), start=1) if candidate == line]
    assert len(found) == 1, f"config/config.yaml should hold exactly one line {line!r}: {found}"
    return found[0]


def replacing(line: str, new: str) -> Callable[[str], tuple[str, dict]]:
    """Replace one line of the text; its number is ``{line}``, the next one's ``{next}``."""
    def edit(text: str) -> tuple[str, dict]:
        number = line_number(text, line)
        lines = text.splitlines(keepends=True)
        lines[number - 1] = new + "\n"
        return "".join(lines), {"line": number, "next": number + 1}
    return edit


def inserting_after(line: str, new: str) -> Callable[[str], tuple[str, dict]]:
    """Insert a line after one line of the text; their numbers are ``{line}`` and ``{next}``."""
    def edit(text: str) -> tuple[str, dict]:
        number = line_number(text, line)
        lines = text.splitlines(keepends=True)
        lines.insert(number, new + "\n")
        return "".join(lines), {"line": number, "next": number + 1}
    return edit


def appending(block: str) -> Callable[[str], tuple[str, dict]]:
    """Append a block whose first line repeats a top-level key; ``{first}`` and ``{again}`` are
    the numbers of the key's two lines."""
    def edit(text: str) -> tuple[str, dict]:
        key = block.splitlines()[0]
        return text + "\n" + block, {"first": line_number(text, key), "again": len(text.splitlines()) + 2}
    return edit


KEY = "config key "
SECOND_PRUNING = "pruning:\n  methods: [wanda]\n  structures: [unstructured]\n  sparsities: [0.7]\n"
# name -> the broken config, the start of its one-line message, a fragment that says what is wrong
BROKEN = {
    "01_method_wand": Broken(KEY + "pruning.methods[1]:", "'wand' is not one of",
                             setting(**{"pruning.methods": ["magnitude", "wand"]})),
    "02_sparsity_1.5": Broken(KEY + "pruning.sparsities[0]:", "1.5 is greater than or equal to the maximum of 1",
                              setting(**{"pruning.sparsities": [1.5]})),
    "03_sparsity_neg0.1": Broken(KEY + "pruning.sparsities[0]:", "-0.1 is less than or equal to the minimum of 0",
                                 setting(**{"pruning.sparsities": [-0.1]})),
    "04_sparsity_string": Broken(KEY + "pruning.sparsities[0]:", "'0.5' is not of type 'number'",
                                 setting(**{"pruning.sparsities": ["0.5"]})),
    "05_structure_4to2": Broken(KEY + "pruning.structures[0]:", "'4:2' is not one of",
                                setting(**{"pruning.structures": ["4:2"]})),
    "06_structure_2to0": Broken(KEY + "pruning.structures[0]:", "'2:0' is not one of",
                                setting(**{"pruning.structures": ["2:0"]})),
    "07_languages_empty": Broken(KEY + "languages:", "should be non-empty", setting(languages=[])),
    "08_language_xx": Broken(KEY + "languages:", "xx are read from evaluation.perplexity.source",
                             lambda config: with_changes(config, languages=[*config["languages"], "xx"])),
    "09_language_upper_EN": Broken(KEY + "languages[0]:", "'EN' does not match", setting(languages=["EN", "de"])),
    "10_calib_set_undefined_lang_fr": Broken(KEY + "calibration.sets:", "fr are read from calibration.source",
                                             adding("calibration.sets.fr", ["fr"])),
    "11_calib_set_empty_list": Broken(KEY + "calibration.sets.de:", "should be non-empty",
                                      setting(**{"calibration.sets.de": []})),
    "12_nsamples_negative": Broken(KEY + "calibration.nsamples:", "-4 is less than the minimum of 1",
                                   setting(**{"calibration.nsamples": -4})),
    "13_nsamples_float": Broken(KEY + "calibration.nsamples:", "8.5 is not of type 'integer'",
                                setting(**{"calibration.nsamples": 8.5})),
    "14_seqlen_0": Broken(KEY + "calibration.seqlen:", "0 is less than the minimum of 8",
                          setting(**{"calibration.seqlen": 0})),
    "15_models_missing": Broken(KEY + "models:", "missing; it is required", setting(models=None)),
    "16_model_no_tokenizer": Broken(KEY + "models.toy.tokenizer:", "missing; it is required",
                                    setting(**{"models.toy.tokenizer": None})),
    "17_model_tokenizer_undefined": Broken(KEY + "models.toy.tokenizer:", "'llama3' is not a key of tokenizers",
                                           setting(**{"models.toy.tokenizer": "llama3"})),
    "18_model_path_empty": Broken(KEY + "models.toy.path:", "should be non-empty", setting(**{"models.toy.path": ""})),
    "19_model_dtype_float64": Broken(KEY + "models.toy.dtype:", "'float64' is not one of",
                                     setting(**{"models.toy.dtype": "float64"})),
    "20_model_gpu_negative": Broken(KEY + "models.toy.gpu:", "-1 is less than the minimum of 0",
                                    setting(**{"models.toy.gpu": -1})),
    "21_model_name_with_slash": Broken(KEY + "models.org/toy:", "the name 'org/toy' does not match",
                                       renaming("models.toy", "org/toy")),
    "22_seeds_not_list": Broken(KEY + "calibration.seeds:", "0 is not of type 'array'",
                                setting(**{"calibration.seeds": 0})),
    "23_seeds_duplicate": Broken(KEY + "calibration.seeds:", "has non-unique elements",
                                 setting(**{"calibration.seeds": [0, 0]})),
    "24_resources_mem_string": Broken(KEY + "pruning.resources.mem_mb:", "'2G' is not of type 'integer'",
                                      setting(**{"pruning.resources.mem_mb": "2G"})),
    "25_unknown_toplevel_key": Broken(KEY + "prunning:", "unknown key (did you mean 'pruning'?)",
                                      lambda config: with_changes(config, prunning=copy.deepcopy(config["pruning"]))),
    "26_unknown_nested_key_sparsity": Broken(KEY + "pruning.sparsity:", "unknown key (did you mean 'sparsities'?)",
                                             adding("pruning.sparsity", 0.5)),
    "27_calib_source_bad_scheme": Broken(KEY + "calibration.source:", "does not match",
                                         setting(**{"calibration.source": "txt:results/toy/text/calib"})),
    "28_calib_source_missing_dir": Broken(KEY + "calibration.source:", "'/nonexistent/calib' is not a directory",
                                          setting(**{"calibration.source": "text:/nonexistent/calib"})),
    "29_packing_typo": Broken(KEY + "calibration.packing:", "'docs' is not one of",
                              setting(**{"calibration.packing": "docs"})),
    "30_offload_string": Broken(KEY + "pruning.offload:", "'yes' is not of type 'boolean'",
                                adding("pruning.offload", "yes")),
    "31_tokenizers_empty": Broken(KEY + "tokenizers:", "should be non-empty", setting(tokenizers={})),
    "32_evaluation_no_perplexity": Broken(KEY + "evaluation.perplexity:", "missing; it is required",
                                          setting(**{"evaluation.perplexity": None})),
    "33_eval_maxtokens_lt_seqlen": Broken(KEY + "evaluation.perplexity.max_tokens:", "16 is less than",
                                          setting(**{"evaluation.perplexity.max_tokens": 16})),
    "34_task_unknown_benchmark": Broken(KEY + "evaluation.tasks.arcc:", "unknown benchmark; did you mean 'arc'?",
                                        adding("evaluation.tasks.arcc", {"batch_size": 8})),
    "35_toy_split_missing_calib": Broken(KEY + "toy.split.calib:", "missing; it is required",
                                         setting(**{"toy.split.calib": None})),
    "36_toy_language_fr": Broken(KEY + "toy.languages[7]:", "'fr' is not one of",
                                 lambda config: with_changes(config, **{"toy.languages": [*config["toy"]["languages"],
                                                                                          "fr"]})),
    "37_toy_vs_languages_mismatch": Broken(KEY + "calibration.sets:",
                                           "which the toy corpus builds only for toy.languages",
                                           setting(**{"toy.languages": ["en", "de"]})),
    "38_analysis_calib_undefined": Broken(KEY + "analysis.calibrations:", "fr not in calibration.sets",
                                          setting(analysis={"calibrations": ["fr"]})),
    "39_analysis_methods_not_pruned": Broken(KEY + "analysis.methods:", "sparsegpt not in pruning.methods",
                                             setting(**{"pruning.methods": ["magnitude", "wanda"]},
                                                     analysis={"methods": ["sparsegpt"]})),
    "40_model_scale_zero": Broken(KEY + "models.toy.scale:", "0 is less than or equal to the minimum of 0",
                                  setting(**{"models.toy.scale": 0})),
    "41_config_is_list": Broken("config file ", "the top level must be a mapping of keys", lambda config: [config]),
    "42_yaml_syntax_error": Broken("config file ", "line {next}, column 13: expected ',' or ']', but got ':'",
                                   text=replacing("  methods: [magnitude, wanda, sparsegpt]",
                                                  "  methods: [magnitude, wanda, sparsegpt")),
    "43_duplicate_set_names": Broken(KEY + "calibration.sets.de:", "duplicate key in",
                                     text=inserting_after("    de: [de]", "    de: [en]"),
                                     also="at line {line} and again at line {next}"),
    "44_empty_file": Broken("config file ", "is empty", text=lambda text: ("", {})),
    "45_tab_indentation": Broken("config file ", "line {line}, column 1: found character '\\t'",
                                 text=replacing("  batch_size: 8", "\tbatch_size: 8")),
    "46_duplicate_toplevel_key": Broken(KEY + "pruning:", "duplicate key in", text=appending(SECOND_PRUNING),
                                        also="at line {first} and again at line {again}"),
    "47_sparsity_percent": Broken(KEY + "pruning.sparsities[0]:", "'50%' is not of type 'number'",
                                  setting(**{"pruning.sparsities": ["50%"]})),
}
MAX_MESSAGE = 400  # characters (a raw schema error runs to hundreds of lines of schema and config)


def test_every_broken_config_is_one_mistake_in_the_default():
    """47 cases, each changing the default (and nothing else is read: the edits raise if the
    default loses the key or line they change)."""
    assert len(BROKEN) == 47
    for name, case in BROKEN.items():
        if case.text is not None:
            assert case.text(DEFAULT_TEXT)[0] != DEFAULT_TEXT, name
        else:
            assert case.data(copy.deepcopy(DEFAULT)) != DEFAULT, name


def workflow_check(path: Path, workdir: Path) -> str:
    """What parsing the workflow with `--configfile path` reports: Snakemake's loader first
    (before any workflow code runs), then the workflow's own check on Snakemake's config."""
    config = load_configfile(path)  # may raise WorkflowError: Snakemake itself rejects the file
    with pytest.raises(LangpruneError) as error:
        check_workflow_config(config, [path], SCHEMA, root=workdir)
    return str(error.value)


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_config_is_rejected_at_parse_time_naming_the_key(name, tmp_path):
    case = BROKEN[name]
    path = case.write(tmp_path / f"{name}.yaml")
    try:
        message = workflow_check(path, tmp_path)
    except WorkflowError as snakemake_error:
        # Unreadable as YAML or not a mapping: Snakemake stops before the workflow is parsed.
        # Its message has no position; `langprune config check` (the same loader) gives it.
        assert "Config file" in str(snakemake_error)
        with pytest.raises(LangpruneError) as error:
            load_config_file(path)
        message = str(error.value)
    assert message.startswith(case.start), message
    assert all(part in message for part in case.expected()), message
    assert "\n" not in message and len(message) < MAX_MESSAGE, message


@pytest.mark.parametrize("name", ["42_yaml_syntax_error", "45_tab_indentation", "43_duplicate_set_names",
                                  "33_eval_maxtokens_lt_seqlen"])
def test_config_check_command_prints_one_error_line(name, capsys, tmp_path):
    assert main(["config", "check", str(BROKEN[name].write(tmp_path / f"{name}.yaml"))]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("langprune config: error: ") and "\n" not in err
    assert all(part in err for part in BROKEN[name].expected())


@pytest.mark.parametrize("config_file", ["config.yaml", "paper.yaml"])
def test_shipped_configs_pass_the_check_command(config_file, capsys):
    assert main(["config", "check", str(REPO / "config" / config_file)]) == 0
    assert "valid" in capsys.readouterr().out


# ---- cross-key checks beyond the 47 broken configs ---------------------------------------------

def changed(**changes) -> dict:
    """The default config with dotted keys set (value None deletes the key)."""
    return with_changes(DEFAULT, **changes)


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

def snakemake_dry_run(workdir: Path, *args: str):
    return snakemake(workdir, "--dry-run", "--cores", "1", *args, check=False)


@pytest.mark.workflow
@pytest.mark.parametrize("name", ["01_method_wand", "13_nsamples_float", "17_model_tokenizer_undefined",
                                  "43_duplicate_set_names", "08_language_xx", "28_calib_source_missing_dir",
                                  "39_analysis_methods_not_pruned"])
def test_snakemake_rejects_a_broken_config_in_one_line(name, tmp_path):
    proc = snakemake_dry_run(tmp_path, "--configfile", str(BROKEN[name].write(tmp_path / f"{name}.yaml")))
    output = (proc.stdout + proc.stderr).strip()
    assert proc.returncode == 1 and "Job stats" not in output
    lines = output.splitlines()
    # Snakemake's header (where it was raised), our line, Snakemake's one-frame trace.
    assert lines[0].startswith("WorkflowError in file") and len(lines) <= 4, output
    assert lines[1].startswith(BROKEN[name].start) and all(part in lines[1] for part in BROKEN[name].expected())


@pytest.mark.workflow
def test_snakemake_gives_no_position_for_a_broken_configfile_but_the_check_command_does(tmp_path, capsys):
    """Snakemake reads --configfile before any workflow code runs, and says only that the file is
    not valid YAML; config/README.md points to `langprune config check`, which gives the line."""
    case = BROKEN["45_tab_indentation"]
    path = case.write(tmp_path / "tab.yaml")
    proc = snakemake_dry_run(tmp_path, "--configfile", str(path))
    assert proc.returncode == 1 and "Config file is not valid JSON or YAML" in proc.stdout + proc.stderr
    assert main(["config", "check", str(path)]) == 2
    assert case.expected()[0] in capsys.readouterr().err


@pytest.mark.workflow
def test_snakemake_names_the_line_of_a_mistake_in_the_default_config(tmp_path):
    """Without --configfile, the Snakefile reads config/config.yaml itself: strictly, with position."""
    (tmp_path / "config").mkdir()
    case = BROKEN["45_tab_indentation"]
    case.write(tmp_path / "config" / "config.yaml")
    proc = snakemake_dry_run(tmp_path)
    assert proc.returncode == 1
    assert f"config file config/config.yaml, {case.expected()[0]}" in proc.stdout + proc.stderr


@pytest.mark.workflow
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
