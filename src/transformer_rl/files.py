"""Writing safely: output paths resolved before they are checked, one writer at a time, and
files and directories replaced atomically (write beside, fsync, rename).

A reader (or a crash) sees the old version or the new one, never half of either; a failed write
leaves no temporary file behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from transformer_rl.errors import Busy, UsageError

_UMASK = os.umask(0)  # read once, at import (single-threaded): files get 0666 less the user's umask
os.umask(_UMASK)

LOCK = ".trl-lock"  # inside a dataset, run directory or checkpoint being written (a dot file: readers skip it)


def output_path(path: Path | str, option: str) -> Path:
    """Where an output path really points (``..``, ``.`` and symlinks resolved), so the checks
    that protect existing data look at the place, not at the spelling; a path ending in ``.`` or
    ``..`` is refused, since it names a directory that already exists."""
    text = str(path)
    if Path(text).name in ("", ".", "..") or text.rstrip("/").endswith(("/.", "/..")) or text in (".", ".."):
        raise UsageError(f"{option} {text} ends in '.' or '..'; give the directory by its own name")
    return Path(text).expanduser().resolve()


class WriterLock:
    """An exclusive OS lock (flock) on ``<directory>/.trl-lock``, held by this process: the OS
    drops it when the process ends, however it ends, so a SIGKILL never leaves a stale lock.
    The file holds the holder's pid, so that a refused writer can name it, and is removed on
    release (a reader of the folder never sees it once the writer is done)."""

    def __init__(self, directory: Path, what: str):
        self.path = Path(directory) / LOCK
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                os.close(fd)
                raise Busy(f"{directory} is being written by another trl process (pid {holder}): {what} "
                           "has one writer at a time; wait for it to finish or choose another path") from None
            try:  # the file may have been released (removed) between our open and our flock
                if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        self.fd = fd
        with contextlib.suppress(OSError):  # the pid only informs a refused writer (a full disk may refuse it)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        if self.fd >= 0:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)  # still holding it: nobody can take this file meanwhile
            os.close(self.fd)
            self.fd = -1


def lock_dir(directory: Path, what: str) -> WriterLock:
    """Hold ``directory`` (which exists) for this process, or raise Busy naming the holder."""
    return WriterLock(directory, what)


@contextlib.contextmanager
def removed_on_failure(path: Path, created: bool) -> Iterator[None]:
    """If the block fails (an error, Ctrl-C, SIGTERM) and this command ``created`` ``path``,
    remove it, so that a rerun starts clean."""
    try:
        yield
    except BaseException:
        if created:
            shutil.rmtree(path, ignore_errors=True)
        raise


def atomic_write_bytes(path: Path, data: bytes | memoryview, *, hidden_tmp: bool = False) -> None:
    """``hidden_tmp``: the temporary file's name starts with a dot (readers of a dataset folder skip it)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp" if hidden_tmp else path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        _name_the_file(e, path)
        raise
    fsync_dir(path.parent)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1) + "\n").encode())


def atomic_write_dir(path: Path, fill: Callable[[Path], None]) -> None:
    """Build a directory with ``fill(tmp)`` in a temporary sibling, then swap it in for ``path``."""
    path = Path(path)
    tmp, old = path.with_name(path.name + ".tmp"), path.with_name(path.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        fill(tmp)
        for child in tmp.iterdir():
            if child.is_file():  # some writers (safetensors) make owner-only files: share like the rest
                os.chmod(child, 0o666 & ~_UMASK)
            with open(child, "rb") as f:
                os.fsync(f.fileno())
        fsync_dir(tmp)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        _name_the_file(e, path)
        raise
    if path.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
    os.replace(tmp, path)
    fsync_dir(path.parent)
    shutil.rmtree(old, ignore_errors=True)


def _name_the_file(error: BaseException, path: Path) -> None:
    """An OSError that names no file (a full disk on write) names the one being written."""
    if isinstance(error, OSError) and error.filename is None:
        error.filename = str(path)


def copy_dir(src: Path, dst: Path) -> None:
    atomic_write_dir(dst, lambda tmp: shutil.copytree(src, tmp, dirs_exist_ok=True))


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_output_json(path: Path, kind: str, option: str) -> Path:
    """Refuse an output path that trl may not replace: a directory, a missing parent, or an
    existing file that is not an earlier ``kind`` output of trl (its JSON says so); the path,
    resolved."""
    path = output_path(path, option)
    if path.is_dir():
        raise UsageError(f"{option} {path} is a directory; give a file path for the JSON")
    if not path.parent.is_dir():
        raise UsageError(f"{option} {path}: directory {path.parent} does not exist; create it first")
    if not os.access(path.parent, os.W_OK):
        raise UsageError(f"{option} {path}: directory {path.parent} is not writable; choose another path")
    if path.exists() and not _is_output(path, kind):
        raise UsageError(f"{option} {path} exists and is not a trl {kind} file; choose another path "
                         "(trl only replaces its own earlier output)")
    return path


def write_output_json(path: Path, obj: dict[str, Any], kind: str, option: str) -> None:
    """Write a JSON output of ``kind`` atomically, after `check_output_json`."""
    atomic_write_json(check_output_json(path, kind, option), {"trl_output": kind, **obj})


def _is_output(path: Path, kind: str) -> bool:
    try:
        return json.loads(Path(path).read_text()).get("trl_output") == kind
    except (OSError, ValueError, AttributeError):
        return False


def check_creatable(path: Path, option: str) -> None:
    """``path`` can be created: its nearest existing ancestor is a writable directory."""
    ancestor = Path(path).absolute().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UsageError(f"{option} {path}: {ancestor} is a file, not a directory; choose another path")
    if not os.access(ancestor, os.W_OK):
        raise UsageError(f"{option} {path}: {ancestor} is not writable; choose another path")


def read_json(path: Path, schema: Any, what: str) -> Any:
    """A JSON file trl wrote, checked against its declared ``schema`` (see schema.py) before
    use: DamagedData naming the file and the problem if it is missing, cut off or not that."""
    from transformer_rl.errors import DamagedData
    from transformer_rl.schema import problem

    try:
        value = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise DamagedData(f"{path} is missing: a damaged {what}") from None
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        reason = " ".join(str(e).split())[:120]
        raise DamagedData(f"{path} is not valid JSON ({reason}): a damaged {what}") from None
    found = problem(schema, value)
    if found:
        raise DamagedData(f"{path}: {found}: a damaged {what}")
    return value
