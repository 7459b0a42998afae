"""Downstream tasks through lm-eval's Python API, on the in-memory (possibly pruned) model.

Settings the paper's comparison relies on: zero-shot, a fixed batch size, no bootstrap
(langprune's paired comparisons resample the per-item scores kept from lm-eval's per-sample
logs instead, see ``units.py``), and never lm-eval's request cache (its keys ignore the weights, so a
pruned variant would be served the dense model's answers). One ``TaskManager`` per
process indexes lm-eval's tasks plus this package's ``tasks/`` (MKQA, udhr_mc).

Offline use: ``task_data`` directories are searched for a local copy of each task's data
(see :func:`local_data_files`); a task found there reads it with the ``json``/``parquet``/
``csv`` builder instead of its hub dataset. Local copies must have the hub dataset's columns.
"""

from __future__ import annotations

import functools
from pathlib import Path

from lm_eval import simple_evaluate
from lm_eval.tasks import TaskManager
from lm_eval.tasks._yaml_loader import load_yaml

from ..data.languages import check_mc4_languages
from ..errors import LangpruneError
from .modelload import done_with_model, evaluation_tokenizer, load_evaluated_model
from .registry import TASKS_DIR, TaskEntry, select
from .results import check_metrics_out, record, write_metrics
from .sharedlm import DEFAULT_BATCH_TOKENS, check_backend, make_lm
from .units import item_units, record_fingerprint

BUILDERS = {".jsonl": "json", ".json": "json", ".jsonl.gz": "json", ".json.gz": "json", ".parquet": "parquet",
            ".csv": "csv"}
SPLIT_KEYS = ("test_split", "validation_split", "training_split", "fewshot_split")


@functools.lru_cache(maxsize=2)
def task_manager(include_defaults: bool = True):
    """The process-wide TaskManager (indexing all YAMLs is slow; do it once).

    ``include_defaults=False`` indexes only this package's tasks: milliseconds instead of
    the 5-10 s lm-eval needs for its thousands of YAMLs, which dominated every toy evaluation.
    """
    return TaskManager(include_path=str(TASKS_DIR), include_defaults=include_defaults)


def manager_for(entries: list[TaskEntry]):
    """The project-only TaskManager when it knows every task asked for, else the full one."""
    own = task_manager(include_defaults=False)
    if all((e.base or e.task) in own.task_index for e in entries):
        return own
    return task_manager()


def _builder(path: Path) -> str | None:
    return next((b for ext, b in BUILDERS.items() if path.name.endswith(ext)), None)


def _single_file(candidates: list[Path]) -> Path | None:
    return next((p for p in candidates if p.is_file() and _builder(p)), None)


def local_data_files(entry: TaskEntry, splits: list[str], task_data: list[str | Path]) -> tuple[str, dict] | None:
    """``(builder, {split: file})`` of a local copy of ``entry``'s data, or None to use the hub.

    Looked up in each directory in order: ``DIR/<task>/<split>.<ext>`` (one file per split),
    ``DIR/<task>.<ext>`` or the registry's ``local_data`` name(s) (one file for every split).
    """
    for root in map(Path, task_data):
        folder = root / entry.task
        if folder.is_dir():
            files = {s: _single_file([folder / f"{s}{ext}" for ext in BUILDERS]) for s in splits}
            files = {s: f for s, f in files.items() if f is not None}
            if not files:
                raise LangpruneError(f"{folder} has none of the split files {', '.join(splits)} (.jsonl/.json/"
                                     f".parquet/.csv) that task {entry.task} reads")
            return _builder(next(iter(files.values()))), {s: str(f) for s, f in files.items()}
        names = [f"{entry.task}{ext}" for ext in BUILDERS] + (entry.local_data or "").split("|")
        single = _single_file([root / n for n in names if n])
        if single is not None:
            return _builder(single), {s: str(single) for s in splits}
    return None


def task_spec(entry: TaskEntry, task_data: list[str | Path]):
    """What lm-eval loads for ``entry``: its registered name, or a config dict with local data."""
    manager = manager_for([entry])
    registered = manager.task_index.get(entry.base or entry.task)
    if registered is None or registered.yaml_path is None:
        raise LangpruneError(f"lm-eval has no task '{entry.base or entry.task}' (benchmark {entry.benchmark}); "
                             f"check lm-eval's version (requirements.txt pins it)")
    config = load_yaml(registered.yaml_path, resolve_func=True)
    splits = [config[k] for k in SPLIT_KEYS if config.get(k)]
    local = local_data_files(entry, sorted(set(splits)), task_data)
    if local is None:
        if entry.base is not None:
            raise LangpruneError(f"{entry.benchmark} has no hub data: pass --task-data DIR with DIR/{entry.local_data}"
                                 f" (build it with `langprune evaluate make-mc`)")
        return entry.task
    builder, files = local
    config.update(task=entry.task, dataset_path=builder, dataset_name=None, dataset_kwargs={"data_files": files})
    for key in SPLIT_KEYS:
        if config.get(key) and config[key] not in files:
            config[key] = None
    return config


