"""`--track tensorboard|trackio`: metrics rows mirrored under CleanRL's names, read back from the
trackers' own files (TensorBoard's EventAccumulator, trackio's SQLite store), after SIGKILL and
resume too: each step exactly once, agreeing with metrics.jsonl."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import cli, one_line_error, snapshot
from transformer_rl import tracking
from transformer_rl.runs import read_metrics
from transformer_rl.settings import Track
from transformer_rl.train import checkpoint

COMPACT = ("--keep-data", "none", "--keep-checkpoints", "last")


def run_command(root: Path, *extra: str) -> list[str]:
    """A compact CartPole PPO run evaluated only at iterations 7 and 8: a kill before iteration 7
    rolls every row back. (Six iterations before the first commit: trackio writes every half
    second, and on a fast machine four short iterations fit in one write.)"""
    return [sys.executable, "-m", "transformer_rl", "run", "--env", "CartPole-v1", "--algo", "ppo",
            "--iterations", "8", "--steps-per-iteration", "512", "--num-envs", "4", "--eval-every", "7",
            "--eval-episodes", "2", "--stop-at", "1e9", "--root", str(root), "--name", "r", *COMPACT, *extra]


def tensorboard_points(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar event in the folder's event files, as written (no orphan purging)."""
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0}, purge_orphaned_data=False)
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def trackio_points(folder: Path) -> list[tuple[str, int, dict]]:
    with closing(sqlite3.connect(folder / f"{tracking.TRACKIO_PROJECT}.db")) as db:
        return [(run, step, json.loads(values)) for run, step, values in
                db.execute("SELECT run_name, step, metrics FROM metrics ORDER BY id")]


def steps(kind: Track, folder: Path) -> list[int]:
    """The step of every point written, in order (one per metrics row)."""
    if not folder.is_dir():
        return []
    try:
        if kind == Track.tensorboard:
            return [step for step, _ in tensorboard_points(folder).get("charts/SPS", [])]
        return [step for _, step, _ in trackio_points(folder)]
    except (OSError, sqlite3.Error):
        return []


def expected(run: Path) -> list[tracking.Point]:
    return [tracking.scalars(row) for row in read_metrics(run / "metrics.jsonl")]


def assert_tensorboard_agrees(folder: Path, points: list[tracking.Point]) -> None:
    assert len(list(folder.glob("events.out.tfevents.*"))) == 1
    found = tensorboard_points(folder)
    tags = {name for _, values, _ in points for name in values}
    assert set(found) == tags
    for tag in tags:
        want = [(step, values[tag]) for step, values, _ in points if tag in values]
        assert [s for s, _ in found[tag]] == [s for s, _ in want], tag  # every step once, in order
        assert [v for _, v in found[tag]] == pytest.approx([v for _, v in want], rel=1e-6), tag


def assert_trackio_agrees(folder: Path, points: list[tracking.Point]) -> None:
    found = trackio_points(folder)
    assert {run for run, _, _ in found} == {"r"}
    assert [step for _, step, _ in found] == [step for step, _, _ in points]
    for (_, _, values), (_, want, _) in zip(found, points, strict=True):
        assert values == pytest.approx(want)


