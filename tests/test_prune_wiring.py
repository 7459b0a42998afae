"""How the pruning package is put together: no import cycle, methods built from the registry, one checked
request, the OWL-ratios file's own hash. Cheap: no model is loaded here."""

from __future__ import annotations

import ast
import json
import math
import random
from pathlib import Path

import pytest

from langprune import registry
from langprune.errors import LangpruneError
from langprune.owl_ratios import check_made_for, content_hash, ratios_record, read_owl_ratios
from langprune.prune import PruneRequest, check_request
from langprune.prune.allocation import owl_sparsities
from langprune.prune.methods import METHODS, from_spec, get_method

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "langprune"


def _modules(package: Path) -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package's __init__) for every module of ``package``."""
    modules = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        modules[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return modules


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Which langprune modules each one imports: every import statement, wherever it stands.

    Imports inside functions and under ``if TYPE_CHECKING:`` count: a cycle of them is a
    cycle in the design even when it does not break at run time. ``from pkg import name``
    is an edge to ``pkg.name`` when that is a module, else to ``pkg``.
    """
    modules = _modules(package)
    graph: dict[str, set[str]] = {}
    for name, (path, is_package) in modules.items():
        here = name.split(".") if is_package else name.split(".")[:-1]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                edges |= {alias.name for alias in node.names if alias.name in modules}
            elif isinstance(node, ast.ImportFrom):
                base = here[:len(here) - node.level + 1] if node.level else []
                target = ".".join([*base, *([node.module] if node.module else [])])
                for alias in node.names:
                    edges.add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in modules else target)
        graph[name] = {edge for edge in edges if edge in modules and edge != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (its modules in order, the first repeated at the end), or None."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        path.pop()
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert "langprune.prune.engine" in graph and "langprune.prune.methods" in graph["langprune.prune.engine"]
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_cycle_finder_sees_type_only_and_function_level_imports(tmp_path):
    package = tmp_path / "langprune"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .b import B\n")
    (package / "b.py").write_text("def f():\n    from . import a\n")
    assert find_cycle(import_graph(package)) == ["langprune.a", "langprune.b", "langprune.a"]
    (package / "b.py").write_text("def f():\n    from .. import langprune\n")
    assert find_cycle(import_graph(package)) is None


def test_the_pruning_package_init_only_re_exports():
    tree = ast.parse((PACKAGE / "prune" / "__init__.py").read_text(encoding="utf-8"))
    body = tree.body[1:] if isinstance(tree.body[0], ast.Expr) else tree.body  # the docstring
    for node in body:
        is_all = isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["__all__"]
        assert isinstance(node, ast.ImportFrom) and node.level == 1 or is_all, ast.dump(node)


def test_the_pruning_package_reads_no_shard_itself():
    """Calibration shards are read through langprune.data.shards only (one reader, one metadata key)."""
    for path in sorted((PACKAGE / "prune").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(name.split(".")[0] == "safetensors" for name in names), path.name


def test_every_registered_method_is_its_spec_made_runnable():
    assert list(METHODS) == list(registry.METHODS)
    for name, spec in registry.METHODS.items():
        method = METHODS[name]
        assert method.prune is spec.resolve() and method.needs == spec.statistics
        assert method.updates_weights == spec.updates_weights and dict(method.params) == spec.bind()


def test_a_spec_whose_function_takes_other_keywords_is_refused():
    ria = registry.METHODS["ria"]
    alpha = registry.Param("alpha", "--ria2-alpha", 0.5, "a", range=ria.params[0].range)
    renamed = registry.MethodSpec("ria2", ria.function, ria.summary, ria.statistics, params=(alpha,))
    with pytest.raises(TypeError, match=r"keyword-only arguments \['a', 'per_outneuron'\].*\['alpha'\]"):
        from_spec(renamed)


@pytest.mark.parametrize("name,params,message", [
    ("ria", {"a": math.nan}, "--ria-a nan: must be a number >= 0"),
    ("ria", {"a": -2.0}, "--ria-a -2.0: must be a number >= 0"),
    ("mwanda", {"spread_weight": math.nan}, "--mwanda-spread-weight nan"),
    ("dsnot", {"update_threshold": -1.0}, "--dsnot-update-threshold -1.0"),
    ("dsnot", {"max_cycles": -5}, "--dsnot-max-cycles -5: must be an integer >= 1"),
    ("dsnot", {"initial": "sparsegpt"}, "--dsnot-initial 'sparsegpt': must be one of magnitude, wanda, ria"),
    ("ria", {"alpha": 1.0}, "--method ria has no hyperparameter alpha"),
])
def test_hyperparameters_are_checked_against_the_registry(name, params, message):
    with pytest.raises(LangpruneError, match=message.replace("(", r"\(").replace(")", r"\)")):
        get_method(name, **params)


def _request(**changes) -> PruneRequest:
    """A request that passes every file-free check; the model and shard need not exist for them."""
    settings = dict(model="no/such-model", out="unused", method="wanda", sparsity=0.5, calibration="shard")
    return PruneRequest(**{**settings, **changes})


@pytest.mark.parametrize("changes,message", [
    ({"allocation": "owl", "allocation_params": {"lambda": -0.3}}, "--owl-lambda -0.3: must be a number in [0, 1)"),
    ({"allocation": "owl", "allocation_params": {"M": math.nan}}, "--owl-m nan: must be a number > 0"),
    ({"allocation": "cwl", "allocation_params": {"M": 3.0}}, "--allocation cwl has no hyperparameter M"),
    ({"allocation": "owl", "sparsity": 0.95, "allocation_params": {"lambda": 0.2}}, "must stay below 1"),
    ({"allocation": "owl", "sparsity": None, "structure": "2:4"}, "needs unstructured sparsity"),
    ({"method": "dsnot", "sparsity": None, "structure": "2:4"}, "--method dsnot works on unstructured masks only"),
    ({"owl_ratios": "r.json"}, "--owl-ratios applies to --allocation owl, not --allocation uniform"),
    ({"calibration": None}, "--method wanda needs --calibration SHARD.safetensors (only magnitude runs without)"),
    ({"method": "magnitude", "calibration": None, "allocation": "cwl"}, "--allocation cwl needs --calibration"),
    ({"batch_size": 0}, "--batch-size 0: must be an integer >= 1"),
    ({"seed": -1}, "--seed -1: must be an integer in [0, 4294967295]"),
    ({"device": "tpu"}, "--device 'tpu' is not 'cpu' or 'cuda[:N]'"),
    ({"dtype": "int3"}, "--dtype 'int3' is not one of"),
    ({"method": "obs"}, "--method 'obs' is not one of: magnitude, wanda"),
    ({"allocation": "owlish"}, "--allocation 'owlish' is not one of: uniform, owl, cwl"),
])
def test_a_request_is_checked_before_any_file_is_read(changes, message):
    with pytest.raises(LangpruneError) as caught:
        check_request(_request(**changes))
    assert message in str(caught.value)


def test_a_checked_request_binds_the_published_defaults():
    checked = check_request(_request(method="ria", method_params={"a": 0.25}, allocation="owl"))
    assert dict(checked.method.params) == {"a": 0.25, "per_outneuron": False}
    assert checked.allocation_params == {"M": 5.0, "lambda": 0.08} and checked.structure.sparsity == 0.5
    with pytest.raises(AttributeError):
        checked.request.sparsity = 0.7  # frozen: what was checked is what runs


def _ratios_file(tmp_path: Path, **changes) -> Path:
    calibration = {"path": "s.safetensors", "sha256": "c" * 64, "nsamples": 4, "seqlen": 32}
    record = ratios_record(model="m", revision=None, base_sha256="b" * 64, dtype="torch.float32",
                           calibration=calibration, m=5.0, ratios=[1.5, 3.25], device="cpu")
    path = tmp_path / "ratios.json"
    path.write_text(json.dumps({**record, **changes}, indent=2))
    return path


def test_the_owl_ratios_file_carries_its_own_hash(tmp_path):
    path = _ratios_file(tmp_path)
    record = read_owl_ratios(path)
    assert record["sha256"] == content_hash(record) and record["outlier_ratios"] == [1.5, 3.25]
    assert content_hash({**record, "sha256": "anything"}) == record["sha256"]  # the hash covers all but itself
    made_for = dict(base_sha256="b" * 64, calibration_sha256="c" * 64, m=5.0)
    assert check_made_for(record, path, **made_for, dtype="torch.float32", layers=2)["path"] == str(path)
    for changes, message in [({"base_sha256": "x"}, "another base model weights"), ({"m": 3.0}, "another M"),
                             ({"calibration_sha256": "x"}, "another calibration shard"),
                             ({"dtype": "torch.bfloat16"}, "another dtype"), ({"layers": 3}, "number of layers")]:
        with pytest.raises(LangpruneError, match=message):
            check_made_for(record, path, **{**made_for, **changes})


@pytest.mark.parametrize("changes,message", [
    ({"outlier_ratios": [1.5, 3.0]}, "does not match the SHA-256 it records"),
    ({"M": 3.0}, "does not match the SHA-256 it records"),
    ({"sha256": None}, "does not match the SHA-256 it records"),
    ({"format": 1}, "is not an OWL ratios file of format 2"),
])
def test_an_edited_owl_ratios_file_is_refused(tmp_path, changes, message):
    with pytest.raises(LangpruneError, match=message):
        read_owl_ratios(_ratios_file(tmp_path, **changes))


@pytest.mark.parametrize("ratios", [["a", "b"], [-3, 7], [50, 101], [math.nan, 1.0], [], "12", [True, 1.0]])
def test_owl_ratios_must_be_percentages_even_with_a_matching_hash(tmp_path, ratios):
    path = _ratios_file(tmp_path)
    record = {**json.loads(path.read_text()), "outlier_ratios": ratios}
    path.write_text(json.dumps({**record, "sha256": content_hash(record)}))
    with pytest.raises(LangpruneError, match="must be a non-empty list of finite percentages in \\[0, 100\\]"):
        read_owl_ratios(path)


def test_the_layer_wise_allocations_name_their_pass_and_spreading():
    from langprune.prune import allocation, dense_pass

    layer_wise = [spec for spec in registry.ALLOCATIONS.values() if spec.layer_values is not None]
    assert {spec.name for spec in layer_wise} == {"owl", "cwl"}
    for spec in layer_wise:
        assert spec.resolve_layer_values().__module__ == dense_pass.__name__
        assert spec.resolve_sparsities().__module__ == allocation.__name__
    with pytest.raises(ValueError, match="needs layer_values, values_key, sparsities and spread"):
        registry.AllocationSpec("half", "a layer-wise allocation without its spreading", needs_calibration=True,
                                layer_values="x:y", values_key="v", spread=registry.ALLOCATIONS["owl"].spread)


@pytest.mark.parametrize("sparsity,spread,feasible", [(0.84, 0.08, True), (0.85, 0.08, False), (0.5, 0.25, True),
                                                      (0.5, 0.26, False), (math.nan, 0.08, False)])
def test_allocation_feasibility_is_the_spreading_worst_case(sparsity, spread, feasible):
    owl = registry.ALLOCATIONS["owl"]
    if feasible:
        owl.check_feasible(sparsity, spread)
    else:
        with pytest.raises(LangpruneError, match="must stay below 1"):
            owl.check_feasible(sparsity, spread)


def test_feasible_settings_never_fail_in_the_spreading_and_infeasible_ones_can():
    """Whatever the per-layer values, a setting the early check accepts spreads without a layer at 1."""
    rng = random.Random(0)
    for _ in range(2000):
        layers = rng.randint(2, 40)
        ratios = [rng.choice([0.0, 1.0]) if rng.random() < 0.5 else rng.random() for _ in range(layers)]
        spread = rng.uniform(0, 0.3)
        sparsity = rng.uniform(0.05, 1 - 2 * spread) if spread < 0.475 else 0.05
        registry.ALLOCATIONS["owl"].check_feasible(sparsity, spread)
        assert max(owl_sparsities(ratios, sparsity, spread)) < 1
    # the bound is tight: all layers but one at the top of the scale put that one near sparsity + 2 * spread
    with pytest.raises(LangpruneError, match=">= 1"):
        owl_sparsities([1.0] * 99 + [0.0], 0.85, 0.08)
