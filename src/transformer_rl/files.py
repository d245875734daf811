"""Replacing files and directories atomically: write beside, fsync, rename.

A reader (or a crash) sees the old version or the new one, never half of either.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transformer_rl.errors import UsageError


def atomic_write_bytes(path: Path, data: bytes | memoryview) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1) + "\n").encode())


def atomic_write_dir(path: Path, fill: Callable[[Path], None]) -> None:
    """Build a directory with ``fill(tmp)`` in a temporary sibling, then swap it in for ``path``."""
    path = Path(path)
    tmp, old = path.with_name(path.name + ".tmp"), path.with_name(path.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    fill(tmp)
    for child in tmp.iterdir():
        with open(child, "rb") as f:
            os.fsync(f.fileno())
    fsync_dir(tmp)
    if path.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
    os.replace(tmp, path)
    fsync_dir(path.parent)
    shutil.rmtree(old, ignore_errors=True)


def copy_dir(src: Path, dst: Path) -> None:
    atomic_write_dir(dst, lambda tmp: shutil.copytree(src, tmp, dirs_exist_ok=True))


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_output_json(path: Path, kind: str, option: str) -> None:
    """Refuse an output path that trl may not replace: a directory, a missing parent, or an
    existing file that is not an earlier ``kind`` output of trl (its JSON says so)."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{option} {path} is a directory; give a file path for the JSON")
    if not path.parent.is_dir():
        raise UsageError(f"{option} {path}: directory {path.parent} does not exist; create it first")
    if not os.access(path.parent, os.W_OK):
        raise UsageError(f"{option} {path}: directory {path.parent} is not writable; choose another path")
    if path.exists() and not _is_output(path, kind):
        raise UsageError(f"{option} {path} exists and is not a trl {kind} file; choose another path "
                         "(trl only replaces its own earlier output)")


def write_output_json(path: Path, obj: dict[str, Any], kind: str, option: str) -> None:
    """Write a JSON output of ``kind`` atomically, after `check_output_json`."""
    check_output_json(path, kind, option)
    atomic_write_json(path, {"trl_output": kind, **obj})


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