def kill_with_rows_past_the_commit(cmd: list[str], run: Path, kind: Track) -> None:
    """SIGKILL the run once its tracker shows two rows, before their iterations are committed."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    start = time.time()
    while len(steps(kind, run / tracking.FOLDERS[kind])) < 2 and proc.poll() is None and time.time() - start < 120:
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    committed = json.loads((run / "state.json").read_text())["iteration"]
    assert len(steps(kind, run / tracking.FOLDERS[kind])) > committed  # rows a resume must roll back


def finish(cmd: list[str]) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def test_rows_are_named_as_cleanrl_names_them():
    row = {"iteration": 3, "env_steps": 3000, "charts/collect_s": 1.5, "charts/collect_return": 21.0,
           "losses/td_loss": 0.25, "charts/epsilon": 0.5, "eval/mean_return": 30.0, "eval/std_return": 2.0,
           "eval/episodes": 8, "wall_s": 10.0}
    step, values, wall_s = tracking.scalars(row)
    assert (step, wall_s) == (3000, 10.0)
    assert values == {"charts/iteration": 3, "charts/collect_s": 1.5, "charts/episodic_return": 21.0,
                      "losses/td_loss": 0.25, "charts/epsilon": 0.5, "eval/episodic_return": 30.0,
                      "eval/std_return": 2.0, "eval/episodes": 8, "charts/wall_s": 10.0, "charts/SPS": 300}


def killed_and_resumed(tmp_path, track: Track):
    """A tracked run SIGKILLed with rows past its last commit, then finished: (its dir, metrics points)."""
    run = tmp_path / "r"
    cmd = run_command(tmp_path, "--track", str(track))
    kill_with_rows_past_the_commit(cmd, run, track)
    finish(cmd)
    return run, expected(run)


def test_tensorboard_after_sigkill_and_resume_has_every_step_once(tmp_path):
    run, points = killed_and_resumed(tmp_path, Track.tensorboard)
    assert [step for step, _, _ in points] == sorted({step for step, _, _ in points}) and len(points) == 8
    assert_tensorboard_agrees(run / "tensorboard", points)
    assert json.loads((run / "config.json").read_text())["track"] == "tensorboard"
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    text = events.Tensors("hyperparameters/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "|algo|ppo|" in text and "|learner.clip|0.2|" in text  # the resolved config, CleanRL's table
    assert folder_bytes(run / "tensorboard") < 4_000 + 1_500 * len(points)


def test_trackio_after_sigkill_and_resume_has_every_step_once(tmp_path):
    run, points = killed_and_resumed(tmp_path, Track.trackio)
    assert len(points) == 8
    assert_trackio_agrees(run / "trackio", points)
    with closing(sqlite3.connect(run / "trackio" / f"{tracking.TRACKIO_PROJECT}.db")) as db:
        (config,), = db.execute("SELECT config FROM configs WHERE run_name = 'r'")
    config = json.loads(config)
    assert config["algo"] == "ppo" and config["keep_data"] == "none" and config["model.n_layer"] >= 1
    # trackio's store starts near 200 KB (SQLite pages for its tables), then about 1 KB a row
    assert folder_bytes(run / "trackio") < 300_000 + 2_000 * len(points)
    assert folder_bytes(run) < 1_000_000  # a compact run stays small


def test_train_tracks_into_its_checkpoint_and_overwrite_starts_clean(cartpole_data, tmp_path):
    out = tmp_path / "ckpt"
    args = ("train", "--algo", "dqn", "--data", cartpole_data, "--out", out, "--track", "tensorboard")
    for updates in (150, 100):  # then --overwrite: the new training's curves only
        result = cli(*args, "--updates", updates, *(("--overwrite",) if updates == 100 else ()))
        assert result.exit_code == 0, result.output
        assert len(list((out / "tensorboard").glob("events.out.tfevents.*"))) == 1
        found = tensorboard_points(out / "tensorboard")
        assert [step for step, _ in found["losses/loss"]] == list(range(50, updates + 1, 50))
        assert [step for step, _ in found["losses/td_loss"]] == [updates]
    checkpoint.load(out)


def test_train_tracks_with_trackio(cartpole_data, tmp_path):
    out = tmp_path / "ckpt"
    result = subprocess.run([sys.executable, "-m", "transformer_rl", "train", "--algo", "dqn", "--data",
                             str(cartpole_data), "--out", str(out), "--updates", "60", "--track", "trackio"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "Trackio" not in result.stdout  # trackio's own lines stay out of trl's output
    found = trackio_points(out / "trackio")
    assert [(run, step) for run, step, _ in found] == [("ckpt", 50), ("ckpt", 60)]
    assert "losses/td_loss" in found[-1][2]
    checkpoint.load(out)


@pytest.mark.parametrize("command", ["run", "train"])
def test_a_tracker_that_is_not_installed_is_one_line(cartpole_data, tmp_path, monkeypatch, command):
    monkeypatch.setitem(tracking.PACKAGES, Track.tensorboard, "tensorboard_not_installed")
    monkeypatch.chdir(tmp_path)
    args = (("run", "--root", "runs", "--iterations", "1", "--steps-per-iteration", "200") if command == "run"
            else ("train", "--data", cartpole_data, "--out", "ckpt", "--updates", "5"))
    line = one_line_error(cli(*args, "--track", "tensorboard"))
    assert "--track tensorboard" in line and "pip install 'transformer-rl[track]'" in line
    assert list(tmp_path.iterdir()) == []


def test_an_unknown_tracker_is_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    line = one_line_error(cli("run", "--track", "wandb"))
    assert "--track" in line and "tensorboard" in line
    assert list(tmp_path.iterdir()) == []


def test_a_resume_can_add_a_tracker(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ("run", "--algo", "ppo", "--root", "runs", "--steps-per-iteration", "256", "--eval-episodes", "2",
            "--stop-at", "1e9", *COMPACT)
    assert cli(*args, "--iterations", "1").exit_code == 0
    before = snapshot(tmp_path)
    monkeypatch.setitem(tracking.PACKAGES, Track.tensorboard, "tensorboard_not_installed")
    assert "transformer-rl[track]" in one_line_error(cli(*args, "--iterations", "2", "--track", "tensorboard"))
    assert snapshot(tmp_path) == before  # refused before anything changed
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    result = cli(*args, "--iterations", "2", "--track", "tensorboard")
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / "default"
    assert json.loads((run / "config.json").read_text())["track"] == "none"  # as the run began
    assert_tensorboard_agrees(run / "tensorboard", expected(run))  # the rows from before tracking too
