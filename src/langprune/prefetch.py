"""`langprune prefetch`: put everything a workflow config reads from the hub into the cache first.

Compute jobs then run offline (``HF_HUB_OFFLINE=1``, ``HF_DATASETS_OFFLINE=1``). The plan comes
from the config's grid alone (:func:`plan_grid`): each hub model's and tokenizer's loading files, the mC4
files calibration (train) and perplexity (validation) read per language, every dataset (path,
config) of the configured lm-eval tasks, the Belebele probe of the analysis, and the one file
read from outside the hub (MKQA's release). Fetching then:

1. resolves each repository to a commit and each item to files with the sizes and hashes the
   hub reports, and says what it will download and how much disk that needs;
2. refuses before downloading anything when the cache's disk is too small;
3. downloads into the Hugging Face cache (huggingface_hub writes ``*.incomplete`` files and
   renames them when complete, so an interrupted run resumes there); every file, also one already
   present, is checked against the hub's size and SHA-256 (git blob id for small files), and a file
   that fails is removed and fetched again, so a half-written file never counts as present;
4. prepares each lm-eval dataset in the ``datasets`` cache, where ``HF_DATASETS_OFFLINE=1`` reads it;
5. writes a manifest: the resolved commit of each repository, its files, sizes and hashes.

A model loaded offline reads the prefetched commit (the cache's ``refs/main`` points there), and
a checkpoint records that commit as its base revision.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import shutil
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any

from .errors import LangpruneError
from .io import carries_marker, marker, marker_file_kind, read_json, sha256_file, write_json

MANIFEST_FORMAT = "langprune-prefetch-manifest"
DEFAULT_MANIFEST = "results/prefetch/manifest.json"
TASK_DATA_DIR = "task-data"  # beside the manifest: files read from outside the hub, as --task-data
URL_MIRROR_ENV = "LANGPRUNE_URL_MIRROR"  # "ORIGINAL_PREFIX=REPLACEMENT_PREFIX" for files outside the hub
DEFAULT_RESERVE = 1 << 30  # bytes left free after the download
PREPARED_FACTOR = 2  # a prepared (arrow) dataset is estimated at this multiple of its files when the hub says nothing

# Root files a model or tokenizer is loaded from; weights are *.safetensors, else *.bin.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "tokenizer.model", "spiece.model", "vocab.json", "vocab.txt", "merges.txt", "*.tiktoken",
                   "chat_template.json", "chat_template.jinja", "config.json")
MODEL_FILES = ("config.json", "generation_config.json")

MANIFEST_KIND = marker_file_kind("prefetch manifest", MANIFEST_FORMAT)


# ---------------------------------------------------------------- the plan (config only, no network)

@dataclass(frozen=True)
class Need:
    """One thing jobs read from outside the working directory.

    ``kind`` is ``model`` (a model's or tokenizer's loading files; ``weights`` says whether the
    weights are read), ``files`` (files of a dataset repository matching ``patterns``),
    ``dataset`` (a dataset config as ``datasets.load_dataset(repo, config)`` reads it) or ``url``.
    """

    kind: str
    repo: str
    config: str | None = None
    revision: str | None = None
    patterns: tuple[str, ...] = ()
    weights: bool = False
    readers: tuple[str, ...] = ()

    @property
    def key(self) -> tuple:
        return (self.kind, self.repo, self.config, self.revision, self.patterns)

    @property
    def label(self) -> str:
        at = f"@{self.revision}" if self.revision else ""
        if self.kind == "model":
            return f"model {self.repo}{at} ({'weights and tokenizer' if self.weights else 'tokenizer'})"
        if self.kind == "files":
            return f"dataset {self.repo}{at} files {', '.join(self.patterns)}"
        if self.kind == "dataset":
            return f"dataset {self.repo}{at} " + (f"config {self.config}" if self.config else "(default config)")
        return f"url {self.repo}"


def _is_hub_id(name: str) -> bool:
    """A hub id (``org/name``) rather than a local directory; the workflow's built dirs are local."""
    return not Path(name).exists() and not name.startswith(("results/", "/", "./", "../")) and name.count("/") == 1


def _merge(needs: list[Need]) -> list[Need]:
    merged: dict[tuple, Need] = {}
    for need in needs:
        old = merged.get(need.key)
        merged[need.key] = need if old is None else replace(
            old, weights=old.weights or need.weights, readers=tuple(dict.fromkeys(old.readers + need.readers)))
    return list(merged.values())


