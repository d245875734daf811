"""`trl bench`: environment throughput, measured side by side in one process.

For each num_envs: raw EnvPool stepping with random actions (sync, and async with batch
num_envs/2), gymnasium's own vector env on the same task where gymnasium has it, and our
collection into real Parquet files. Each mode runs in turn for a fixed time, repeated
``rounds`` times interleaved, so machine noise hits all of them alike; the median is reported.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from transformer_rl.collect.job import collect
from transformer_rl.collect.policies import RandomPolicy
from transformer_rl.collect.rollout import CollectConfig
from transformer_rl.envs import EnvSpec, make_pool, resolve
from transformer_rl.errors import UsageError
from transformer_rl.settings import MAX_ENVS


def raw_envpool(spec: EnvSpec, num_envs: int, seconds: float, batch_size: int | None = None) -> float:
    """Env transitions per second of a plain EnvPool loop with numpy random actions."""
    pool = make_pool(spec, num_envs, 0, batch_size)
    rng = np.random.default_rng(0)
    n_act = spec.num_actions
    steps = 0
    if batch_size is None or batch_size == num_envs:
        pool.reset()
        start = time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds:
            for _ in range(16):
                pool.step(rng.integers(0, n_act, num_envs, dtype=np.int32))
            steps += 16 * num_envs
    else:
        pool.async_reset()
        start = time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds:
            for _ in range(16):
                info = pool.recv()[-1]
                ids = info["env_id"]
                pool.send(rng.integers(0, n_act, len(ids), dtype=np.int32), ids)
                steps += len(ids)
    return steps / elapsed


def gymnasium_vector(env_id: str, num_envs: int, seconds: float) -> float | None:
    """gymnasium.make_vec (sync) on the same task, or None where gymnasium lacks it."""
    try:
        import gymnasium as gym

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            envs = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="sync")
    except Exception:  # not registered in gymnasium (e.g. Atari without ale_py): no baseline
        return None
    envs.reset(seed=0)
    steps, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(16):
            envs.step(envs.action_space.sample())
        steps += 16 * num_envs
    envs.close()
    return steps / elapsed


def collection(spec: EnvSpec, num_envs: int, seconds: float, batch_size: int | None = None) -> float:
    """Our `collect` with a random policy into real Parquet files (deleted afterwards)."""
    tmp = Path(tempfile.mkdtemp(prefix="trl-bench-"))
    try:
        # size the run from a short probe so it lasts about `seconds`
        probe = collect(spec, tmp / "probe", RandomPolicy(spec.num_actions, 0),
                        CollectConfig(steps=max(1000, num_envs * 50), num_envs=num_envs,
                                      batch_size=batch_size))
        steps = max(1000, int(probe.steps_per_s * seconds))
        stats = collect(spec, tmp / "data", RandomPolicy(spec.num_actions, 1),
                        CollectConfig(steps=steps, num_envs=num_envs, batch_size=batch_size))
        return stats.steps_per_s
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run_bench(env_id: str, num_envs_list: list[int], *, include_async: bool = True,
              seconds: float = 2.0, rounds: int = 3, progress=None) -> list[dict[str, Any]]:
    """Every mode at every pool size, ``rounds`` interleaved rounds each; ``progress(done, total)``
    after each measurement."""
    spec = resolve(env_id)
    rows = []
    per_size = 2 + (0 if spec.is_ram else 1)
    total = rounds * sum(per_size + (2 if include_async and n >= 2 else 0) for n in num_envs_list)
    done = 0
    for n in num_envs_list:
        modes: dict[str, Any] = {
            "envpool sync": lambda n=n: raw_envpool(spec, n, seconds),
            "trl collect sync": lambda n=n: collection(spec, n, seconds),
        }
        if include_async and n >= 2:
            modes["envpool async"] = lambda n=n: raw_envpool(spec, n, seconds, n // 2)
            modes["trl collect async"] = lambda n=n: collection(spec, n, seconds, n // 2)
        if not spec.is_ram:
            modes["gymnasium sync"] = lambda n=n: gymnasium_vector(env_id, n, seconds)
        results: dict[str, list[float]] = {m: [] for m in modes}
        for _ in range(rounds):
            for mode, fn in modes.items():
                value = fn()
                if value is not None:
                    results[mode].append(value)
                done += 1
                if progress is not None:
                    progress(done, total)
        medians = {m: float(np.median(v)) for m, v in results.items() if v}
        for mode, value in medians.items():
            base = medians["envpool async" if "async" in mode else "envpool sync"]
            rows.append({"env": env_id, "num_envs": n, "mode": mode, "steps_per_s": round(value),
                         "ratio": round(value / base, 3)})
    return rows


def parse_num_envs(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UsageError(f"--num-envs {text!r}: give comma-separated integers, e.g. 1,8,32") from None
    if not values or any(not 0 < v <= MAX_ENVS for v in values):
        raise UsageError(f"--num-envs {text!r}: every count must be positive, at most {MAX_ENVS}")
    return values
