"""Shared fixtures: small real datasets (EnvPool + Parquet, no mocks) and a CLI runner."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from transformer_rl import envs
from transformer_rl.cli.app import app
from transformer_rl.collect.job import collect
from transformer_rl.collect.policies import RandomPolicy
from transformer_rl.collect.rollout import CollectConfig
from transformer_rl.datasets import Transitions
from transformer_rl.datasets.format import MANIFEST, MANIFEST_KEY

CARTPOLE_STEPS = 4000
BREAKOUT_STEPS = 300


def cli(*args):
    """Run `trl ARGS...` in-process; returns click's Result (exit_code, output)."""
    return CliRunner().invoke(app, [str(a) for a in args])


def output_lines(result) -> list[str]:
    return [line for line in result.output.splitlines() if line.strip()]


def one_line_error(result, code: int = 2) -> str:
    """Assert a one-line error with exit ``code`` and no traceback; return the line."""
    assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = output_lines(result)
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


def snapshot(path: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``path`` with its bytes and mtime, to prove nothing was touched."""
    if not path.exists():
        return {}
    if path.is_file():
        return {path.name: (path.read_bytes(), path.stat().st_mtime_ns)}
    return {
        str(p.relative_to(path)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


def raw_manifest(root: Path) -> dict:
    """A dataset's manifest as stored, unchecked (the JSON in _manifest.parquet's metadata)."""
    return json.loads(pq.read_schema(Path(root) / MANIFEST).metadata[MANIFEST_KEY])


def write_raw_manifest(root: Path, text: str) -> None:
    """Replace a dataset's manifest JSON by ``text``, unchecked, in a valid _manifest.parquet."""
    path = Path(root) / MANIFEST
    schema = pq.read_schema(path)
    pq.write_table(schema.with_metadata({**schema.metadata, MANIFEST_KEY: text.encode()}).empty_table(), path)


def edit_raw_manifest(root: Path, change: Callable[[dict], None]) -> None:
    manifest = raw_manifest(root)
    change(manifest)
    write_raw_manifest(root, json.dumps(manifest))


def random_collect(spec: envs.EnvSpec, out: Path, seed: int = 0, *, append: bool = False,
                   **cfg):
    return collect(spec, out, RandomPolicy(spec.num_actions, seed), CollectConfig(seed=seed, **cfg),
                   append=append)


def single_env(spec: envs.EnvSpec, seed: int):
    """One EnvPool env seeded ``seed``, built with envpool directly (independent of make_pool)."""
    import envpool

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return envpool.make(spec.task, env_type="gymnasium", num_envs=1, batch_size=1, seed=seed,
                            **spec.config)


def replay_stream(spec: envs.EnvSpec, data: Transitions, env_index: int) -> None:
    """Re-play env stream ``env_index`` of a single-segment dataset with a fresh env and the
    recorded actions; every row's obs, reward, end flags and final_obs must be what EnvPool
    returned."""
    env = single_env(spec, data.manifest["seed"] + env_index)
    obs, info = env.reset()
    first_rows = data.episode_rows[:-1]
    episodes = np.flatnonzero(data.env_index[first_rows] == env_index)
    assert len(episodes), f"no episodes of env {env_index}"
    for e in episodes:  # in finishing order = time order for one env
        a, b = data.episode_rows[e], data.episode_rows[e + 1]
        for r in range(a, b):
            np.testing.assert_array_equal(envs.observe(spec, obs, info)[0], data.obs[r])
            obs, reward, term, trunc, info = env.step(np.array([data.action[r]], np.int32))
            assert info["elapsed_step"][0] == r - a + 1
            assert reward[0] == data.reward[r]
            assert bool(term[0]) == bool(data.terminated[r])
            assert bool(trunc[0] and not term[0]) == bool(data.truncated[r])
        np.testing.assert_array_equal(envs.observe(spec, obs, info)[0], data.final_obs[e])
        # the autoreset step: ignores the action, starts the next episode
        obs, reward, term, trunc, info = env.step(np.zeros(1, np.int32))
        assert info["elapsed_step"][0] == 0 and reward[0] == 0


@pytest.fixture(scope="session")
def cartpole_data(tmp_path_factory) -> Path:
    """CartPole-v1, sync, 8 envs, >= 4000 rows over several shards (read-only: copy to edit)."""
    out = tmp_path_factory.mktemp("data") / "cartpole"
    random_collect(envs.resolve("CartPole-v1"), out, steps=CARTPOLE_STEPS, num_envs=8,
                   shard_rows=1500)
    return out


@pytest.fixture(scope="session")
def breakout_data(tmp_path_factory) -> Path:
    """Breakout-ram (ALE v5 defaults), async: 4 envs, batches of 2 (read-only: copy to edit)."""
    out = tmp_path_factory.mktemp("data") / "breakout"
    random_collect(envs.resolve("Breakout-ram"), out, seed=3, steps=BREAKOUT_STEPS, num_envs=4,
                   batch_size=2, shard_rows=200)
    return out
