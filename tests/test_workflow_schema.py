"""Malformed configs are rejected when the workflow is parsed, and the error names the key."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
DEFAULT = yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def mutated(path: str, value=None, *, delete: bool = False) -> dict:
    """The default config with the dotted ``path`` set to ``value`` (or deleted)."""
    config = copy.deepcopy(DEFAULT)
    *parents, last = path.split(".")
    node = config
    for key in parents:
        node = node[key]
    if delete:
        del node[last]
    else:
        node[last] = value
    return config


@pytest.mark.parametrize("config_file", ["config.yaml", "paper.yaml"])
def test_shipped_configs_are_valid(config_file):
    validate(yaml.safe_load((REPO / "config" / config_file).read_text()), str(SCHEMA))


CASES = [
    ("models", None, True, "'models' is a required property"),
    ("pruning.methods", ["random"], False, "['pruning']['methods']"),
    ("pruning.sparsities", [1.5], False, "['pruning']['sparsities']"),
    ("pruning.structures", ["3:4"], False, "['pruning']['structures']"),
    ("calibration.sets", {"English": ["en"]}, False, "'English'"),
    ("calibration.seeds", [], False, "['calibration']['seeds']"),
    ("models.toy.gpux", 1, False, "'gpux' was unexpected"),
    ("toy.model.steps", 0, False, "['toy']['model']['steps']"),
    ("evaluation.perplexity.source", "c4", False, "['evaluation']['perplexity']['source']"),
    ("languages", ["english"], False, "['languages']"),
]


@pytest.mark.parametrize("path,value,delete,named", CASES, ids=[c[0] for c in CASES])
def test_schema_rejects_malformed_value_naming_the_key(path, value, delete, named):
    with pytest.raises(WorkflowError) as error:
        validate(mutated(path, value, delete=delete), str(SCHEMA))
    assert named in str(error.value)


def parse(tmp_path: Path, config: dict) -> subprocess.CompletedProcess:
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    cmd = [str(Path(sys.executable).with_name("snakemake")), "-s", str(REPO / "Snakefile"), "--directory",
           str(tmp_path), "--configfile", str(tmp_path / "config.yaml"), "--dry-run", "--cores", "1"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def test_workflow_validates_at_parse_time(tmp_path):
    proc = parse(tmp_path, mutated("calibration.nsamples", "many"))
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "config key calibration.nsamples: 'many' is not of type 'integer'" in output
    assert "Job stats" not in output  # rejected before any job was planned


def test_unknown_tokenizer_reference_names_the_key(tmp_path):
    proc = parse(tmp_path, mutated("models.toy.tokenizer", "llama3"))
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "models.toy.tokenizer" in output and "llama3" in output


def optional_keys(schema: dict, path: str = ""):
    """(dotted path, subschema) of every optional key, through definitions and nested objects."""
    definitions = yaml.safe_load(SCHEMA.read_text())["definitions"]
    properties = schema.get("properties", {})
    for key, sub in properties.items():
        full = f"{path}.{key}" if path else key
        resolved = {**definitions[sub["$ref"].rsplit("/", 1)[-1]], **sub} if "$ref" in sub else sub
        if key not in schema.get("required", []):
            yield full, resolved
        yield from optional_keys(resolved, full)
        if isinstance(resolved.get("additionalProperties"), dict):
            yield from optional_keys(resolved["additionalProperties"], f"{full}.*")


def test_every_optional_key_has_a_default_or_says_what_it_defaults_to():
    """Defaults live in the schema (the rules read the validated config as is); a default that
    depends on other keys is stated in the description instead; a section one omits to turn
    it off (toy, multiple_choice) says so."""
    missing = [path for path, sub in optional_keys(yaml.safe_load(SCHEMA.read_text()))
               if "default" not in sub and not any(word in sub.get("description", "") for word in ("default", "omit"))]
    assert not missing, f"optional keys without default: {missing}"


@pytest.mark.parametrize("config_file", [".test/config/config.yaml", ".test/config/end_to_end.yaml"])
def test_committed_test_configs_are_valid(config_file):
    validate(yaml.safe_load((REPO / config_file).read_text()), str(SCHEMA))
