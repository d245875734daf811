from pathlib import Path

import pytest
from typer.testing import CliRunner

from transformer_rl import envs
from transformer_rl.cli import app
from transformer_rl.collect.policies import RandomPolicy
from transformer_rl.collect.rollout import CollectConfig, collect


def cli(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="session")
def cartpole_data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data") / "cartpole"
    spec = envs.resolve("CartPole-v1")
    collect(spec, out, RandomPolicy(2, 0), CollectConfig(steps=4000, num_envs=8, shard_rows=1500))
    return out
