"""Malformed configs are rejected when the workflow is parsed, and the error names the key; the
schema names no method or allocation: the config check fills those in from the registry."""

from __future__ import annotations

import pytest
import yaml

from helpers.workflow import REPO, with_changes
from langprune import registry
from langprune.config import REGISTRY_ENUMS, check_schema, load_schema
from langprune.errors import LangpruneError

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
DEFAULT = yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def mutated(path: str, value=None, *, delete: bool = False) -> dict:
    """The default config with the dotted ``path`` set to ``value`` (or deleted)."""
    assert delete == (value is None)
    return with_changes(DEFAULT, **{path: value})


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


def test_the_committed_test_config_is_valid():
    check_schema(yaml.safe_load((REPO / ".test" / "config" / "config.yaml").read_text()), SCHEMA)
