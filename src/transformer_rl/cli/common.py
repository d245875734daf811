"""What every command shares: the consoles and the one-line error for user mistakes."""

from __future__ import annotations

import errno
import functools
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from typer.core import TyperGroup

from transformer_rl import distributed
from transformer_rl.errors import UsageError

# under torchrun only rank 0 reports (every rank's errors still print)
console = Console(soft_wrap=True, quiet=not distributed.is_main())
err_console = Console(stderr=True, soft_wrap=True)


def print_error(message: str) -> None:
    # escaped: a message may hold brackets that rich would read as markup ("transformer-rl[track]")
    err_console.print(f"[bold red]error:[/] {escape(' '.join(str(message).split()))}", highlight=False,
                      soft_wrap=True, markup=True)


def user_errors(fn):
    """What a user can cause becomes one line on stderr and exit code 2, never a traceback:
    a UsageError, and an OSError from the file system (permissions, a file where a directory
    should be, a full disk), named with its path."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UsageError as e:
            print_error(str(e))
        except OSError as e:
            if e.errno not in USER_ERRNOS:
                raise
            where = f"{e.filename}: " if e.filename else ""
            print_error(f"{where}{e.strerror or e}; {USER_ERRNOS[e.errno]}")
        raise typer.Exit(2)

    return wrapper


USER_ERRNOS = {
    errno.EACCES: "check the path's permissions or choose another path",
    errno.EPERM: "check the path's permissions or choose another path",
    errno.EROFS: "the file system is read-only: choose another path",
    errno.ENOTDIR: "a file stands where a directory is needed: choose another path",
    errno.EISDIR: "a directory stands where a file is needed: choose another path",
    errno.EEXIST: "choose another path",
    errno.ENOSPC: "free some disk space, then rerun (what was written is intact)",
    errno.ENAMETOOLONG: "choose a shorter path",
    errno.ENOENT: "check the path",
}


class OneLineErrors(TyperGroup):
    """Command-line parsing errors (a bad choice, a missing value) as one line too."""

    def main(self, *args, standalone_mode: bool = True, **kwargs):
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except typer.TyperException as e:
            if type(e).__name__ == "NoArgsIsHelpError":  # `trl` alone: the help is already printed
                sys.exit(e.exit_code)
            command = getattr(getattr(e, "ctx", None), "command_path", "trl")
            print_error(f"{e.format_message()} (see `{command} --help`)")
            sys.exit(getattr(e, "exit_code", 2))
        except typer.Abort:
            sys.exit(130)
        sys.exit(code if isinstance(code, int) else 0)


ENV_PANEL = "Environment"
EnvOpt = Annotated[
    str,
    typer.Option(
        "--env", help="EnvPool id (CartPole-v1, Acrobot-v1, ...) or <Game>-ram for Atari RAM.",
        rich_help_panel=ENV_PANEL,
    ),
]


def stop(progress: Progress) -> None:
    if progress.live.is_started:  # stopping a bar that never started prints a blank line
        progress.stop()


def progress_bar(title: str, *columns: str, total: float | None = None, eta: bool = False, **fields):
    """A rich bar on stderr (rank 0 only): ``title``, the bar, then each of ``columns`` (a format
    of ``task.completed``, ``task.total`` and ``task.fields``), elapsed time and with ``eta`` the
    time left. Returns (progress, update): ``update(completed, total=..., **fields)`` starts it on
    first news, so that an error before any work prints alone. Stop it with ``stop(progress)``."""
    parts = [TextColumn(f"[bold]{title}"), BarColumn(), *(TextColumn(c) for c in columns), TimeElapsedColumn()]
    if eta:
        parts.append(TimeRemainingColumn())
    progress = Progress(*parts, console=err_console, disable=console.quiet, speed_estimate_period=600)
    task = progress.add_task(title, total=total, **fields)

    def update(completed: float, **changes) -> None:
        progress.update(task, completed=completed, **changes)
        if not progress.live.is_started:  # after the update: the first frame shows its total
            progress.start()

    return progress, update
