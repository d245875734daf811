"""Real 2-process jobs under `torchrun --standalone --nproc-per-node 2` (gloo on CPU): one
dataset from two ranks' pools, a PPO run that learns, and a SIGKILL of one rank then a resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from transformer_rl.collect.job import collect
from transformer_rl.collect.policies import RandomPolicy
from transformer_rl.collect.rollout import CollectConfig
from transformer_rl.datasets.checks import verify
from transformer_rl.datasets.format import read_manifest
from transformer_rl.datasets.reader import load
from transformer_rl.envs import resolve

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
            "-m", "transformer_rl"]
PPO = ["run", "--env", "CartPole-v1", "--algo", "ppo", "--iterations", "30", "--eval-every", "5",
       "--eval-episodes", "20", "--stop-at", "1e9"]


def torchrun(*args, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([*TORCHRUN, *map(str, args)], capture_output=True, text=True, timeout=timeout, env=env)


def test_two_ranks_collect_one_dataset_that_verifies(tmp_path):
    out = tmp_path / "data"
    r = torchrun("collect", "--env", "CartPole-v1", "--steps", 20_000, "--num-envs", 8, "--seed", 5, "--out", out)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("transitions in") == 1  # rank 0 reports, for the whole job
    manifest = read_manifest(out)
    segments = [(s["env_index_offset"], s["seed"], s["num_envs"]) for s in manifest["segments"]]
    assert segments == [(0, 5, 4), (4, 9, 4)]  # env i of the job is seeded seed + i
    data = load(out)
    assert 20_000 <= len(data) < 20_000 + 8 * 500  # the steps asked for, in whole episodes
    assert set(np.unique(data.env_index)) == set(range(8))  # both ranks' envs
    assert sum(s["env_steps"] for s in manifest["segments"]) >= len(data)
    assert verify(out).ok

    r = torchrun("collect", "--env", "CartPole-v1", "--steps", 30_000, "--num-envs", 8, "--out", out, "--resume")
    assert r.returncode == 0, r.stderr
    assert 30_000 <= len(load(out)) < 30_000 + 8 * 500
    assert [s["env_index_offset"] for s in read_manifest(out)["segments"]] == [0, 4, 8, 12]
    assert verify(out).ok


def test_two_ranks_stream_the_same_episodes_as_one_process_would_seed_them(tmp_path):
    """Rank 1's env 0 is env 4 of the job: alone, a pool seeded seed + 4 plays the same stream."""
    out = tmp_path / "data"
    r = torchrun("collect", "--env", "CartPole-v1", "--episodes", 40, "--num-envs", 8, "--out", out)
    assert r.returncode == 0, r.stderr
    data = load(out)
    first = data.episode_rows[:-1][data.env_index[data.episode_rows[:-1]] == 4][0]
    alone = tmp_path / "alone"
    collect(resolve("CartPole-v1"), alone, RandomPolicy(2, 0), CollectConfig(episodes=1, num_envs=1, seed=4))
    mine = load(alone)
    np.testing.assert_array_equal(data.obs[first], mine.obs[0])  # the same reset: the same seed


def test_two_rank_ppo_run_learns_and_its_dataset_verifies(tmp_path):
    r = torchrun(*PPO, "--root", tmp_path, "--name", "ppo2")
    assert r.returncode == 0, r.stderr
    run = tmp_path / "ppo2"
    report = json.loads((run / "report.json").read_text())
    assert report["best"]["mean_return"] > 100, report  # a uniform policy scores ~22 (seen: 138)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [row["iteration"] for row in rows] == list(range(1, 31))  # rank 0 alone writes each once
    steps = np.diff([0] + [row["env_steps"] for row in rows])
    assert (steps >= 1024).all() and (steps < 1024 + 8 * 2).all()  # the job plays what one process would
    manifest = read_manifest(run / "data")
    assert [s["num_envs"] for s in manifest["segments"]] == [4, 4]
    assert verify(run / "data").ok


