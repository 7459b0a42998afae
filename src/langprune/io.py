"""Atomic, safe writes and content hashes shared by shards, checkpoints and metrics.

Every artifact is written to a temporary sibling and renamed into place, so a killed
job never leaves a file (or directory) that looks complete. A writer only ever replaces
an artifact of its own kind (recognised by its marker or manifest); anything else at the
destination is refused unless the user passes ``--force``, and an output that is or holds
one of the run's inputs is always refused. :func:`check_output` runs these checks, plus
writability and free space, *before* the expensive work; :func:`atomic_path` repeats the
kind check at the rename and gives the new files the modes the umask asks for.
"""

from __future__ import annotations

import contextlib
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


def cache_dir() -> Path:
    """langprune's per-user cache (base-weight hashes, downloaded wheels), outside any work dir:
    ``$LANGPRUNE_CACHE``, else ``$XDG_CACHE_HOME/langprune``, else ``~/.cache/langprune``."""
    if os.environ.get("LANGPRUNE_CACHE"):
        return Path(os.environ["LANGPRUNE_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "langprune"


# --- what may be replaced ------------------------------------------------------------------

@dataclass(frozen=True)
class ArtifactKind:
    """What a writer produces, and how to recognise an existing artifact of that kind.

    ``recognise(path)`` is asked only about something that exists; None means "any
    regular file" for file kinds and "nothing" for directory kinds. An empty directory
    is always free to take for a directory kind (nothing can be lost).
    """

    description: str
    directory: bool = False
    recognise: Callable[[Path], bool] | None = None

    def owns(self, path: Path) -> bool:
        """True if the existing ``path`` may be replaced by a new artifact of this kind."""
        try:
            return self._owns(path)
        except OSError:
            return False  # what cannot be read cannot be recognised

    def _owns(self, path: Path) -> bool:
        if self.directory:
            if not path.is_dir():
                return False
            return not any(path.iterdir()) or bool(self.recognise and self.recognise(path))
        return path.is_file() and (self.recognise is None or bool(self.recognise(path)))


# The default for plain outputs (tables, figures, text): replaces a regular file, never a directory.
PLAIN_FILE = ArtifactKind("file")


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


def _same_or_inside(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


def check_output(out: str | os.PathLike, kind: ArtifactKind = PLAIN_FILE, *, force: bool = False,
                 inputs: Iterable[str | os.PathLike | None] = (), flag: str = "--out",
                 need_bytes: int | None = None) -> Path:
    """Refuse an output that would destroy something, before any work is done.

    Refused always: ``out`` is, or holds, one of ``inputs``. Refused unless ``force``:
    something at ``out`` that is not an artifact of ``kind``. Also refused: a folder that
    cannot be created or written, and (with ``need_bytes``) too little free space.
    """
    out = Path(out)
    real_out = Path(os.path.realpath(out))
    for given in inputs:
        if given is None or not os.path.exists(given):
            continue  # hub ids and optional inputs
        if _same_or_inside(Path(os.path.realpath(given)), real_out):
            raise LangpruneError(f"{flag} '{out}' is or contains the input '{given}'; writing there would destroy "
                                 f"it (even with --force): choose another {flag}")
    if (out.exists() or out.is_symlink()) and not force and not kind.owns(out):
        raise LangpruneError(f"{flag} '{out}' already exists and is not a {kind.description} langprune may replace "
                             f"(it is {describe(out)}); choose another {flag}, or pass --force to replace it")
    parent = out.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".probe", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise LangpruneError(f"cannot write {flag} '{out}': {exc.strerror or exc} in '{parent}'; "
                             f"choose a writable location") from exc
    if need_bytes is not None:
        free = shutil.disk_usage(parent).free
        if free < need_bytes:
            raise LangpruneError(f"{flag} '{out}' needs about {need_bytes / 1e6:.1f} MB but '{parent}' has only "
                                 f"{free / 1e6:.1f} MB free; free space or choose another {flag}")
    return out


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
def atomic_path(final: str | os.PathLike, kind: ArtifactKind = PLAIN_FILE, *, force: bool = False,
                flag: str = "--out") -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it into place on success.

    Works for files and directories alike: whatever the caller creates at the yielded
    path replaces ``final`` in one rename, with umask modes. Something at ``final`` that
    is not of ``kind`` is left alone (LangpruneError) unless ``force``. On error the
    temporary is removed.
    """
    final = Path(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    except OSError as exc:
        raise LangpruneError(f"cannot write {flag} '{final}': {exc.strerror or exc} in '{final.parent}'; "
                             f"choose a writable location") from exc
    target = tmp / final.name
    try:
        yield target
        apply_umask(target)
        if final.exists() or final.is_symlink():
            if not force and not kind.owns(final):
                raise LangpruneError(f"{flag} '{final}' appeared while writing and is not a {kind.description} "
                                     f"langprune may replace (it is {describe(final)}); pass --force to replace it")
            if final.is_dir() and not final.is_symlink():
                shutil.rmtree(final)
            else:
                final.unlink()
        os.replace(target, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: str | os.PathLike, obj: Any, kind: ArtifactKind = PLAIN_FILE, *, force: bool = False) -> None:
    """Write JSON atomically, sorted and indented so equal objects give equal bytes."""
    with atomic_path(path, kind, force=force) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))
