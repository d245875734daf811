"""pytest-benchmark: raw EnvPool stepping vs our collection into Parquet, same num_envs.

Run: make bench   (or .venv/bin/python -m pytest benchmarks -q)
The acceptance ratio (collection / raw, one run, side by side) is in benchmarks/RESULTS.md,
measured with `trl bench` (interleaved rounds, medians).
"""

import shutil

import numpy as np
import pytest

from transformer_rl.collect.job import collect
from transformer_rl.collect.policies import RandomPolicy
from transformer_rl.collect.rollout import CollectConfig
from transformer_rl.datasets import build_sequences, load
from transformer_rl.envs import make_pool, resolve

CASES = [("CartPole-v1", 128, 200_000), ("Breakout-ram", 32, 4_000)]


@pytest.mark.parametrize("env_id, num_envs, steps", CASES)
def test_raw_envpool(benchmark, env_id, num_envs, steps):
    spec = resolve(env_id)
    pool = make_pool(spec, num_envs, 0)
    rng = np.random.default_rng(0)

    def play():
        pool.reset()
        for _ in range(steps // num_envs):
            pool.step(rng.integers(0, spec.num_actions, num_envs, dtype=np.int32))

    benchmark.pedantic(play, rounds=3, iterations=1)
    benchmark.extra_info["steps_per_s"] = steps / benchmark.stats["median"]


@pytest.mark.parametrize("env_id, num_envs, steps", CASES)
def test_collect_to_parquet(benchmark, tmp_path, env_id, num_envs, steps):
    spec = resolve(env_id)
    out = tmp_path / "d"

    def play():
        shutil.rmtree(out, ignore_errors=True)
        return collect(spec, out, RandomPolicy(spec.num_actions, 0),
                       CollectConfig(steps=steps, num_envs=num_envs))

    stats = benchmark.pedantic(play, rounds=3, iterations=1)
    benchmark.extra_info["steps_per_s"] = stats.env_steps / benchmark.stats["median"]


def test_window_sampler(benchmark, tmp_path):
    spec = resolve("CartPole-v1")
    collect(spec, tmp_path / "d", RandomPolicy(2, 0), CollectConfig(steps=100_000, num_envs=16))
    seq = build_sequences(load(tmp_path / "d"), spec.num_actions)
    rng = np.random.default_rng(0)

    def sample():
        index, _ = seq.windows(rng.integers(0, len(seq), 256), 16)
        return seq.obs[index]

    benchmark(sample)
