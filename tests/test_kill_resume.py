"""`trl run` survives SIGKILL at any instant: rerunning the same command finishes the run.

Each sequence kills one run directory's process again and again, at instants chosen by what the
run is doing (collecting, training or evaluating, seen from its files) plus a random delay, or
at random times; then reruns it to the end and checks the result: every iteration's metrics
exactly once, a dataset that re-simulates bit for bit, checkpoints that load.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from transformer_rl.datasets import read_manifest
from transformer_rl.datasets.checks import verify
from transformer_rl.errors import UsageError
from transformer_rl.train import checkpoint

DQN = ["--algo", "dqn", "--iterations", "4", "--steps-per-iteration", "600", "--num-envs", "4",
       "--updates", "200", "--eval-episodes", "8"]
PPO = ["--algo", "ppo", "--overlap", "--iterations", "6", "--steps-per-iteration", "512", "--num-envs", "4",
       "--eval-every", "2", "--eval-episodes", "8"]


def command(root: Path, name: str, algo_args: list[str]) -> list[str]:
    return [sys.executable, "-m", "transformer_rl", "run", "--env", "CartPole-v1", "--root", str(root),
            "--name", name, *algo_args, "--stop-at", "1e9"]


def _json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _manifest(root: Path):
    try:
        return read_manifest(root)
    except (OSError, UsageError):  # not written yet, or being replaced
        return None


def phase(run_dir: Path) -> str:
    """What the run is doing, from its files: start, collect, train, evaluate or between."""
    state = _json(run_dir / "state.json")
    if state is None:
        return "start"
    it = state["iteration"] + 1
    if (run_dir / "evals" / f"iter-{it:03d}").exists():
        return "evaluate"
    manifest = _manifest(run_dir / "data")
    if manifest is None:
        return "collect" if (run_dir / "data").exists() else "start"
    if len(manifest["shards"]) > state["shards"]:
        return "train"
    if len(manifest["segments"]) > state["segments"]:
        return "collect"
    return "between"


def kill_when(cmd: list[str], run_dir: Path, ready, delay: float) -> str | None:
    """Start the run; SIGKILL it ``delay`` s after ``ready(run_dir)`` first holds. Returns the
    phase it died in (marked when that was in iteration 1), or None if it finished first."""
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    start = time.time()
    while p.poll() is None and time.time() - start < 60:
        if ready(run_dir):
            time.sleep(delay)
            break
        time.sleep(0.002)
    if p.poll() is not None:
        return None
    p.kill()
    p.wait()
    state = _json(run_dir / "state.json")
    died = phase(run_dir)
    return f"{died} (iteration 1)" if state is not None and state["iteration"] == 0 else died


def finish_and_check(cmd: list[str], run_dir: Path, iterations: int, eval_every: int) -> None:
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    final = json.loads((run_dir / "report.json").read_text())
    assert final["iterations"] == iterations
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [row["iteration"] for row in rows] == list(range(1, iterations + 1))
    report = verify(run_dir / "data")
    assert report.ok, report.problems
    for it in range(eval_every, iterations + 1, eval_every):
        assert checkpoint.load(run_dir / "checkpoints" / f"iter-{it:03d}").learner_state["updates"] > 0
        assert verify(run_dir / "evals" / f"iter-{it:03d}").ok
    assert checkpoint.load(run_dir / "checkpoints" / "best").model is not None


def test_dqn_run_resumes_after_sigkill_in_collection_training_and_evaluation(tmp_path):
    """Killed inside each phase, iteration 1 included (the first kills land there)."""
    rng = np.random.default_rng(0)
    dqn, died = command(tmp_path, "dqn", DQN), []
    for want in ("collect", "train", "evaluate", "collect", "train"):
        got = kill_when(dqn, tmp_path / "dqn", lambda d, w=want: phase(d) == w, float(rng.uniform(0, 0.05)))
        if got is not None:
            died.append(got)
    finish_and_check(dqn, tmp_path / "dqn", iterations=4, eval_every=1)
    print("killed in:", died)
    assert len(died) >= 4, died
    assert {"collect", "train", "evaluate"} <= {d.split()[0] for d in died}, died
    assert any("iteration 1" in d for d in died), died


def test_overlapping_ppo_run_resumes_after_sigkill_at_random_instants(tmp_path):
    """One pool playing on across iterations, learning in a thread: killed at random times
    after each commit."""
    rng = np.random.default_rng(0)
    ppo, died = command(tmp_path, "ppo", PPO), []
    for done in (0, 2, 4):
        got = kill_when(ppo, tmp_path / "ppo", lambda d, n=done: (_json(d / "state.json") or {}).get(
            "iteration", -1) >= n, float(rng.uniform(0, 1.5)))
        if got is not None:
            died.append(got)
    finish_and_check(ppo, tmp_path / "ppo", iterations=6, eval_every=2)
    print("killed in:", died)
    assert len(died) >= 2, died
