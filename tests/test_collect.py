import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pyarrow.dataset as pads

from conftest import cli
from transformer_rl import envs
from transformer_rl.collect.policies import RandomPolicy
from transformer_rl.collect.rollout import CollectConfig, collect
from transformer_rl.datasets import load, read_manifest
from transformer_rl.datasets.checks import validate, verify


def test_rows_are_real_transitions(cartpole_data):
    d = load(cartpole_data)
    assert len(d) >= 4000 and len(read_manifest(cartpole_data)["shards"]) >= 2
    lengths = np.diff(d.episode_rows)
    assert np.array_equal(d.step, np.arange(len(d)) - np.repeat(d.episode_rows[:-1], lengths))
    ends = d.terminated.astype(int) + d.truncated.astype(int)
    assert np.array_equal(np.flatnonzero(ends), d.episode_rows[1:] - 1)  # one flag, last row only
    assert (d.reward == 1.0).all()  # CartPole pays 1 per real step: no autoreset rows (reward 0)
    assert np.array_equal(d.episode_returns(), lengths.astype(np.float32))


def test_validate_and_verify_sync_cartpole(cartpole_data):
    r = cli("datasets", "validate", cartpole_data)
    assert r.exit_code == 0, r.output
    r = cli("datasets", "verify", cartpole_data)
    assert r.exit_code == 0 and "bit for bit" in r.output, r.output


def test_breakout_ram_async_verifies_and_truncation_keeps_final_obs(tmp_path):
    spec = envs.resolve("Breakout-ram", max_episode_steps=60)
    out = tmp_path / "b"
    stats = collect(spec, out, RandomPolicy(spec.num_actions, 1),
                    CollectConfig(episodes=6, num_envs=4, batch_size=2))
    assert stats.episodes == 6
    d = load(out)
    assert d.obs.dtype == np.uint8 and d.obs.shape[1] == 128
    assert d.truncated.any()
    assert verify(out).ok  # the final observations and RAM re-simulate bit for bit
    r = cli("datasets", "verify", out)
    assert r.exit_code == 0, r.output


def test_resume_appends_segment_and_still_verifies(tmp_path):
    spec = envs.resolve("CartPole-v1")
    out = tmp_path / "c"
    collect(spec, out, RandomPolicy(2, 0), CollectConfig(episodes=30, num_envs=4))
    stats = collect(spec, out, RandomPolicy(2, 1), CollectConfig(episodes=50, num_envs=3), append=True)
    assert stats.episodes == 20
    m = read_manifest(out)
    assert [s["env_index_offset"] for s in m["segments"]] == [0, 4]
    assert verify(out).ok


def test_reads_with_pyarrow_dataset_and_pandas(cartpole_data):
    d = load(cartpole_data)
    table = pads.dataset(str(cartpole_data), format="parquet", exclude_invalid_files=True).to_table()
    assert table.num_rows == len(d)
    df = pd.read_parquet(cartpole_data, ignore_prefixes=["manifest"])
    df = df.sort_values(["episode_id", "step"])
    assert len(df) == len(d)
    assert np.allclose(np.stack(df["obs"].to_numpy()), d.obs)
    assert df.groupby("episode_id")["reward"].sum().to_numpy().tolist() == d.episode_returns().tolist()


def test_sigkill_leaves_valid_dataset_and_resume_loses_nothing(tmp_path):
    out = tmp_path / "k"
    cmd = [sys.executable, "-m", "transformer_rl", "collect", "--env", "CartPole-v1", "--steps",
           "60000", "--num-envs", "8", "--shard-rows", "2000", "--out", str(out), "--resume"]
    rng = np.random.default_rng(0)
    before: dict[int, tuple] = {}
    for _ in range(3):
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 30
        while not (out / "manifest.json").exists() and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(float(rng.uniform(0.05, 0.6)))
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        assert validate(out).ok
        d = load(out)
        for e in range(d.num_episodes):
            a, b = d.episode_rows[e], d.episode_rows[e + 1]
            before[int(d.episode_id[a])] = (b - a, d.obs[a:b].sum())
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    d = load(out)
    assert len(d) >= 60000
    assert np.array_equal(np.unique(d.episode_id), np.arange(d.num_episodes))
    for e, (length, total) in before.items():  # finished episodes survive resumes unchanged
        a, b = d.episode_rows[e], d.episode_rows[e + 1]
        assert (b - a, d.obs[a:b].sum()) == (length, total)
    assert verify(out).ok
