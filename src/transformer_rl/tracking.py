"""Experiment tracking: `--track tensorboard|trackio` mirrors metrics rows under CleanRL's names.

A tracker's folder lives in what it describes (<run>/tensorboard/ or <run>/trackio/; a `trl
train` checkpoint's <out>/tensorboard/ ...), so it moves with it. It is derived data: opening a
tracker rewrites its folder to hold exactly the points it is given (a resumed run gives the rows
of metrics.jsonl that survived the rollback), then each new point is written as it comes. So a
resumed run continues the same curves, and no step a crash rolled back is ever shown twice.

TensorBoard: one event file, written by torch's SummaryWriter. trackio: its local SQLite store,
TRACKIO_DIR pointed at the folder (trackio reads it once, when first imported: one store per
process), project ``transformer-rl``, one run.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from transformer_rl.errors import UsageError
from transformer_rl.settings import Track

PACKAGES = {Track.tensorboard: "tensorboard", Track.trackio: "trackio"}
FOLDERS = {Track.tensorboard: "tensorboard", Track.trackio: "trackio"}
TRACKIO_PROJECT = "transformer-rl"
# metrics.jsonl name -> CleanRL's; names without a namespace go under charts/
RENAMED = {"charts/collect_return": "charts/episodic_return", "eval/mean_return": "eval/episodic_return"}

Point = tuple[int, dict[str, float], float | None]  # step, {name: value}, the run's wall seconds then


def check(kind: Track, where: Path) -> None:
    """Before anything is written: ``kind``'s package is installed, and trackio can keep its
    store in ``where``'s folder in this process."""
    if kind == Track.none:
        return
    if importlib.util.find_spec(PACKAGES[kind]) is None:
        raise UsageError(f"--track {kind} needs the {PACKAGES[kind]} package: pip install 'transformer-rl[track]'")
    if kind == Track.trackio and "trackio" in sys.modules:
        _trackio_store(where / FOLDERS[kind])


def scalars(row: dict[str, Any]) -> Point:
    """A metrics.jsonl row as a tracker point: step = env steps (CleanRL's global_step), the
    numbers under CleanRL's names, and charts/SPS (env steps per second of the run so far)."""
    values = {}
    for key, value in row.items():
        if key == "env_steps" or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        name = RENAMED.get(key, key)
        values[name if "/" in name else f"charts/{name}"] = value
    wall_s = row.get("wall_s")
    if wall_s:
        values["charts/SPS"] = int(row["env_steps"] / wall_s)
    return int(row["env_steps"]), values, wall_s


def open_tracker(kind: Track, where: Path, *, name: str, config: dict[str, Any], points: list[Point]):
    """``kind``'s tracker in ``where``/<kind>/, rewritten to hold exactly ``points`` and the
    flattened ``config`` (TensorBoard: a `hyperparameters` text, CleanRL's table; trackio: the
    run's config); it takes ``log(step, values, wall_s)`` and ``close()``. None for ``none``."""
    if kind == Track.none:
        return None
    folder = where / FOLDERS[kind]
    wall_s = next((p[2] for p in reversed(points) if p[2] is not None), None)
    tracker = (TensorBoard if kind == Track.tensorboard else Trackio)(folder, name, flatten(config), wall_s)
    try:
        for point in points:
            tracker.log(*point, flush=False)
        tracker.flush()
    except BaseException:
        tracker.close()
        raise
    return tracker


def rewrite(kind: Track, where: Path, *, name: str, config: dict[str, Any], points: list[Point]) -> None:
    tracker = open_tracker(kind, where, name=name, config=config, points=points)
    if tracker is not None:
        tracker.close()