def _dataset_error(entry: TaskEntry, exc: Exception) -> LangpruneError:
    local = (entry.local_data or "").split("|")[0] or f"{entry.task}/<split>.jsonl"
    return LangpruneError(
        f"cannot load the data of lm-eval task '{entry.task}' ({entry.benchmark}/{entry.language}): not cached and "
        f"the hub cannot be reached. Pre-download it by running the same `langprune evaluate tasks` with --limit 1 on "
        f"a machine with internet and copy its HF_HOME, or save the data as DIR/{local} and pass --task-data DIR "
        f"({type(exc).__name__}: {exc})")


def build_tasks(entries: list[TaskEntry], task_data: list[str | Path]) -> dict:
    """lm-eval Task objects by task name; a dataset that cannot be loaded is a clear error."""
    manager = manager_for(entries)
    tasks = {}
    for entry in entries:
        spec = task_spec(entry, task_data)
        try:
            tasks.update(manager.load(spec)["tasks"])
        except (OSError, ConnectionError, ValueError) as exc:
            raise _dataset_error(entry, exc) from exc
    return tasks


def score(entry: TaskEntry, results: dict) -> tuple[float | None, int]:
    """``(value, n)`` of one task from lm-eval's result dict."""
    metrics = results["results"].get(entry.task, {})
    value = metrics.get(f"{entry.metric},none")
    n = results.get("n-samples", {}).get(entry.task, {}).get("effective", 0)
    return value, n


def item_scores(entry: TaskEntry, results: dict) -> dict:
    """``{"units": ..., "fingerprint": ...}``: the per-item scores of one task, or nothing when lm-eval logged none."""
    samples = results.get("samples", {}).get(entry.task)
    if not samples:
        return {}
    units = item_units(samples, entry.metric)
    return {"units": units, "fingerprint": record_fingerprint(units)}


def evaluate_tasks(model: str, benchmarks: list[str], languages: list[str], out: str, *,
                   checkpoint: str | None = None, limit: int | None = None, batch_size: int = 1,
                   max_length: int | None = None, task_data: list[str] = (), dtype: str | None = None,
                   device: str = "cpu", revision: str | None = None, tags: dict | None = None,
                   force: bool = False, backend: str = "shared", batch_tokens: int | None = None) -> dict:
    """Zero-shot accuracy / F1 of ``model`` (+ ``checkpoint``) on benchmarks x languages; writes metrics JSON.

    ``backend`` ``shared`` scores each distinct context once (:mod:`.sharedlm`, batches of
    ``batch_tokens`` tokens); ``hflm`` is lm-eval's plain HFLM (``batch_size`` requests a batch).
    """
    batch_tokens = DEFAULT_BATCH_TOKENS if batch_tokens is None else batch_tokens
    check_backend(backend, batch_tokens)
    if limit is not None and limit <= 0:
        raise LangpruneError(f"--limit must be a positive number of items per task, not {limit}")
    if batch_size <= 0:
        raise LangpruneError(f"--batch-size must be positive, not {batch_size}")
    check_mc4_languages(languages)
    check_metrics_out(out, force=force, inputs=[model, checkpoint, *task_data])
    entries = select(benchmarks, languages)
    runnable = [e for e in entries if e.available]
    tasks = build_tasks(runnable, list(task_data))
    results = {"results": {}, "n-samples": {}}
    if tasks:
        lm_model = load_evaluated_model(model, checkpoint, dtype=dtype, device=device, revision=revision)
        lm = make_lm(backend, lm_model, evaluation_tokenizer(model, revision), batch_size=batch_size,
                     max_length=max_length, batch_tokens=batch_tokens)
        results = simple_evaluate(model=lm, tasks=list(tasks.values()), num_fewshot=0, batch_size=batch_size,
                                  limit=limit, bootstrap_iters=0, log_samples=True, use_cache=None,
                                  cache_requests=False, task_manager=manager_for(runnable))
        del lm, lm_model
        done_with_model()
    records = []
    for entry in entries:
        value, n = score(entry, results) if entry.available else (None, 0)
        records.append(record(entry.benchmark, entry.label, entry.metric, value, n,
                              entry.available and value is not None,
                              task=entry.task, **(item_scores(entry, results) if entry.available else {})))
    settings = {"benchmarks": benchmarks, "languages": languages, "limit": limit, "batch_size": batch_size,
                "max_length": max_length, "num_fewshot": 0, "revision": revision,
                "task_data": [str(d) for d in task_data], "dtype": dtype,
                "backend": backend, "batch_tokens": batch_tokens if backend == "shared" else None}
    return write_metrics(out, kind="tasks", model=model, checkpoint=checkpoint, records=records, tags=tags,
                         settings=settings, force=force)
