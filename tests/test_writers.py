"""One writer at a time, and what a failed or interrupted write leaves: real `trl` processes.

A second writer of a dataset, run directory or checkpoint is refused at once, naming the
holder's pid, while readers go on; a SIGKILLed holder leaves no stale lock. A full disk gives
one line naming the path and leaves nothing half-written; SIGTERM or SIGINT during `eval
--record` leaves no recording, so the rerun works.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import cli
from transformer_rl.files import LOCK

TRL = str(Path(sys.executable).with_name("trl"))
CP = ("--env", "CartPole-v1")


def start(*args, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([TRL, *map(str, args)], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def wait_for_lock(directory: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    """Until ``proc`` holds ``directory`` (its pid in the lock file)."""
    lock, end = directory / LOCK, time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"exited early: {proc.communicate()}")
        if lock.is_file() and lock.read_text().strip() == str(proc.pid):
            return
        time.sleep(0.05)
    raise AssertionError(f"{directory} never locked")


def run(*args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([TRL, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=300)


def refused_by(result: subprocess.CompletedProcess, holder: subprocess.Popen) -> None:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert f"pid {holder.pid}" in lines[0] and "one writer at a time" in lines[0], lines[0]


def stop(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    proc.send_signal(sig)
    proc.communicate(timeout=120)


def test_two_collects_on_one_dataset(tmp_path, cartpole_data):
    shutil.copytree(cartpole_data, tmp_path / "d")
    holder = start("collect", *CP, "--steps", 50_000_000, "--out", "d", "--resume", cwd=tmp_path)
    try:
        wait_for_lock(tmp_path / "d", holder)
        refused_by(run("collect", *CP, "--steps", 50_000_000, "--out", "d", "--resume", cwd=tmp_path), holder)
        assert run("datasets", "validate", "d", cwd=tmp_path).returncode == 0  # readers work beside it
    finally:
        stop(holder, signal.SIGINT)  # Ctrl-C: what was collected is kept
    assert run("datasets", "validate", "d", cwd=tmp_path).returncode == 0
    assert not (tmp_path / "d" / LOCK).exists()


def test_two_runs_with_one_name(tmp_path):
    def args(iterations: int):
        return ("run", *CP, "--root", "runs", "--name", "r", "--iterations", iterations, "--steps-per-iteration",
                500, "--updates", 20, "--eval-episodes", 2)
    holder = start(*args(1000), cwd=tmp_path)
    try:
        wait_for_lock(tmp_path / "runs" / "r", holder)
        refused_by(run(*args(1000), cwd=tmp_path), holder)
    finally:
        stop(holder)  # SIGKILL: the OS drops the lock with the process
    state = json.loads((tmp_path / "runs" / "r" / "state.json").read_text())
    resumed = run(*args(state["iteration"] + 2), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    metrics = (tmp_path / "runs" / "r" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["iteration"] for line in metrics] == list(range(1, state["iteration"] + 3))


def test_two_trainings_into_one_checkpoint(tmp_path, cartpole_data):
    args = ("train", "--data", cartpole_data, "--out", "ck", "--updates", 10_000_000)
    holder = start(*args, cwd=tmp_path)
    try:
        wait_for_lock(tmp_path / "ck", holder)
        refused_by(run(*args, cwd=tmp_path), holder)
    finally:
        stop(holder, signal.SIGTERM)
    assert not (tmp_path / "ck").exists()  # it made --out and did not finish: nothing of it stays
    assert run("train", "--data", cartpole_data, "--out", "ck", "--updates", 5, cwd=tmp_path).returncode == 0
    assert (tmp_path / "ck" / "config.json").is_file() and not (tmp_path / "ck" / LOCK).exists()


@pytest.fixture(scope="module")
def breakout_ckpt(tmp_path_factory, breakout_data) -> Path:
    out = tmp_path_factory.mktemp("bk") / "ck"
    r = cli("train", "--algo", "bc", "--data", breakout_data, "--out", out, "--updates", 2)  # plays about randomly
    assert r.exit_code == 0, r.output
    return out


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_during_eval_record_leaves_no_recording(tmp_path, breakout_ckpt, sig):
    proc = start("eval", breakout_ckpt, "--episodes", 16, "--mode", "sample", "--record", "rec", "--report",
                 "r.json", cwd=tmp_path)
    wait_for_lock(tmp_path / "rec", proc)
    time.sleep(0.5)
    stop(proc, sig)
    assert proc.returncode != 0
    assert not (tmp_path / "rec").exists() and not (tmp_path / "r.json").exists()
    again = run("eval", breakout_ckpt, "--episodes", 1, "--mode", "sample", "--record", "rec", "--report", "r.json",
                cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert run("datasets", "verify", "rec", cwd=tmp_path).returncode == 0


@pytest.fixture
def small_disk(tmp_path):
    """A 512 KiB tmpfs, where this machine lets us mount one."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(disk)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here")
    yield disk
    subprocess.run(["umount", str(disk)], check=False)


def fill(disk: Path) -> None:
    try:
        with open(disk / "filler", "wb") as f:
            while True:
                f.write(b"\0" * 4096)
                f.flush()
    except OSError:  # full
        pass


def full_disk_error(result: subprocess.CompletedProcess, path: str) -> None:
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]  # beside a progress bar
    assert result.returncode == 2 and len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "No space left" in errors[0] and path in errors[0], errors[0]


def test_a_full_disk_is_one_line_and_leaves_nothing_half_written(small_disk, cartpole_data, tmp_path):
    ck = tmp_path / "ck"
    assert run("train", "--data", cartpole_data, "--out", ck, "--updates", 2, cwd=tmp_path).returncode == 0
    # collection: the shards that fit are a valid dataset; the rest is not half there
    result = run("collect", *CP, "--steps", 200_000, "--shard-rows", 10_000, "--out", small_disk / "d",
                 cwd=tmp_path)
    full_disk_error(result, str(small_disk))
    if (small_disk / "d").exists():
        assert run("datasets", "validate", small_disk / "d", cwd=tmp_path).returncode == 0
        assert not [p for p in (small_disk / "d").iterdir() if p.suffix == ".tmp" or p.name == LOCK]
    fill(small_disk)
    for args, name in ((("eval", ck, "--episodes", 2, "--report", small_disk / "r.json"), "r.json"),
                       (("eval", ck, "--episodes", 2, "--report", tmp_path / "r.json", "--record",
                         small_disk / "rec"), "rec"),
                       (("bench", "--seconds", 0.05, "--rounds", 1, "--num-envs", 2, "--no-async", "--json",
                         small_disk / "b.json"), "b.json")):
        full_disk_error(run(*args, cwd=tmp_path), name)
        assert {p.name for p in small_disk.iterdir()} <= {"d", "filler"}  # no r.json(.tmp), rec, b.json
    (small_disk / "filler").unlink(missing_ok=True)
    shutil.rmtree(small_disk / "d", ignore_errors=True)
    assert run("eval", ck, "--episodes", 2, "--report", small_disk / "r.json", "--record", small_disk / "rec",
               cwd=tmp_path).returncode == 0  # the rerun works
