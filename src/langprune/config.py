"""The workflow's config file: strict loading, schema errors in one line, cross-key checks.

The Snakefile calls these while it is parsed (workflow/rules/common.smk), and
`langprune config check FILE` runs the same checks without Snakemake, so a config is
rejected before any job runs and every message starts with the key to fix:

- duplicate keys are errors (plain YAML keeps the last one silently), naming both lines;
- YAML syntax errors give the line and column;
- a schema violation is one line: the key path and the rule it broke; the schema's method
  and allocation names are the registry's (filled in before validating), and an integer
  key given a float (``8.0``) is refused, as the commands that read it would;
- settings that only fail once a job reads them (a language missing from a text
  directory, ``max_tokens < seqlen``, an unknown benchmark, analysis settings naming
  unpruned methods or undefined calibration sets, a GGUF model built elsewhere than its
  path, a layer-wise sparsity reaching 1) are checked here instead;
- quantization settings are checked against the registry's declarations and its own check
  (``check_layers``: settings that contradict each other, a group size that does not divide
  the toy model's layer sizes), each error naming the setting's key;
- a configured method, allocation or structure that builds no checkpoint is an error.

Checking also fills in the schema's defaults, in place, so the rules and
:class:`langprune.grid.Grid` read the config as it then is.
"""

from __future__ import annotations

import copy
import difflib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from jsonschema.exceptions import best_match

from . import registry, variant
from .data.languages import MC4_LANGUAGES
from .data.sources import TextDirSource
from .errors import LangpruneError
from .evaluate.registry import load_registry
from .grid import GGUF_MODEL_DIR, TOY_TEXT, Grid, allocation_names, default_probe, pairs_without_checkpoints

# Where the schema lives in a checkout (the workflow reads it from there too).
SCHEMA_RELPATH = Path("workflow") / "schemas" / "config.schema.yaml"

# Schema definitions whose allowed names are the registry's (the schema file lists none).
REGISTRY_ENUMS = {"method": lambda: list(registry.METHODS), "allocation": lambda: list(registry.ALLOCATIONS),
                  "quantization_method": lambda: list(registry.quantization_methods())}

MAX_MESSAGE = 240  # characters of a schema message before it is cut (instances can be long)


def _mark(mark: yaml.Mark | None) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "an unknown position"


def _key_path(parts) -> str:
    """``['pruning', 'methods', 1]`` -> ``pruning.methods[1]``."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _check_duplicate_keys(loader: yaml.SafeLoader, node: yaml.Node, path: list, where: str,
                          visited: set[int] | None = None) -> None:
    """Walk the composed YAML tree; the first key that occurs twice in one mapping is an error.

    An aliased node (``*anchor``) is walked once: YAML allows recursive ones."""
    visited = set() if visited is None else visited
    if id(node) in visited:
        return
    visited.add(id(node))
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, yaml.Node] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor` merges, it is no key of its own
                continue
            key = loader.construct_object(key_node, deep=True)
            if isinstance(key, str) and key.startswith("?"):  # Snakemake's YAML templating (yte): `?if`, `?else`
                continue
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: YAML's own constructor reports it
                continue
            if first is not None:
                raise LangpruneError(
                    f"config key {_key_path([*path, key])}: duplicate key in {where}, "
                    f"at line {first.start_mark.line + 1} "
                    f"and again at line {key_node.start_mark.line + 1}; YAML would silently keep only the last one. "
                    f"Keep one of them")
            seen[key] = key_node
            _check_duplicate_keys(loader, value_node, [*path, key], where, visited)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _check_duplicate_keys(loader, item, [*path, index], where, visited)


def load_config_file(path: str | os.PathLike) -> dict:
    """A config file as a dict; a YAML mistake is one line with its position, a duplicate key names both lines."""
    where = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LangpruneError(f"config file {where} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise LangpruneError(f"config file {where} cannot be read: {exc}") from None
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise LangpruneError(f"config file {where} is empty: it must be a mapping of keys "
                                 f"(languages, models, tokenizers, calibration, pruning, evaluation)")
        _check_duplicate_keys(loader, node, [], where)
        config = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        problem = exc.problem or "invalid YAML"
        context = (f" ({exc.context}" + (f" at {_mark(exc.context_mark)})" if exc.context_mark else ")")
                   if exc.context else "")
        hint = "; indent YAML with spaces, never tabs" if "\\t" in problem or "\t" in problem else ""
        raise LangpruneError(f"config file {where}, {_mark(exc.problem_mark)}: {problem}{context}{hint}") from None
    except yaml.YAMLError as exc:
        raise LangpruneError(f"config file {where} is not valid YAML: {' '.join(str(exc).split())}") from None
    finally:
        loader.dispose()
    if not isinstance(config, dict):
        raise LangpruneError(f"config file {where}: the top level must be a mapping of keys "
                             f"(languages, models, ...), not a {type(config).__name__}")
    return config


def merge_configs(configs: list[dict]) -> dict:
    """Later files override earlier ones key by key, nested mappings merged (as `--configfile A B` does)."""
    merged: dict = {}

    def update(target: dict, source: dict) -> None:
        for key, value in source.items():
            if isinstance(value, dict) and isinstance(target.get(key), dict):
                update(target[key], value)
            else:
                target[key] = value

    for config in configs:
        update(merged, config)
    return merged


def find_schema() -> Path:
    """The workflow's schema: in the working directory's checkout, else beside this package's source."""
    for root in (Path.cwd(), Path(__file__).resolve().parents[2]):
        if (root / SCHEMA_RELPATH).is_file():
            return root / SCHEMA_RELPATH
    raise LangpruneError(f"cannot find {SCHEMA_RELPATH}: run in the langprune checkout or pass --schema")