def _model_needs(grid) -> list[Need]:
    needs = []
    for name, model in grid.models.items():
        if name not in grid.gguf_models and _is_hub_id(model["path"]):
            needs.append(Need("model", model["path"], revision=model.get("revision"), weights=True,
                              readers=(f"model {name}",)))
    for name, path in grid.tokenizers.items():
        if _is_hub_id(path):
            revisions = {m.get("revision") for m in grid.models.values() if m["path"] == path} or {None}
            needs += [Need("model", path, revision=r, readers=(f"tokenizer {name}",)) for r in revisions]
    # A tokenizer that lives in a model's repository comes with the model's files.
    weighted = {(n.repo, n.revision) for n in needs if n.weights}
    return [replace(n, weights=True) if (n.repo, n.revision) in weighted else n for n in needs]


def _mc4_needs(grid) -> list[Need]:
    from .data.sources import MC4_REPO, mc4_data_files  # noqa: PLC0415

    reads = []
    if grid.config["calibration"]["source"] == "mc4":  # the languages of the shards some prune job reads
        langs = dict.fromkeys(lang for shard in grid.shards() for lang in shard.languages)
        reads += [(lang, "train", "calibration") for lang in langs]
    if grid.config["evaluation"]["perplexity"]["source"] == "mc4":
        reads += [(lang, "validation", "perplexity") for lang in grid.languages]
    return [Need("files", MC4_REPO, patterns=tuple(mc4_data_files(lang, split)), readers=(f"{reader} {lang}",))
            for lang, split, reader in reads]


def _hub_tasks(grid):
    """The registry entries of the configured tasks whose data comes from the hub or a URL (not built locally)."""
    from .evaluate.registry import select  # noqa: PLC0415

    return [entry for benchmark, settings in grid.tasks.items() for entry in select([benchmark], settings["languages"])
            if entry.available and entry.base is None]


def _task_needs(grid) -> list[Need]:
    from .evaluate.harness import task_dataset  # noqa: PLC0415 - lm-eval's task index

    needs = []
    for entry in _hub_tasks(grid):
        path, name, urls = task_dataset(entry)
        reader = (f"task {entry.task}",)
        needs += [Need("url", url, readers=reader) for url in urls] or [Need("dataset", path, config=name,
                                                                               readers=reader)]
    return needs


def _probe_needs(grid) -> list[Need]:
    from .analysis.probe import BELEBELE, BELEBELE_CONFIG  # noqa: PLC0415

    analysis = grid.analysis
    if analysis.probe != "belebele":
        return []
    return [Need("dataset", BELEBELE, config=BELEBELE_CONFIG[lang], readers=("analysis probe",))
            for lang in analysis.languages if lang in BELEBELE_CONFIG]


def plan_grid(grid) -> list[Need]:
    """What the jobs of a config's grid read from the hub, merged by repository and config."""
    return _merge(_model_needs(grid) + _mc4_needs(grid) + _task_needs(grid) + _probe_needs(grid))


def reads_hub(grid) -> bool:
    """Whether the jobs of a grid read anything from the hub, so the workflow runs the prefetch first.
    Cheap enough for Snakemake's parse time: lm-eval is not imported."""
    return bool(_model_needs(grid) or _mc4_needs(grid) or _probe_needs(grid) or _hub_tasks(grid))


def saves_task_data(benchmark: str) -> bool:
    """Whether a benchmark's tasks read a file from outside the hub (MKQA's release), which the prefetch
    saves in ``task-data/`` beside its manifest for ``--task-data``: registry rows naming a local file
    without a task template (those are built locally, as udhr_mc's are)."""
    from .evaluate.registry import load_registry  # noqa: PLC0415

    return any(e.benchmark == benchmark and e.task and e.local_data and e.base is None for e in load_registry())


def load_plan(configfiles: list[str]) -> list[Need]:
    """The plan of config files merged as ``snakemake --configfile A B`` merges them, checked first."""
    from .config import check_config_files  # noqa: PLC0415
    from .grid import Grid  # noqa: PLC0415

    return plan_grid(Grid(check_config_files(configfiles)))


# ---------------------------------------------------------------- resolving against the hub


@dataclass
class FileInfo:
    """One file as the hub describes it: size, SHA-256 for LFS files, the git blob id otherwise."""

    path: str
    size: int | None
    sha256: str | None = None
    blob: str | None = None

    def as_dict(self) -> dict:
        return {"path": self.path, "size": self.size, "sha256": self.sha256, "blob": self.blob}


