"""Atomic, safe writes and content hashes shared by every artifact langprune writes.

Every artifact is written to a temporary sibling and renamed into place, so a killed
job never leaves a file (or directory) that looks complete. A writer only ever replaces
an artifact of its own kind, recognised by its full format marker (a format name and
version inside the file, in a marker file of a directory, or, for plain tables, figures
and text, in a ``.<name>.langprune.json`` sidecar holding the file's SHA-256), never by
a file name. Anything else at the destination is refused unless the user passes
``--force``; an output that is, holds or lies inside one of the run's inputs is always
refused. :func:`check_output` is that one guard: the command line runs it on every
declared output before the command starts (``cli.outputs``), writers repeat it with the
inputs only they know, and :func:`atomic_path` applies it again at the rename, where it
also refuses, inside a command, any destination the command did not declare.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from .errors import LangpruneError


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def normal_sha256(text: str) -> str | None:
    """``text`` as a lower-case SHA-256 hex digest, or None if it is not 64 hexadecimal digits."""
    digest = text.strip().lower()
    return digest if len(digest) == 64 and all(c in "0123456789abcdef" for c in digest) else None


def cache_dir() -> Path:
    """langprune's per-user cache (base-weight hashes, downloaded wheels), outside any work dir:
    ``$LANGPRUNE_CACHE``, else ``$XDG_CACHE_HOME/langprune``, else ``~/.cache/langprune``."""
    if os.environ.get("LANGPRUNE_CACHE"):
        return Path(os.environ["LANGPRUNE_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "langprune"


# --- format markers: how langprune recognises what it wrote ----------------------------------

MARKER_VERSION = 1
SIDECAR_FORMAT = "langprune-output"


def marker(fmt: str, **fields: Any) -> dict[str, Any]:
    """The fields that mark a JSON document (a manifest, a marker file) as langprune's ``fmt``."""
    return {"format": fmt, "format_version": MARKER_VERSION, **fields}


def carries_marker(doc: Any, fmt: str) -> bool:
    """Whether a parsed JSON document carries the full marker of ``fmt`` (name and version)."""
    return isinstance(doc, dict) and doc.get("format") == fmt and doc.get("format_version") == MARKER_VERSION


def json_file_carries(path: Path, fmt: str) -> bool:
    """Whether the JSON file at ``path`` carries the marker of ``fmt`` (False for anything unreadable)."""
    try:
        return carries_marker(json.loads(Path(path).read_text(encoding="utf-8")), fmt)
    except (OSError, ValueError, UnicodeDecodeError):
        return False


def sidecar_path(path: str | os.PathLike) -> Path:
    """Where the marker of a plain output (table, figure, text) lives: a hidden file beside it."""
    path = Path(path)
    return path.with_name(f".{path.name}.langprune.json")


def is_marked_output(path: Path) -> bool:
    """A plain file langprune wrote and nobody changed since: its sidecar holds its SHA-256."""
    side = sidecar_path(path)
    try:
        doc = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return carries_marker(doc, SIDECAR_FORMAT) and path.is_file() and doc.get("sha256") == sha256_file(path)


# --- what may be replaced ------------------------------------------------------------------

@dataclass(frozen=True)
class ArtifactKind:
    """What a writer produces, and how to recognise an existing artifact of that kind.

    ``recognise(path)`` is asked only about something that exists and must check the
    artifact's full format marker. ``sidecar`` kinds are plain files marked by a sidecar
    (:func:`is_marked_output`), written by :func:`atomic_path`. An empty directory is always
    free to take for a directory kind (nothing can be lost). A ``folder`` is written into
    rather than replaced (a report's ``--out-dir``): it may exist, and each file written in
    it is checked on its own.
    """

    description: str
    directory: bool = False
    recognise: Callable[[Path], bool] | None = None
    sidecar: bool = False
    folder: bool = False

    def owns(self, path: Path) -> bool:
        """True if the existing ``path`` may be replaced by a new artifact of this kind."""
        try:
            return self._owns(path)
        except OSError:
            return False  # what cannot be read cannot be recognised

    def _owns(self, path: Path) -> bool:
        if path.is_symlink():
            return False
        if self.folder:
            return path.is_dir()
        if self.directory:
            if not path.is_dir():
                return False
            return not any(path.iterdir()) or bool(self.recognise and self.recognise(path))
        if not path.is_file():
            return False
        if self.sidecar and not is_marked_output(path):
            return False
        return self.recognise is None or bool(self.recognise(path))


def marker_file_kind(description: str, fmt: str) -> ArtifactKind:
    """A JSON file kind recognised by the marker inside it."""
    return ArtifactKind(description, recognise=lambda path: json_file_carries(path, fmt))


def marker_dir_kind(description: str, marker_name: str, fmt: str, only: str | None = None) -> ArtifactKind:
    """A directory kind recognised by the marker file ``marker_name`` inside it; with ``only`` (a suffix such
    as ".txt"), nothing else may be in it but files with that suffix."""

    def recognise(path: Path) -> bool:
        return json_file_carries(path / marker_name, fmt) and (only is None or all(
            entry.name == marker_name or (entry.is_file() and entry.suffix == only) for entry in path.iterdir()))

    return ArtifactKind(description, directory=True, recognise=recognise)


