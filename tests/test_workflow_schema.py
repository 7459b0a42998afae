"""Malformed configs are rejected when the workflow is parsed, and the error names the key; the
schema names no method or allocation: the config check fills those in from the registry."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from langprune import registry
from langprune.config import REGISTRY_ENUMS, check_schema, load_schema
from langprune.errors import LangpruneError

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


@pytest.mark.parametrize("config_file", ["config.yaml", "paper.yaml", "real.yaml"])
def test_shipped_configs_are_valid(config_file):
    check_schema(yaml.safe_load((REPO / "config" / config_file).read_text()), SCHEMA)


CASES = [
    ("models", None, True, "config key models: missing"),
    ("pruning.methods", ["random"], False, "config key pruning.methods[0]: 'random' is not one of"),
    ("pruning.allocation", ["owl", "owls"], False, "config key pruning.allocation"),
    ("analysis", {"methods": ["random"]}, False, "config key analysis.methods[0]: 'random' is not one of"),
    ("pruning.sparsities", [1.5], False, "config key pruning.sparsities[0]"),
    ("pruning.structures", ["3:4"], False, "config key pruning.structures[0]"),
    ("calibration.sets", {"English": ["en"]}, False, "config key calibration.sets.English"),
    ("calibration.seeds", [], False, "config key calibration.seeds"),
    ("models.toy.gpux", 1, False, "config key models.toy.gpux: unknown key"),
    ("toy.model.steps", 0, False, "config key toy.model.steps"),
    ("evaluation.perplexity.source", "c4", False, "config key evaluation.perplexity.source"),
    ("languages", ["english"], False, "config key languages[0]"),
    ("evaluation.perplexity.batch_size", 8.0, False, "config key evaluation.perplexity.batch_size: 8.0 is not of "
                                                     "type 'integer'"),
]


@pytest.mark.parametrize("path,value,delete,named", CASES, ids=[c[0] for c in CASES])
def test_schema_rejects_malformed_value_naming_the_key(path, value, delete, named):
    with pytest.raises(LangpruneError) as error:
        check_schema(mutated(path, value, delete=delete), SCHEMA)
    assert str(error.value).startswith(named), error.value


def _names_in(node, found: list) -> list:
    """Every enum value and $ref anywhere in a schema node."""
    if isinstance(node, dict):
        found += [("enum", v) for v in node.get("enum", [])] + ([("$ref", node["$ref"])] if "$ref" in node else [])
        for value in node.values():
            _names_in(value, found)
    elif isinstance(node, list):
        for value in node:
            _names_in(value, found)
    return found


def test_schema_names_methods_and_allocations_only_through_the_registry():
    """The schema file lists no method or allocation name; every key that takes one refers to the
    definitions the config check fills from the registry, which then list exactly the registry's names."""
    raw = yaml.safe_load(SCHEMA.read_text())
    registered = set(registry.METHODS) | set(registry.ALLOCATIONS)
    assert not {value for kind, value in _names_in(raw, []) if kind == "enum"} & registered
    pruning, analysis = raw["properties"]["pruning"]["properties"], raw["properties"]["analysis"]["properties"]
    assert pruning["methods"]["items"] == analysis["methods"]["items"] == {"$ref": "#/definitions/method"}
    assert _names_in(pruning["allocation"], []) == [("$ref", "#/definitions/allocation")] * 2
    quantization = raw["properties"]["quantization"]["properties"]["methods"]
    assert quantization["propertyNames"] == {"$ref": "#/definitions/quantization_method"}
    filled = load_schema(SCHEMA)["definitions"]
    assert set(REGISTRY_ENUMS) == {"method", "allocation", "quantization_method"}
    assert filled["method"]["enum"] == list(registry.METHODS)
    assert filled["allocation"]["enum"] == list(registry.ALLOCATIONS)
    assert filled["quantization_method"]["enum"] == [m for m, spec in registry.METHODS.items() if spec.quantizes]


def test_every_registered_method_can_be_analysed():
    config = mutated("pruning.methods", list(registry.METHODS))
    config["analysis"] = {"methods": list(registry.METHODS)}
    check_schema(config, SCHEMA)


def test_checking_fills_in_the_schemas_defaults():
    config = mutated("pruning.resources", None, delete=True)
    check_schema(config, SCHEMA)
    assert config["pruning"]["resources"] == {"mem_mb": 1000, "runtime": 30, "threads": 1}
    assert config["pruning"]["allocation"] == "uniform" and config["models"]["toy"]["revision"] is None
    assert config["analysis"]["neurons"]["top_rate"] == 0.01 and config["evaluation"]["group"] == "benchmark"


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


@pytest.mark.parametrize("config_file", [".test/config/config.yaml", ".test/config/end_to_end.yaml",
                                         ".test/config/quantized.yaml"])
def test_committed_test_configs_are_valid(config_file):
    check_schema(yaml.safe_load((REPO / config_file).read_text()), SCHEMA)