def _schema_message(error) -> str:
    """One line for a jsonschema error: the key path first, then the rule that failed."""
    path = list(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = list(error.schema.get("properties", {}))
        unknown = [k for k in error.instance if k not in allowed]
        if unknown and allowed:
            key = unknown[0]
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"allowed here: {', '.join(allowed)}"
            return f"config key {_key_path([*path, key])}: unknown key ({hint})"
    if error.validator == "required":
        missing = next((k for k in error.validator_value if k not in error.instance), None)
        if missing is not None:
            return f"config key {_key_path([*path, missing])}: missing; it is required"
    if "propertyNames" in error.relative_schema_path and isinstance(error.instance, str):
        # jsonschema reports a bad name at its mapping; name the key itself
        return (f"config key {_key_path([*path, error.instance])}: the name {error.message} "
                f"(schema rule 'propertyNames')")
    message = " ".join(error.message.split())
    if len(message) > MAX_MESSAGE:
        message = message[:MAX_MESSAGE - 1] + "…"
    return f"config key {_key_path(path) or '(top level)'}: {message} (schema rule '{error.validator}')"


def load_schema(schema_path: str | os.PathLike) -> dict:
    """The workflow's schema with the registry's method and allocation names as the enums of its
    ``method`` and ``allocation`` definitions, so an unknown name's message lists the known ones."""
    schema = yaml.safe_load(Path(schema_path).read_text(encoding="utf-8"))
    definitions = schema.get("definitions", {})
    for name, names in REGISTRY_ENUMS.items():
        if name not in definitions:
            raise LangpruneError(f"{schema_path}: definitions.{name} is missing; the config check fills its "
                                 f"enum from langprune.registry")
        definitions[name]["enum"] = names()
    return schema


def _validator(schema: dict):
    """A validator of ``schema`` whose 'integer' is an int only: JSON Schema calls 8.0 an integer,
    but the commands that read the key (``--batch-size 8.0``) refuse it."""
    base = jsonschema.validators.validator_for(schema)
    strict = base.TYPE_CHECKER.redefine(
        "integer", lambda checker, instance: isinstance(instance, int) and not isinstance(instance, bool))
    return jsonschema.validators.extend(base, type_checker=strict)(schema)


def fill_defaults(config: dict, schema: dict) -> dict:
    """Set every absent key that has a ``default:`` in the schema, in place, in a config the schema
    accepts (as Snakemake's ``validate(..., set_default=True)`` does)."""
    base = jsonschema.validators.validator_for(schema)
    check_properties = base.VALIDATORS["properties"]

    def properties(validator, props, instance, subschema):
        if isinstance(instance, dict):
            for key, sub in props.items():
                if "default" in sub and key not in instance:
                    instance[key] = copy.deepcopy(sub["default"])
        yield from check_properties(validator, props, instance, subschema)

    filler = jsonschema.validators.extend(base, {"properties": properties})(schema)
    for _ in filler.iter_errors(config):
        pass
    return config


def check_schema(config: dict, schema_path: str | os.PathLike) -> dict:
    """Validate against the workflow's JSON schema (the most relevant violation becomes one line),
    then fill in its defaults; returns the schema as checked."""
    schema = load_schema(schema_path)
    errors = list(_validator(schema).iter_errors(config))
    if errors:
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        raise LangpruneError(_schema_message(best_match(errors)) + more)
    fill_defaults(config, schema)
    return schema


def _source_dir(source: str) -> str | None:
    return source[len("text:"):].rstrip("/") if source.startswith("text:") else None


def _built_by_workflow(config: dict, directory: str) -> bool:
    """Toy text is built by the `toy:` section; nothing else used as text is built by the workflow."""
    return "toy" in config and (directory == TOY_TEXT or directory.startswith(f"{TOY_TEXT}/"))


def _unique(values) -> list:
    return list(dict.fromkeys(values))


def _text_sources(config: dict) -> Iterator[tuple[str, str, list[str], str]]:
    """(source key, source, languages it must hold, key those languages come from) for every text read."""
    languages = config["languages"]
    calibration = config["calibration"]
    yield ("calibration.source", calibration["source"],
           _unique(lang for langs in calibration["sets"].values() for lang in langs), "calibration.sets")
    evaluation = config["evaluation"]
    yield "evaluation.perplexity.source", evaluation["perplexity"]["source"], languages, "languages"
    if evaluation.get("multiple_choice"):
        yield "evaluation.multiple_choice.source", evaluation["multiple_choice"]["source"], languages, "languages"
    analysis = config.get("analysis", {})
    probe = analysis.get("probe", default_probe(config))
    if probe != "belebele":
        key = "analysis.probe" if "probe" in analysis else "analysis.probe (default)"
        langs_key = "analysis.languages" if "languages" in analysis else "languages"
        yield key, probe, analysis.get("languages", languages), langs_key


def _check_text_source(config: dict, key: str, source: str, languages: list[str], languages_key: str,
                       root: Path) -> None:
    directory = _source_dir(source)
    if directory is None:  # mc4
        unknown = [lang for lang in languages if lang not in MC4_LANGUAGES]
        if unknown:
            raise LangpruneError(f"config key {languages_key}: mC4 ({key}) has no language {', '.join(unknown)}; "
                                 f"see langprune.data.languages.MC4_LANGUAGES for its codes")
        return
    if _built_by_workflow(config, directory):
        toy = config["toy"]
        part = directory[len(TOY_TEXT):].strip("/").split("/")[0]
        if part and part not in toy["split"]:
            raise LangpruneError(
                f"config key {key}: '{source}' is the toy corpus part '{part}', but toy.split has no '{part}' "
                f"(parts: {', '.join(toy['split'])}); add it to toy.split or read another part")
        missing = [lang for lang in languages if lang not in toy["languages"]]
        if missing:
            raise LangpruneError(
                f"config key {languages_key}: language(s) {', '.join(missing)} are read from {key} "
                f"'{source}', which the toy corpus builds only for toy.languages ({', '.join(toy['languages'])}); "
                f"add them to toy.languages or remove them from {languages_key}")
        return
    path = Path(directory) if Path(directory).is_absolute() else root / directory
    if not path.is_dir():
        raise LangpruneError(
            f"config key {key}: '{directory}' is not a directory (relative paths start in the working directory "
            f"{root}); the workflow builds only {TOY_TEXT} (with `toy:`), any other text:DIR must exist")
    try:
        TextDirSource(path).check_languages(languages)
    except LangpruneError as exc:
        raise LangpruneError(f"config key {languages_key}: {exc} (read from {key})") from None


def _check_tasks(config: dict) -> None:
    evaluation = config["evaluation"]
    tasks = evaluation.get("tasks") or {}
    known = sorted({entry.benchmark for entry in load_registry()})
    for name, settings in tasks.items():
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise LangpruneError(f"config key evaluation.tasks.{name}: unknown benchmark; "
                                 f"{hint}known: {', '.join(known)}")
    if "udhr_mc" in tasks:
        if not evaluation.get("multiple_choice"):
            raise LangpruneError("config key evaluation.tasks.udhr_mc: its items are built from text by "
                                 "evaluation.multiple_choice, which is not set; add it or drop udhr_mc")
        extra = [lang for lang in (tasks["udhr_mc"] or {}).get("languages", []) if lang not in config["languages"]]
        if extra:
            raise LangpruneError(
                f"config key evaluation.tasks.udhr_mc.languages: {', '.join(extra)} not in languages, the only "
                f"languages evaluation.multiple_choice builds items for")


def _check_quantization(config: dict) -> None:
    """Each quantization setting: known hyperparameters with allowed values (the registry's), settings that
    agree with each other and with the layer sizes the config knows (the registry's ``check_layers``),
    no setting twice; quantized models are configured models."""
    quantization = config.get("quantization")
    if not quantization:
        return
    unknown = [m for m in quantization.get("models", []) if m not in config["models"]]
    if unknown:
        raise LangpruneError(f"config key quantization.models: {', '.join(unknown)} not a key of models "
                             f"({', '.join(config['models'])})")
    grid = Grid({**config, "quantization": None})  # the sizes it knows; the settings are checked below
    models = quantization.get("models", list(config["models"]))
    for method, settings in quantization["methods"].items():
        spec = registry.method(method)
        declared = {p.name: p for p in spec.params}
        slugs: dict[str, int] = {}
        for index, setting in enumerate(settings):
            key = f"quantization.methods.{method}[{index}]"
            for name, value in setting.items():
                param = declared.get(name)
                if param is None:
                    raise LangpruneError(f"config key {key}.{name}: {method} has no setting {name} (it has: "
                                         f"{', '.join(declared)})")
                try:
                    param.check(value)
                except LangpruneError:
                    allowed = "true or false" if param.kind is bool else param.describe()
                    raise LangpruneError(f"config key {key}.{name}: {value!r} is not allowed; it must be {allowed} "
                                         f"(as {param.flag} of langprune prune)") from None
            params = spec.bind(setting)
            try:  # with the sizes of each quantized model the config knows (none: the settings alone)
                for model in models:
                    spec.check_sizes(params, grid.input_sizes(model))
            except LangpruneError as exc:
                raise LangpruneError(f"config key {key}: {exc}") from None
            slug = variant.setting_slug(method, params)
            if slug in slugs:
                raise LangpruneError(f"config key {key}: the same setting as {method}[{slugs[slug]}] ({slug}, "
                                     f"defaults filled in); remove one")
            slugs[slug] = index


def _check_analysis(config: dict) -> None:
    analysis = config.get("analysis") or {}
    methods = Grid(config).all_methods
    sets = config["calibration"]["sets"]
    unknown = [m for m in analysis.get("methods", []) if m not in methods]
    if unknown:
        raise LangpruneError(f"config key analysis.methods: {', '.join(unknown)} not in pruning.methods or "
                             f"quantization.methods ({', '.join(methods)}); analyse only methods that are run")
    unknown = [c for c in analysis.get("calibrations", []) if c not in sets]
    if unknown:
        raise LangpruneError(f"config key analysis.calibrations: {', '.join(unknown)} not in calibration.sets "
                             f"({', '.join(sets)})")
    # Set explicitly, the analysis settings must leave something to compare. (Left to their defaults,
    # a one-set run stays valid: the grid leaves out the mask overlap, which has nothing to compare.)
    # Mask overlap compares checkpoints of one pruning setting (method, structure, sparsity): it needs two.
    grid = Grid(config)
    if ("methods" in analysis or "calibrations" in analysis) and max(map(grid.mask_pairs, grid.models)) < 2:
        raise LangpruneError(
            "config key analysis.calibrations: the mask-overlap analysis compares at least two checkpoints of one "
            "method, but analysis.methods x analysis.calibrations x calibration.seeds gives at most one (a method "
            "that reads no calibration data has one per structure and sparsity; a quantization method writes no "
            "masks); analyse a calibrated pruning method with two calibration sets or two seeds")
    if len(analysis.get("languages", [None, None])) < 2:
        raise LangpruneError(f"config key analysis.languages: the language-subspace analysis needs at least two "
                             f"probe languages, got {', '.join(analysis['languages'])}")


def _check_gguf_paths(config: dict) -> None:
    """A model built from a GGUF file lands at GGUF_MODEL_DIR; its path must say so."""
    for name, model in config["models"].items():
        built = GGUF_MODEL_DIR.format(model=name)
        if "gguf" in model and model["path"] != built:
            raise LangpruneError(f"config key models.{name}.path: a model with gguf: is built at {built}; "
                                 f"set path to that (and tokenizers to it), not '{model['path']}'")


def _check_plan(config: dict) -> None:
    """Every configured method, allocation and structure builds a checkpoint, and every layer-wise
    allocation keeps each layer's sparsity below 1 at every configured sparsity."""
    grid = Grid(config)
    for key, value, why in pairs_without_checkpoints(grid):
        raise LangpruneError(f"config key {key}: {value} builds no checkpoint: {why}; remove it from {key} or "
                             f"change the keys named")
    for allocation in allocation_names(config):
        spec = registry.allocation(allocation)
        for index, sparsity in enumerate(config["pruning"]["sparsities"]):
            if not any(c.allocation == allocation and c.sparsity == sparsity for c in grid.all_checkpoints()):
                continue
            try:
                spec.check_feasible(sparsity)
            except LangpruneError as exc:
                raise LangpruneError(
                    f"config key pruning.sparsities[{index}]: {sparsity:g} with pruning.allocation {allocation} "
                    f"fails its check ({exc}); lower the sparsity or drop {allocation} from pruning.allocation"
                ) from None


def check_references(config: dict, root: str | os.PathLike = ".") -> None:
    """Cross-key checks on a schema-valid config, everything a job would otherwise find out only later.

    ``root`` is the working directory relative ``text:DIR`` paths start from.
    """
    root = Path(root)
    tokenizers = config["tokenizers"]
    for name, model in config["models"].items():
        if model["tokenizer"] not in tokenizers:
            raise LangpruneError(f"config key models.{name}.tokenizer: '{model['tokenizer']}' is not a key of "
                                 f"tokenizers ({', '.join(tokenizers)})")
    perplexity = config["evaluation"]["perplexity"]
    if perplexity["max_tokens"] < perplexity["seqlen"]:
        raise LangpruneError(
            f"config key evaluation.perplexity.max_tokens: {perplexity['max_tokens']} is less than "
            f"evaluation.perplexity.seqlen {perplexity['seqlen']}; the token budget must hold at least one window")
    _check_gguf_paths(config)
    _check_tasks(config)
    _check_quantization(config)
    _check_plan(config)
    _check_analysis(config)
    for key, source, languages, languages_key in _text_sources(config):
        _check_text_source(config, key, source, languages, languages_key, root)


def check_config(config: dict, schema_path: str | os.PathLike, root: str | os.PathLike = ".") -> dict:
    """Every parse-time check of a loaded config: the schema (filling in its defaults, in place),
    then the cross-key references and the plan; returns ``config``."""
    check_schema(config, schema_path)
    check_references(config, root)
    return config


def check_workflow_config(config: dict, config_files, schema_path: str | os.PathLike,
                          root: str | os.PathLike = ".") -> dict:
    """The Snakefile's check: ``config`` as Snakemake loaded it from ``config_files``, each file
    read again strictly first, since Snakemake's YAML loader keeps the last of two equal keys.
    Fills in the schema's defaults in place, as `langprune config check` and `langprune plan` do."""
    for path in dict.fromkeys(str(p) for p in config_files):
        load_config_file(path)
    return check_config(config, schema_path, root)


def check_config_files(paths: list[str | os.PathLike], schema_path: str | os.PathLike | None = None,
                       root: str | os.PathLike = ".") -> dict:
    """`langprune config check`: load each file strictly, merge them in order, check the result."""
    config = merge_configs([load_config_file(path) for path in paths])
    check_config(config, schema_path or find_schema(), root)
    return config