# The default for plain outputs (tables, figures, text): replaces only a file it marked itself.
PLAIN_FILE = ArtifactKind("file written by langprune (unchanged since)", sidecar=True)
# langprune's own cache files (base-weight hashes): any regular file there is langprune's.
CACHE_FILE = ArtifactKind("cache file")
# A folder that a command writes named files into (a report's --out-dir).
OUTPUT_FOLDER = ArtifactKind("folder", directory=True, folder=True)


def describe(path: Path) -> str:
    """What is at ``path``, for an error message."""
    if path.is_dir():
        try:
            entries = sorted(p.name for p in path.iterdir())
        except OSError:
            return "a directory that cannot be listed"
        shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
        return f"a directory with {len(entries)} entries ({shown})" if entries else "an empty directory"
    return f"a file of {path.stat().st_size} bytes"


# --- the run: what a command declared it writes and what it reads ---------------------------

@dataclass(frozen=True)
class RunOutputs:
    """One command's declared outputs (where it may write) and inputs (what it must never touch)."""

    outputs: tuple[Path, ...] = ()
    inputs: tuple[tuple[str, Path], ...] = ()  # (as given, real path)
    force: bool = False


_RUN: contextvars.ContextVar[RunOutputs | None] = contextvars.ContextVar("langprune_run_outputs", default=None)
_ACTIVE_TEMPS: list[Path] = []  # temporaries of atomic_path in progress: writing inside them is private


@contextlib.contextmanager
def running(run: RunOutputs) -> Iterator[RunOutputs]:
    """Inside the block, every write checks against ``run`` (see :func:`atomic_path`)."""
    token = _RUN.set(run)
    try:
        yield run
    finally:
        _RUN.reset(token)


def real_inputs(inputs: Iterable[str | os.PathLike | None]) -> tuple[tuple[str, Path], ...]:
    """(as given, real path) of the inputs that exist on disk (hub ids and absent options are skipped)."""
    found = []
    for given in inputs:
        if given is None or not os.path.lexists(given):
            continue
        found.append((str(given), Path(os.path.realpath(given))))
    return tuple(found)


def _related(a: Path, b: Path) -> str | None:
    """How path ``a`` relates to ``b``: 'is', 'contains', 'lies inside', or None."""
    if a == b:
        return "is"
    if a in b.parents:
        return "contains"
    if b in a.parents:
        return "lies inside"
    return None


def refuse_inputs(out: Path, inputs: Iterable[tuple[str, Path]], flag: str, *, folder: bool = False) -> None:
    """Refuse (even with --force) an output that is, contains or lies inside an input.

    A ``folder`` written into may contain inputs (each file written in it is checked itself).
    """
    real_out = Path(os.path.realpath(out))
    for given, real in inputs:
        how = _related(real_out, real)
        if how is None or (folder and how == "contains"):
            continue
        raise LangpruneError(f"{flag} '{out}' {how} the input '{given}'; writing there would destroy it "
                             f"(even with --force): choose another {flag}")


def check_output(out: str | os.PathLike, kind: ArtifactKind = PLAIN_FILE, *, force: bool | None = None,
                 inputs: Iterable[str | os.PathLike | None] = (), flag: str = "--out",
                 need_bytes: int | None = None) -> Path:
    """Refuse an output that would destroy something, before any work is done.

    Refused always: ``out`` is, holds or lies inside one of ``inputs`` (or of the running
    command's inputs). Refused unless ``force`` (default: the running command's --force):
    something at ``out`` that is not an artifact of ``kind``. Also refused: a folder that
    cannot be created or written, and (with ``need_bytes``) too little free space.
    """
    out = Path(out)
    run = _RUN.get()
    force = (run.force if run else False) if force is None else force
    refuse_inputs(out, real_inputs(inputs) + (run.inputs if run else ()), flag, folder=kind.folder)
    if kind.folder and (out.exists() or out.is_symlink()) and not out.is_dir():
        raise LangpruneError(f"{flag} '{out}' is {describe(out)}, not a folder; choose another {flag}")
    if (out.exists() or out.is_symlink()) and not force and not kind.owns(out):
        raise LangpruneError(f"{flag} '{out}' already exists and is not a {kind.description} langprune may replace "
                             f"(it is {describe(out)}); choose another {flag}, or pass --force to replace it")
    parent = out if kind.folder else out.parent
    existing = next(p for p in (parent, *parent.parents) if os.path.lexists(p))  # created later, by the writer
    try:
        if not existing.is_dir():
            raise NotADirectoryError(20, "Not a directory")
        fd, probe = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".probe", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise LangpruneError(f"cannot write {flag} '{out}': {exc.strerror or exc} in '{existing}'; "
                             f"choose a writable location") from exc
    parent = existing
    if need_bytes is not None:
        free = shutil.disk_usage(parent).free
        if free < need_bytes:
            raise LangpruneError(f"{flag} '{out}' needs about {need_bytes / 1e6:.1f} MB but '{parent}' has only "
                                 f"{free / 1e6:.1f} MB free; free space or choose another {flag}")
    return out