@dataclass
class Resolved:
    need: Need
    repo_type: str
    commit: str | None
    files: list[FileInfo] = field(default_factory=list)
    prepared_bytes: int = 0
    builder: Any = None

    @property
    def download_bytes(self) -> int:
        return sum(f.size or 0 for f in self.files)


def _hub_errors():
    from huggingface_hub import errors  # noqa: PLC0415

    return errors


def _explain(need: Need, exc: Exception) -> LangpruneError:
    """A hub failure as one line naming the repository, config or file and what to do."""
    errors = _hub_errors()
    what = need.label
    if isinstance(exc, errors.GatedRepoError):
        return LangpruneError(
            f"{need.repo} is gated: accept its license on its hub page, then log in with `hf auth login` "
            f"(or set HF_TOKEN) and run the prefetch again ({what})")
    if isinstance(exc, errors.RevisionNotFoundError):
        return LangpruneError(f"{need.repo} has no revision '{need.revision}' on the hub ({what}); "
                              f"fix models.*.revision in the config")
    if isinstance(exc, errors.RepositoryNotFoundError):
        return LangpruneError(f"repository {need.repo} does not exist on the hub {_endpoint()} (or it is private: "
                              f"log in with `hf auth login`); it is read by {', '.join(need.readers)}")
    if isinstance(exc, (errors.EntryNotFoundError, errors.RemoteEntryNotFoundError)):
        return LangpruneError(f"{what}: a file does not exist on the hub ({_first_line(exc)})")
    if isinstance(exc, errors.OfflineModeIsEnabled):
        return LangpruneError(f"{what} is not fully cached and HF_HUB_OFFLINE=1 is set: the prefetch downloads "
                              f"from the hub, so run it without HF_HUB_OFFLINE, where the hub can be reached")
    return LangpruneError(f"cannot fetch {what} from {_endpoint()}: {_first_line(exc)}; check the network or "
                          f"HF_ENDPOINT (a site mirror)")


def _first_line(exc: BaseException) -> str:
    from .hub import first_line  # noqa: PLC0415

    return first_line(exc)


def _endpoint() -> str:
    from huggingface_hub import constants  # noqa: PLC0415

    return constants.ENDPOINT


def _file_info(entry) -> FileInfo:
    lfs = getattr(entry, "lfs", None)
    return FileInfo(entry.path, entry.size, sha256=lfs.sha256 if lfs else None, blob=entry.blob_id)


def loading_files(names: list[str], weights: bool) -> list[str]:
    """The root files transformers reads to load a model (``weights``) or only its tokenizer."""
    root = [n for n in names if "/" not in n]
    wanted = set(TOKENIZER_FILES) | (set(MODEL_FILES) if weights else set())
    chosen = [n for n in root if any(fnmatch.fnmatch(n, pattern) for pattern in wanted)]
    if weights:
        safetensors = [n for n in root if n.endswith(".safetensors") or n == "model.safetensors.index.json"]
        torch_bin = [n for n in root if n.startswith("pytorch_model") and n.endswith((".bin", ".bin.index.json"))]
        chosen += safetensors or torch_bin
    return sorted(set(chosen))


def _resolve_model(api, need: Need) -> Resolved:
    info = api.model_info(need.repo, revision=need.revision or "main")
    entries = {e.path: e for e in api.list_repo_tree(need.repo, revision=info.sha, recursive=True)
               if hasattr(e, "size")}
    names = loading_files(list(entries), need.weights)
    if need.weights and not any(n.endswith((".safetensors", ".bin")) for n in names):
        raise LangpruneError(f"{need.label}: no weight files (*.safetensors or pytorch_model*.bin) in the "
                             f"repository's root at {info.sha}")
    return Resolved(need, "model", info.sha, [_file_info(entries[n]) for n in names])


def _resolve_files(api, need: Need, listings: dict) -> Resolved:
    info = api.dataset_info(need.repo, revision=need.revision or "main")
    files = []
    for pattern in need.patterns:
        folder = str(PurePosixPath(pattern).parent)
        key = (need.repo, info.sha, folder)
        if key not in listings:
            listings[key] = {e.path: e for e in api.list_repo_tree(need.repo, path_in_repo=folder,
                                                                   repo_type="dataset", revision=info.sha)
                             if hasattr(e, "size")}
        matches = sorted(p for p in listings[key] if fnmatch.fnmatch(p, pattern))
        if not matches:
            raise LangpruneError(f"dataset {need.repo} has no file matching {pattern} at {info.sha} "
                                 f"(read by {', '.join(need.readers)})")
        files.append(_file_info(listings[key][matches[0]]))
    return Resolved(need, "dataset", info.sha, files)