def resume(kind: Track, where: Path, *, name: str, config: dict[str, Any], rows: list[dict[str, Any]], log):
    """The tracker of a run that has written ``rows`` so far (none when it starts). The folder of
    a tracker the run used before and does not use now is rewritten too, so that no tracker of
    the run shows a rolled-back row; it then stops growing."""
    points = [scalars(row) for row in rows]
    for other, folder in FOLDERS.items():
        if other == kind or not (where / folder).is_dir():
            continue
        try:
            check(other, where)
        except UsageError:
            log(f"{where / folder} left as it was (it may show rolled-back rows): resume with "
                f"--track {other} to rewrite it")
            continue
        rewrite(other, where, name=name, config=config, points=points)
    return open_tracker(kind, where, name=name, config=config, points=points)


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value if value is None or isinstance(value, int | float | bool) else str(value)
    return out


class TensorBoard:
    """One event file in ``folder``; the event files there before are removed (they were this
    run's, and are rewritten)."""

    def __init__(self, folder: Path, name: str, config: dict[str, Any], wall_s: float | None = None):
        from torch.utils.tensorboard import SummaryWriter

        folder.mkdir(exist_ok=True)
        for old in folder.glob("events.out.tfevents.*"):
            old.unlink()
        self.writer = SummaryWriter(str(folder), max_queue=1000, flush_secs=3600)
        # event times on the run's own clock: now is ``wall_s`` (where the last point was), so
        # rewritten points keep their spacing and new ones continue it
        self.started = time.time() - (wall_s or 0.0)
        table = "\n".join(f"|{key}|{value}|" for key, value in config.items())
        self.writer.add_text("hyperparameters", f"|param|value|\n|-|-|\n{table}", 0)

    def log(self, step: int, values: dict[str, float], wall_s: float | None = None, flush: bool = True) -> None:
        walltime = self.started + wall_s if wall_s is not None else None
        for key, value in values.items():
            self.writer.add_scalar(key, value, step, walltime=walltime)
        if flush:
            self.flush()

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class Trackio:
    """trackio's local store in ``folder``: every run there is deleted, then one is logged."""

    def __init__(self, folder: Path, name: str, config: dict[str, Any], wall_s: float | None = None):
        self.trackio = trackio = _trackio_store(folder)
        try:
            runs = list(trackio.Api().runs(TRACKIO_PROJECT))
        except ValueError:  # no store yet
            runs = []
        for run in runs:
            run.delete()
        # the local store only (no Space or server from the environment), written directly to
        # SQLite; trackio's own lines (dashboard hints) would mix with trl's output
        local = {"TRACKIO_STORAGE_MODE": "sqlite", "TRACKIO_SPACE_ID": None, "TRACKIO_SERVER_URL": None}
        with _environment(local), contextlib.redirect_stdout(io.StringIO()):
            self.run = trackio.init(project=TRACKIO_PROJECT, name=name, config=config, resume="allow",
                                    embed=False, auto_log_cpu=False, auto_log_gpu=False)

    def log(self, step: int, values: dict[str, float], wall_s: float | None = None, flush: bool = True) -> None:
        self.run.log({k: v for k, v in values.items() if math.isfinite(v)}, step=step)

    def flush(self) -> None:
        """trackio writes from its own thread, every half second."""

    def close(self) -> None:
        with contextlib.redirect_stdout(io.StringIO()):
            self.trackio.finish()  # this run's (trackio.init made it the current one), else atexit would again


def _trackio_store(folder: Path):
    """trackio, its store in ``folder``: trackio takes TRACKIO_DIR when first imported, so one
    process keeps one store."""
    folder = folder.resolve()
    if "trackio" not in sys.modules:
        with _environment({"TRACKIO_DIR": str(folder)}):
            import trackio  # noqa: F401
    import trackio
    import trackio.utils

    if Path(trackio.utils.TRACKIO_DIR).resolve() != folder:
        raise UsageError(f"--track trackio keeps its store in {folder}, but this process already uses trackio with "
                         "another store; run each trackio-tracked command in its own process")
    return trackio


@contextlib.contextmanager
def _environment(values: dict[str, str | None]):
    saved = {key: os.environ.get(key) for key in values}
    try:
        _set_environment(values)
        yield
    finally:
        _set_environment(saved)


def _set_environment(values: dict[str, str | None]) -> None:
    """Set each variable, or unset it where its value is None."""
    for key, value in values.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