def _rank_pid(torchrun_pid: int, rank: int) -> int | None:
    """The pid of the worker of ``rank`` started by this torchrun (Linux: /proc)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == torchrun_pid and f"RANK={rank}".encode() in environ:
            return int(entry.name)
    return None


def _kill_rank_when(args: list, rank: int, ready) -> int:
    """Start the job, SIGKILL the worker of ``rank`` once ``ready()`` holds (then a moment);
    returns torchrun's exit code."""
    p = subprocess.Popen([str(a) for a in args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    start, killed = time.time(), None
    while p.poll() is None and time.time() - start < 120:
        if ready():
            time.sleep(0.3)  # somewhere inside what follows
            killed = _rank_pid(p.pid, rank)
            if killed is not None:
                os.kill(killed, signal.SIGKILL)
            break
        time.sleep(0.01)
    assert killed is not None, f"rank {rank} was not found running"
    return p.wait(timeout=120)


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the rank's process through /proc")
def test_sigkill_of_a_collecting_rank_then_resume_completes_one_dataset(tmp_path):
    out = tmp_path / "data"
    args = [*TORCHRUN, "collect", "--env", "CartPole-v1", "--steps", 400_000, "--num-envs", 8, "--out", out,
            "--shard-rows", 20_000]
    assert _kill_rank_when(args, 0, lambda: (out / "_manifest.parquet").exists()
                           and read_manifest(out)["shards"]) != 0
    assert validate_ok(out) and len(load(out)) < 400_000  # what it listed is whole
    r = subprocess.run([str(a) for a in [*args, "--resume"]], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert 400_000 <= len(load(out)) < 400_000 + 8 * 500
    assert verify(out).ok


def validate_ok(root: Path) -> bool:
    from transformer_rl.datasets.checks import validate

    return validate(root).ok


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the rank's process through /proc")
@pytest.mark.parametrize("rank", [0, 1])
def test_sigkill_of_one_rank_then_the_same_command_resumes(tmp_path, rank):
    args = [*TORCHRUN, *PPO, "--iterations", "16", "--eval-every", "2", "--eval-episodes", "8",
            "--root", tmp_path, "--name", "kill"]
    run = tmp_path / "kill"

    def ready() -> bool:
        state = run / "state.json"
        return state.exists() and json.loads(state.read_text())["iteration"] >= 4

    assert _kill_rank_when(args, rank, ready) != 0  # torchrun stops the job when a rank dies
    died_after = json.loads((run / "state.json").read_text())["iteration"]
    assert died_after < 16

    r = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    assert f"resuming {run} after iteration {died_after}" in r.stdout
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [row["iteration"] for row in rows] == list(range(1, 17))
    assert json.loads((run / "report.json").read_text())["iterations"] == 16
    assert verify(run / "data").ok


def test_a_bad_input_stops_every_rank_with_its_one_line_error_and_writes_nothing(tmp_path):
    r = torchrun(*PPO, "--num-envs", 3, "--root", tmp_path, "--name", "bad")
    assert r.returncode != 0
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: --num-envs 3 does not split over 2 ranks; give a multiple of 2"] * 2
    assert not (tmp_path / "bad").exists()


def test_packed_episodes_round_trip_without_pickle(tmp_path):
    out = tmp_path / "data"
    collect(resolve("Breakout-ram"), out, RandomPolicy(4, 0), CollectConfig(steps=200, num_envs=2))
    from transformer_rl.datasets.batch import EpisodeBatch
    from transformer_rl.datasets.ranks import pack, unpack

    data = load(out)
    rows = data.episode_rows
    batch = EpisodeBatch(obs=data.obs, action=data.action, reward=data.reward, logp=None, value=None,
                         lengths=np.diff(rows), env_index=data.env_index[rows[:-1]],
                         terminated=data.terminated[rows[1:] - 1], truncated=data.truncated[rows[1:] - 1],
                         final_obs=data.final_obs)
    back, numbers = unpack(pack(batch, env_steps=1234))
    assert numbers == {"env_steps": 1234} and back.logp is None
    for name in ("obs", "action", "reward", "lengths", "env_index", "terminated", "final_obs"):
        np.testing.assert_array_equal(getattr(back, name), getattr(batch, name))
    assert back.obs.dtype == np.uint8
    assert unpack(pack(None, env_steps=0))[0] is None


def test_feature_tokens_under_two_ranks(tmp_path):
    r = torchrun("run", "--env", "CartPole-v1", "--algo", "ppo", "--tokens", "feature", "--n-embd", 8,
                 "--iterations", 2, "--steps-per-iteration", 512, "--eval-every", 2, "--eval-episodes", 2,
                 "--root", tmp_path, "--name", "f")
    assert r.returncode == 0, r.stderr
    model = json.loads((tmp_path / "f" / "checkpoints" / "best" / "config.json").read_text())["model"]
    assert (model["tokens"], model["readout"]) == ("feature", "summary")
    assert verify(tmp_path / "f" / "data").ok  # one dataset from both ranks' pools