def _hf_path(url: str, repo: str) -> str | None:
    """The path inside ``repo`` of a ``hf://datasets/<repo>@<rev>/<path>`` data file."""
    prefix = f"hf://datasets/{repo}@"
    return url[len(prefix):].split("/", 1)[1] if url.startswith(prefix) else None


def _resolve_dataset(api, need: Need) -> Resolved:
    import datasets  # noqa: PLC0415

    info = api.dataset_info(need.repo, revision=need.revision or "main")
    try:
        builder = datasets.load_dataset_builder(need.repo, need.config, revision=info.sha)
    except ValueError as exc:
        raise LangpruneError(f"dataset {need.repo} has no config '{need.config}' at {info.sha} "
                             f"(read by {', '.join(need.readers)}): {_first_line(exc)}") from exc
    paths = sorted({p for urls in (builder.config.data_files or {}).values() for url in urls
                    if (p := _hf_path(str(url), need.repo))})
    if not paths:
        raise LangpruneError(f"dataset {need.repo} config '{need.config}' names no data files on the hub "
                             f"(a loading script?); lm-eval cannot read it with this `datasets`")
    files = [_file_info(e) for e in api.get_paths_info(need.repo, paths, repo_type="dataset", revision=info.sha)]
    found = {f.path for f in files}
    for path in paths:
        if path not in found:
            raise LangpruneError(f"dataset {need.repo} config '{need.config}': file {path} does not exist at "
                                 f"{info.sha}")
    prepared = 0 if (Path(builder.cache_dir) / "dataset_info.json").exists() else (
        builder.info.dataset_size or PREPARED_FACTOR * sum(f.size or 0 for f in files))
    return Resolved(need, "dataset", info.sha, files, prepared_bytes=prepared, builder=builder)


def mirrored_url(url: str) -> str:
    """``url`` with the prefix rewrite of ``LANGPRUNE_URL_MIRROR`` (a site's copy of files outside the hub)."""
    rule = os.environ.get(URL_MIRROR_ENV, "")
    if not rule:
        return url
    original, sep, replacement = rule.partition("=")
    if not sep or not original:
        raise LangpruneError(f"{URL_MIRROR_ENV}='{rule}' must be ORIGINAL_PREFIX=REPLACEMENT_PREFIX")
    return replacement + url[len(original):] if url.startswith(original) else url


def _resolve_url(need: Need) -> Resolved:
    import requests  # noqa: PLC0415

    url = mirrored_url(need.repo)
    try:
        response = requests.head(url, allow_redirects=True, timeout=30)
        response.raise_for_status()
    except requests.RequestException as exc:
        raise LangpruneError(f"cannot reach {url} (read by {', '.join(need.readers)}): {_first_line(exc)}; "
                             f"set {URL_MIRROR_ENV} to a copy your site can reach") from exc
    size = int(response.headers["content-length"]) if "content-length" in response.headers else None
    return Resolved(need, "url", None, [FileInfo(PurePosixPath(need.repo).name, size)])


def resolve(needs: list[Need]) -> list[Resolved]:
    """Each need as files with sizes and hashes at a resolved commit (metadata only, nothing downloaded)."""
    from huggingface_hub import HfApi  # noqa: PLC0415

    api, listings, resolved = HfApi(), {}, []
    for need in needs:
        try:
            if need.kind == "model":
                resolved.append(_resolve_model(api, need))
            elif need.kind == "files":
                resolved.append(_resolve_files(api, need, listings))
            elif need.kind == "dataset":
                resolved.append(_resolve_dataset(api, need))
            else:
                resolved.append(_resolve_url(need))
        except LangpruneError:
            raise
        except Exception as exc:  # noqa: BLE001 - every hub failure becomes one line naming the item
            if isinstance(exc, _hub_errors().HfHubHTTPError) or isinstance(exc, (OSError, ValueError)):
                raise _explain(need, exc) from exc
            raise
    return resolved


# ---------------------------------------------------------------- what is present, and verification


