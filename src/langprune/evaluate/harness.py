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
from importlib.metadata import version
from pathlib import Path

from lm_eval import simple_evaluate
from lm_eval.tasks import TaskManager
from lm_eval.tasks._yaml_loader import load_yaml

from ..data.languages import check_mc4_languages
from ..errors import LangpruneError
from ..hub import PREFETCH_COMMAND, first_line, missing_error, offline
from ..io import CACHE_FILE, cache_dir, read_json, sha256_bytes, write_json
from .modelload import done_with_model, evaluation_tokenizer, load_evaluated_model
from .registry import TASKS_DIR, TaskEntry, select
from .results import check_metrics_out, record, write_metrics
from .sharedlm import DEFAULT_BATCH_TOKENS, check_backend, make_lm
from .units import item_units, record_fingerprint

BUILDERS = {".jsonl": "json", ".json": "json", ".jsonl.gz": "json", ".json.gz": "json", ".parquet": "parquet",
            ".csv": "csv"}
SPLIT_KEYS = ("test_split", "validation_split", "training_split", "fewshot_split")


@functools.lru_cache(maxsize=4)
def task_manager(include_defaults: bool = True, lm_eval_dirs: tuple[str, ...] = ()):
    """A process-wide TaskManager (indexing YAMLs is slow; do it once per set of directories).

    ``include_defaults=False`` indexes only this package's tasks, plus ``lm_eval_dirs`` (folders of
    lm-eval's own YAMLs): milliseconds instead of the 10-20 s lm-eval needs to parse its ~27,000 YAMLs,
    which dominated every evaluation job.
    """
    return TaskManager(include_path=[*lm_eval_dirs, str(TASKS_DIR)], include_defaults=include_defaults)


def _index_file() -> Path:
    import lm_eval  # noqa: PLC0415

    tasks = Path(lm_eval.__file__).parent / "tasks"
    key = sha256_bytes(f"{version('lm_eval')}\0{tasks}".encode())[:16]
    return cache_dir() / f"lm-eval-task-dirs-{key}.json"


def lm_eval_task_dirs(names: set[str]) -> tuple[str, ...] | None:
    """Folders of lm-eval's YAMLs that define ``names``, from a name -> folder index cached per lm-eval
    install (built once from the full index); None when a name is not in it."""
    index_file = _index_file()
    try:
        index = read_json(index_file)
    except (OSError, ValueError):
        full = task_manager()
        index = {name: str(entry.yaml_path.parent) for name, entry in full.task_index.items() if entry.yaml_path}
        try:
            write_json(index_file, index, CACHE_FILE)
        except (OSError, LangpruneError):
            pass  # an unwritable cache only costs time
    if not names <= index.keys():
        return None
    return tuple(sorted({index[name] for name in names}))


def manager_for(entries: list[TaskEntry]):
    """A TaskManager that knows every task asked for: this package's tasks plus the folders of lm-eval's
    that define the others, else lm-eval's full index."""
    own = task_manager(include_defaults=False)
    missing = {e.base or e.task for e in entries if e.available} - own.task_index.keys()
    if not missing:
        return own
    dirs = lm_eval_task_dirs(missing)
    return task_manager() if dirs is None else task_manager(False, dirs)


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


def task_config(entry: TaskEntry, resolve_func: bool = True) -> dict:
    """The task YAML of ``entry`` as lm-eval reads it (includes merged)."""
    manager = manager_for([entry])
    registered = manager.task_index.get(entry.base or entry.task)
    if registered is None or registered.yaml_path is None:
        raise LangpruneError(f"lm-eval has no task '{entry.base or entry.task}' (benchmark {entry.benchmark}); "
                             f"check lm-eval's version (requirements.txt pins it)")
    return load_yaml(registered.yaml_path, resolve_func=resolve_func)


def task_dataset(entry: TaskEntry) -> tuple[str, str | None, list[str]]:
    """``(dataset_path, dataset_name, urls)`` the task reads: a hub dataset, or files at URLs (``urls``)."""
    config = task_config(entry, resolve_func=False)
    files = (config.get("dataset_kwargs") or {}).get("data_files") or {}
    files = files.values() if isinstance(files, dict) else [files]
    urls = [f for group in files for f in ([group] if isinstance(group, str) else group)
            if str(f).startswith(("http://", "https://"))]
    return config["dataset_path"], config.get("dataset_name"), list(dict.fromkeys(urls))


def task_spec(entry: TaskEntry, task_data: list[str | Path]):
    """What lm-eval loads for ``entry``: its registered name, or a config dict with local data."""
    config = task_config(entry)
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
    path, name, urls = task_dataset(entry)
    local = (entry.local_data or "").split("|")[0] or f"{entry.task}/<split>.jsonl"
    source = f"data file {urls[0]}" if urls else f"dataset {path}" + (f" config {name}" if name else "")
    if offline():
        return missing_error(f"lm-eval task '{entry.task}'",
                             source + (f" (or DIR/{local} with --task-data DIR)" if urls else ""))
    return LangpruneError(f"cannot load the {source} of lm-eval task '{entry.task}': {first_line(exc)}; run "
                          f"`{PREFETCH_COMMAND}` where the hub can be reached, or save the data as DIR/{local} "
                          f"and pass --task-data DIR")


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