def _declared(final: Path, run: RunOutputs) -> bool:
    """Whether the running command may write ``final``: inside a declared output, a temporary or the cache."""
    real = Path(os.path.realpath(final))
    allowed = [*run.outputs, *(Path(os.path.realpath(t)) for t in _ACTIVE_TEMPS), Path(os.path.realpath(cache_dir()))]
    return any(real == place or place in real.parents for place in allowed)


def safetensors_metadata(path: str | os.PathLike) -> dict[str, str] | None:
    """The ``__metadata__`` of a safetensors file (header only), or None if it is not one."""
    try:
        with open(path, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            if not 0 < size <= 100_000_000:
                return None
            header = json.loads(f.read(size))
    except (OSError, ValueError):
        return None
    return header.get("__metadata__") or {} if isinstance(header, dict) else None


def langprune_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON langprune stores under the ``langprune`` metadata key of its safetensors ({} if none)."""
    raw = (safetensors_metadata(path) or {}).get("langprune")
    try:
        meta = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return meta if isinstance(meta, dict) else {}


# --- permissions ---------------------------------------------------------------------------

def current_umask() -> int:
    """The process umask (read without changing it where /proc allows)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0)
    os.umask(mask)
    return mask


def apply_umask(path: Path) -> None:
    """Give ``path`` (and everything below it) the modes a plain ``open``/``mkdir`` would have.

    Libraries write through private temporaries (safetensors and ``mkdtemp`` use 0600/0700),
    so shared artifacts would otherwise be unreadable by the group whatever the umask says.
    """
    mask = current_umask()
    if path.is_dir() and not path.is_symlink():
        for root, dirs, files in os.walk(path):
            for name in dirs:
                os.chmod(os.path.join(root, name), 0o777 & ~mask)
            for name in files:
                if not os.path.islink(os.path.join(root, name)):
                    os.chmod(os.path.join(root, name), 0o666 & ~mask)
        os.chmod(path, 0o777 & ~mask)
    elif path.is_file() and not path.is_symlink():
        os.chmod(path, 0o666 & ~mask)


# --- writing -------------------------------------------------------------------------------

@contextlib.contextmanager
def atomic_path(final: str | os.PathLike, kind: ArtifactKind = PLAIN_FILE, *, force: bool | None = None,
                flag: str = "--out") -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it into place on success.

    Works for files and directories alike: whatever the caller creates at the yielded
    path replaces ``final`` in one rename, with umask modes. Something at ``final`` that
    is not of ``kind`` is left alone (LangpruneError) unless ``force`` (default: the running
    command's --force); an input of the running command never is, and inside a command a
    destination it did not declare is refused as a bug. A ``sidecar`` kind gets its marker
    written beside it. On error the temporary is removed.
    """
    final = Path(final)
    run = _RUN.get()
    force = (run.force if run else False) if force is None else force
    if run is not None:
        refuse_inputs(final, run.inputs, flag)
        if not _declared(final, run):
            raise LangpruneError(f"internal error: this command writes '{final}', which none of its output "
                                 f"arguments declares; please report it")
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    except OSError as exc:
        raise LangpruneError(f"cannot write {flag} '{final}': {exc.strerror or exc} in '{final.parent}'; "
                             f"choose a writable location") from exc
    target = tmp / final.name
    _ACTIVE_TEMPS.append(tmp)
    try:
        yield target
        apply_umask(target)
        if kind.sidecar:
            side = tmp / sidecar_path(final).name
            side.write_text(json.dumps(marker(SIDECAR_FORMAT, sha256=sha256_file(target))) + "\n", encoding="utf-8")
            apply_umask(side)
        if final.exists() or final.is_symlink():
            if not force and not kind.owns(final):
                raise LangpruneError(f"{flag} '{final}' appeared while writing and is not a {kind.description} "
                                     f"langprune may replace (it is {describe(final)}); pass --force to replace it")
            if final.is_dir() and not final.is_symlink():
                shutil.rmtree(final)
            else:
                final.unlink()
        os.replace(target, final)
        if kind.sidecar:
            os.replace(side, sidecar_path(final))
    finally:
        _ACTIVE_TEMPS.remove(tmp)
        shutil.rmtree(tmp, ignore_errors=True)


def canonical_json(obj: Any) -> bytes:
    """One byte string per JSON value, as it reads back from a file (tuples as lists, keys as strings)."""
    return json.dumps(json.loads(json.dumps(obj)), sort_keys=True, separators=(",", ":")).encode()


def json_text(obj: Any) -> str:
    """JSON sorted and indented, so equal objects give equal bytes."""
    return json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_json(path: str | os.PathLike, obj: Any, kind: ArtifactKind = PLAIN_FILE, *,
               force: bool | None = None) -> None:
    """Write JSON atomically (:func:`json_text`)."""
    with atomic_path(path, kind, force=force) as tmp:
        tmp.write_text(json_text(obj), encoding="utf-8")


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))
