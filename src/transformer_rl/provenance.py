"""What made a result: the command line, the versions that ran it and, from a checkout, its git
commit. Written into a run's config.json and report.json and into `trl eval --report`.

Paths on the command line are written relative to the working directory when they lie inside
it, and other absolute paths by their last part (`.../runs`), so that a record holds no
machine's directories: a run directory moves to another root or machine with its record.
"""

from __future__ import annotations

import os
import subprocess
import sys
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

PACKAGES = ("transformer-rl", "torch", "envpool", "numpy")


def record() -> dict[str, Any]:
    return {"command": command_line(sys.argv), "versions": versions(), "git": git_commit()}


def command_line(argv: list[str]) -> list[str]:
    """``argv`` as typed, the program as its name (`trl`), absolute paths inside the working
    directory made relative to it and the others shortened to their last part."""
    if not argv:
        return []
    cwd = Path.cwd()
    shown = [Path(argv[0]).name]
    for arg in argv[1:]:
        shown.append(_relative(arg, cwd))
    return shown


def _relative(arg: str, cwd: Path) -> str:
    if not os.path.isabs(arg):
        return arg
    try:
        return str(Path(arg).relative_to(cwd)) or "."
    except ValueError:
        return ".../" + Path(arg).name


@cache
def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


@cache
def git_commit() -> dict[str, Any] | None:
    """The checkout trl runs from (an editable install): its commit and whether files differ
    from it; None when trl is installed from a wheel or git is missing."""
    source = Path(__file__).resolve().parents[2]
    if not (source / ".git").exists():
        return None
    try:
        head = subprocess.run(["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10)
        dirty = subprocess.run(["git", "-C", str(source), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if head.returncode != 0:
        return None
    return {"commit": head.stdout.strip(), "modified": bool(dirty.stdout.strip())}