def git_blob_id(path: Path) -> str:
    """Git's object id of a file (what the hub reports as ``blob_id`` for non-LFS files)."""
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode(), usedforsecurity=False)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify(path: Path, info: FileInfo) -> str | None:
    """Why ``path`` is not the hub's file (size, then SHA-256 or git blob id), or None if it is."""
    size = path.stat().st_size
    if info.size is not None and size != info.size:
        return f"{size} bytes instead of {info.size}"
    if info.sha256 and sha256_file(path) != info.sha256:
        return "SHA-256 differs from the hub's"
    if not info.sha256 and info.blob and git_blob_id(path) != info.blob:
        return "git blob id differs from the hub's"
    return None


def cached_path(item: Resolved, info: FileInfo) -> Path | None:
    from huggingface_hub import try_to_load_from_cache  # noqa: PLC0415

    found = try_to_load_from_cache(item.need.repo, info.path, revision=item.commit, repo_type=item.repo_type)
    return Path(found) if isinstance(found, str) and os.path.exists(found) else None


def url_path(manifest: Path, info: FileInfo) -> Path:
    return manifest.parent / TASK_DATA_DIR / info.path


def present_bytes(items: list[Resolved], manifest: Path) -> int:
    """Bytes of planned files already complete in the cache (by size; hashes are checked when fetching)."""
    total = 0
    for item in items:
        for info in item.files:
            path = url_path(manifest, info) if item.repo_type == "url" else cached_path(item, info)
            if path is not None and path.exists() and (info.size is None or path.stat().st_size == info.size):
                total += info.size or 0
    return total


def _remove_cached(path: Path) -> None:
    """Remove a cached file that failed verification: its blob and the snapshot link to it."""
    blob = path.resolve()
    for p in {blob, path}:
        if p.exists() or p.is_symlink():
            p.unlink()


def _download(item: Resolved, info: FileInfo, manifest: Path) -> Path:
    if item.repo_type == "url":
        return _download_url(item, info, manifest)
    from huggingface_hub import hf_hub_download  # noqa: PLC0415

    present = cached_path(item, info)
    if present is not None:
        problem = verify(present, info)
        if problem is None:
            return present
        print(f"  {info.path}: cached copy is incomplete or corrupt ({problem}); fetching it again", file=sys.stderr)
        _remove_cached(present)
    try:
        local = Path(hf_hub_download(item.need.repo, info.path, repo_type=item.repo_type, revision=item.commit))
    except Exception as exc:  # noqa: BLE001 - hub failures become one line naming the file
        if isinstance(exc, _hub_errors().HfHubHTTPError) or isinstance(exc, OSError):
            raise _explain(item.need, exc) from exc
        raise
    problem = verify(local, info)
    if problem is not None:
        _remove_cached(local)
        raise LangpruneError(f"{item.need.label}: downloaded {info.path} does not match the hub ({problem}); "
                             f"removed it, run the prefetch again")
    return local


def _download_url(item: Resolved, info: FileInfo, manifest: Path) -> Path:
    """A file outside the hub, written as ``*.incomplete`` and renamed when its size is right."""
    import requests  # noqa: PLC0415

    target = url_path(manifest, info)
    if target.exists() and (info.size is None or target.stat().st_size == info.size):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".incomplete")
    url = mirrored_url(item.need.repo)
    with requests.get(url, stream=True, timeout=60) as response:
        response.raise_for_status()
        with open(partial, "wb") as out:
            for chunk in response.iter_content(1 << 20):
                out.write(chunk)
    if info.size is not None and partial.stat().st_size != info.size:
        partial.unlink()
        raise LangpruneError(f"{url}: got a different number of bytes than announced ({info.size}); run again")
    os.replace(partial, target)
    return target


def pin_ref(item: Resolved) -> None:
    """Point the cache's ref of the requested revision (``main`` by default) at the fetched commit, as a
    download by branch name does: offline loads without a revision then read exactly these files."""
    from huggingface_hub import constants  # noqa: PLC0415
    from huggingface_hub.file_download import repo_folder_name  # noqa: PLC0415

    ref = (Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=item.need.repo, repo_type=item.repo_type)
           / "refs" / (item.need.revision or "main"))
    if item.need.revision == item.commit:
        return  # a pinned commit is looked up by itself
    ref.parent.mkdir(parents=True, exist_ok=True)
    partial = ref.with_name(ref.name + ".incomplete")
    partial.write_text(item.commit)
    os.replace(partial, ref)


