import json

import numpy as np
import pytest
import torch

from conftest import cli
from transformer_rl import envs
from transformer_rl.config import RunConfig
from transformer_rl.datasets import load
from transformer_rl.models import ModelArgs, new_model
from transformer_rl.pipeline import run
from transformer_rl.train import checkpoint
from transformer_rl.train.dqn import DQNConfig, DQNLearner, n_step_targets


def test_n_step_targets_by_hand():
    # episode A: rows 0-2, terminated; episode B: rows 3-4, truncated
    reward = np.array([1.0, 2.0, 3.0, 10.0, 20.0], np.float32)
    terminated = np.array([False, False, True, False, False])
    rows = np.array([0, 3, 5])
    g, steps, w = n_step_targets(reward, terminated, rows, gamma=0.5, n=2)
    assert np.allclose(g, [1 + 0.5 * 2, 2 + 0.5 * 3, 3, 10 + 0.5 * 20, 20])
    assert steps.tolist() == [2, 2, 1, 2, 1]
    # row 1 and 2 reach the termination: no bootstrap; truncation bootstraps with gamma^steps
    assert np.allclose(w, [0.25, 0.0, 0.0, 0.25, 0.5])


def test_checkpoint_round_trip_and_wrong_env(tmp_path, cartpole_data):
    data = load(cartpole_data)
    spec = envs.resolve("CartPole-v1")
    model = new_model(spec, ModelArgs(), data, seed=0)
    learner = DQNLearner(model, DQNConfig(updates=5))
    learner.update(data, seed=0)
    checkpoint.save(tmp_path / "ck", model, spec, "dqn", learner_state=learner.state_dict())
    assert not list(tmp_path.glob("**/*.pt")) and not list(tmp_path.glob("**/*.pkl"))
    back = checkpoint.load(tmp_path / "ck", spec=spec)
    x = torch.randn(3, 8, 4)
    a = torch.zeros(3, 8, dtype=torch.long)
    assert torch.equal(model(x, a).q, back.model(x, a).q)
    assert back.learner_state["updates"] == 5
    assert back.learner_state["optimizer"]["state"][0]["exp_avg"].shape == next(model.parameters()).shape
    with pytest.raises(Exception, match="CartPole-v1"):
        checkpoint.load(tmp_path / "ck", spec=envs.resolve("Acrobot-v1"))


def test_dqn_learns_cartpole_well_above_random(tmp_path):
    # evaluated once, at the end: 444.8 (seed 0)
    cfg = RunConfig(name="learn", root=tmp_path, seed=0, iterations=3, steps_per_iteration=5000, eval_every=3,
                    eval_episodes=20, learner=DQNConfig(updates=400))
    report = run(cfg, log=lambda *_: None)
    # a random policy scores about 22; a broken loss or target stays near it
    assert report["best"]["mean_return"] > 100, report
    rows = [json.loads(x) for x in (tmp_path / "learn" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == report["iterations"]
    assert (tmp_path / "learn" / "curve.png").stat().st_size > 1000


def test_train_eval_cli(tmp_path, cartpole_data):
    r = cli("train", "--data", cartpole_data, "--out", tmp_path / "ck", "--updates", "20")
    assert r.exit_code == 0, r.output
    before = sorted(p.name for p in (tmp_path / "ck").iterdir())
    r = cli("eval", tmp_path / "ck", "--episodes", "3")
    assert r.exit_code == 0 and '"episodes": 3' in r.output, r.output
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == before  # nothing written into it
    r = cli("eval", tmp_path / "ck", "--episodes", "5", "--record", tmp_path / "rec", "--gif",
            tmp_path / "a.gif", "--report", tmp_path / "report.json")
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["episodes"] == 5 and report["min_return"] > 0
    assert cli("datasets", "verify", tmp_path / "rec").exit_code == 0
    assert (tmp_path / "a.gif").read_bytes()[:3] == b"GIF"
    r = cli("eval", cartpole_data)
    assert r.exit_code == 2 and "not a trl checkpoint" in r.output