def _prepare(item: Resolved) -> dict:
    """Build the dataset's arrow cache, which lm-eval's ``load_dataset`` reads offline; its splits and sizes."""
    item.builder.download_and_prepare()
    return {name: split.num_examples for name, split in (item.builder.info.splits or {}).items()}


# ---------------------------------------------------------------- the command


def human(size: int | None) -> str:
    if size is None:
        return "size unknown"
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return ""


def describe_plan(needs: list[Need], known: dict | None = None) -> list[str]:
    """The plan as lines, with the sizes a previous manifest recorded (``known``) where there is one."""
    lines, total, unknown = [], 0, 0
    for need in needs:
        entry = (known or {}).get(_manifest_key(need))
        lines.append(f"{need.label}  <- {', '.join(need.readers)}"
                     + (f"  [{entry['commit'][:12]}]" if entry and entry.get("commit") else ""))
        if entry:
            for f in entry["files"]:
                lines.append(f"    {f['path']}  {human(f['size'])}")
                total += f["size"] or 0
        else:
            unknown += 1
            lines.append("    " + ("; ".join(need.patterns) if need.patterns else
                                   "files resolved from the hub when fetching") + "  (size unknown)")
    summary = f"total: {human(total)} of known size"
    if unknown:
        summary += f"; {unknown} item(s) of unknown size (the prefetch resolves them and states the total first)"
    return lines + [summary]


def _manifest_key(need: Need) -> str:
    return "|".join(str(part) for part in need.key)


def known_sizes(manifest: Path) -> dict:
    try:
        data = read_json(manifest)
    except (OSError, ValueError):
        return {}
    return {e["key"]: e for e in data.get("items", [])} if carries_marker(data, MANIFEST_FORMAT) else {}


def free_bytes(path: Path) -> int:
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free


def check_disk(items: list[Resolved], manifest: Path, reserve: int) -> tuple[int, int]:
    """Refuse (before any download) when the cache's disk cannot hold what is still missing."""
    from huggingface_hub import constants  # noqa: PLC0415

    needed = sum(i.download_bytes + i.prepared_bytes for i in items) - present_bytes(items, manifest)
    free = free_bytes(Path(constants.HF_HUB_CACHE))
    if needed + reserve > free:
        raise LangpruneError(
            f"the prefetch needs {human(needed)} more in the Hugging Face cache ({constants.HF_HUB_CACHE}) and "
            f"keeps {human(reserve)} free (--reserve), but only {human(free)} are free; free space or point "
            f"HF_HOME at a larger disk")
    return needed, free


def prefetch(configfiles: list[str], *, manifest: str = DEFAULT_MANIFEST, dry_run: bool = False,
             reserve: int = DEFAULT_RESERVE, out=print) -> dict | None:
    """Plan, check the disk, fetch and verify, prepare datasets, write the manifest; ``dry_run`` only plans."""
    manifest_path = Path(manifest)
    needs = load_plan(configfiles)
    if dry_run:
        for line in describe_plan(needs, known_sizes(manifest_path)):
            out(line)
        return None
    if not needs:
        out("nothing to prefetch: the config reads nothing from the hub")
    items = resolve(needs)
    needed, free = check_disk(items, manifest_path, reserve)
    for item in items:
        out(f"{item.need.label}  [{(item.commit or '-')[:12]}]  {human(item.download_bytes)}"
            + (f" + ~{human(item.prepared_bytes)} prepared" if item.prepared_bytes else ""))
    out(f"to fetch: {human(needed)} (free: {human(free)})")
    records = []
    for item in items:
        for info in item.files:
            _download(item, info, manifest_path)
        if item.repo_type != "url":
            pin_ref(item)
        splits = _prepare(item) if item.builder is not None else None
        records.append({"key": _manifest_key(item.need), "kind": item.need.kind, "repo": item.need.repo,
                        "repo_type": item.repo_type, "config": item.need.config, "requested": item.need.revision,
                        "commit": item.commit, "readers": list(item.need.readers), "splits": splits,
                        "files": [f.as_dict() for f in item.files]})
    from huggingface_hub import constants  # noqa: PLC0415

    result = {**marker(MANIFEST_FORMAT), "configfiles": [str(c) for c in configfiles], "endpoint": _endpoint(),
              "hub_cache": str(constants.HF_HUB_CACHE), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "items": records}
    write_json(manifest_path, result, MANIFEST_KIND)
    out(f"wrote {manifest_path}: {len(records)} item(s), {sum(len(r['files']) for r in records)} file(s)")
    return result
