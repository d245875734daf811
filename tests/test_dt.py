"""Decision Transformer and BC: returns-to-go, token layout, target alignment, and learning."""

import json

import numpy as np
import pytest
import torch

from conftest import cli
from transformer_rl.datasets import load
from transformer_rl.envs import resolve
from transformer_rl.models import GPT, GPTConfig
from transformer_rl.train.dt import DTConfig, DTLearner, returns_to_go


def test_returns_to_go_by_hand():
    # episode A: rewards 1, 2, 3; episode B: 10, 20 (undiscounted, never across episodes)
    reward = np.array([1, 2, 3, 10, 20], np.float32)
    assert returns_to_go(reward, np.array([0, 3, 5])).tolist() == [6, 5, 3, 30, 20]


def test_best_episodes(cartpole_data):
    d = load(cartpole_data)
    returns = d.episode_returns()
    best = d.best_episodes(percent=10)
    assert len(best) == int(np.ceil(d.num_episodes / 10))
    assert returns[best].min() >= np.sort(returns)[::-1][len(best) - 1]
    weak = d.best_episodes(percent=100, below=20)
    assert (returns[weak] < 20).all() and len(weak) == (returns < 20).sum()


def dt_model(context: int = 4) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(obs_dim=3, num_actions=2, context=context, rtg=True, rtg_scale=10.0,
                         max_timestep=50)).eval()


def window(seed: int, t: int = 4):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(1, t, 3, generator=g), torch.randint(0, 3, (1, t), generator=g),
            torch.ones(1, t, dtype=torch.bool), torch.rand(1, t, generator=g) * 20,
            torch.arange(t).unsqueeze(0) + 5)


def test_the_action_at_t_is_predicted_from_tokens_up_to_t_only():
    model = dt_model()
    obs, prev, mask, rtg, step = window(1)
    base = model(obs, prev, mask, rtg, step).logits  # (1, 4, 2)
    for t in range(3):
        # change everything after position t, including a_t (the previous action at t + 1)
        o2, p2, r2, s2 = obs.clone(), prev.clone(), rtg.clone(), step.clone()
        o2[:, t + 1:] += 1.0
        p2[:, t + 1:] = (p2[:, t + 1:] + 1) % 3
        r2[:, t + 1:] += 7.0
        s2[:, t + 1:] += 3
        out = model(o2, p2, mask, r2, s2).logits
        torch.testing.assert_close(out[:, : t + 1], base[:, : t + 1])
        assert not torch.allclose(out[:, t + 1], base[:, t + 1])


def test_return_to_go_timestep_and_padding_shape_the_prediction():
    model = dt_model()
    obs, prev, mask, rtg, step = window(2)
    base = model(obs, prev, mask, rtg, step).logits[:, -1]
    # the return wanted at the last step, and its timestep, both change the action's logits
    r2 = rtg.clone()
    r2[:, -1] += 10.0
    assert not torch.allclose(model(obs, prev, mask, r2, step).logits[:, -1], base)
    assert not torch.allclose(model(obs, prev, mask, rtg, step + 1).logits[:, -1], base)
    # left padding: what stands in masked positions is never attended to
    pad = torch.tensor([[False, True, True, True]])
    o2, r3 = obs.clone(), rtg.clone()
    o2[:, 0] += 100.0
    r3[:, 0] += 100.0
    torch.testing.assert_close(model(o2, prev, pad, r3, step).logits[:, 1:],
                               model(obs, prev, pad, rtg, step).logits[:, 1:])


def test_dt_needs_the_transformer():
    from transformer_rl.errors import UsageError
    from transformer_rl.models import MLP, MLPConfig

    with pytest.raises(UsageError, match="--model gpt"):
        DTLearner(MLP(MLPConfig(3, 2)), DTConfig())


def test_dt_follows_its_target_on_random_cartpole_data(tmp_path, cartpole_data):
    """Trained on random play (returns ~8-80), a DT asked for a high return plays longer than
    one asked for a low return; BC trains on the same data; reports record the target."""
    r = cli("train", "--algo", "dt", "--data", cartpole_data, "--out", tmp_path / "dt", "--updates", "400")
    assert r.exit_code == 0, r.output
    scores = {}
    for target in (10, 100):
        out = tmp_path / f"r{target}.json"
        r = cli("eval", tmp_path / "dt", "--episodes", "30", "--target-return", target, "--report", out)
        assert r.exit_code == 0, r.output
        report = json.loads(out.read_text())
        assert report["target_return"] == target
        scores[target] = report["mean_return"]
    assert scores[100] > 1.5 * scores[10], scores
    best = load(cartpole_data).episode_returns().max()
    r = cli("eval", tmp_path / "dt", "--episodes", "4")  # the default target: the data's best
    assert r.exit_code == 0 and f"target {best:g}" in r.output, r.output
    r = cli("train", "--algo", "bc", "--data", cartpole_data, "--out", tmp_path / "bc", "--updates", "50",
            "--top-percent", "10")
    assert r.exit_code == 0, r.output
    assert cli("eval", tmp_path / "bc", "--episodes", "4", "--target-return", "5").exit_code == 2
    assert resolve("CartPole-v1").max_episode_steps == 500


def test_online_dt_starts_from_its_checkpoint_and_seeds_its_replay(tmp_path, cartpole_data):
    from transformer_rl.datasets.checks import verify
    from transformer_rl.train import checkpoint

    assert cli("train", "--algo", "dt", "--data", cartpole_data, "--out", tmp_path / "dt",
               "--updates", "100").exit_code == 0
    r = cli("run", "--algo", "dt", "--init", tmp_path / "dt", "--seed-data", cartpole_data, "--seed-percent", "20",
            "--root", tmp_path, "--name", "o", "--iterations", "2", "--steps-per-iteration", "1000",
            "--updates", "50", "--eval-episodes", "4", "--stop-at", "1e9")
    assert r.exit_code == 0, r.output
    run = tmp_path / "o"
    assert verify(run / "data").ok
    data = load(run / "data")
    # iteration 1 was played by the offline DT, sampling (logp recorded), not uniformly at random
    assert np.isfinite(data.logp).all() and not np.allclose(data.logp, np.log(0.5))
    ckpt = checkpoint.load(run / "checkpoints" / "iter-002")
    assert ckpt.algo == "dt" and ckpt.learner_state["updates"] == 100 + 2 * 50
    # the replay held the seed data's best episodes: the best return seen is at least theirs
    assert ckpt.learner_state["best_return"] >= load(cartpole_data).episode_returns().max()
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [row["iteration"] for row in rows] == [1, 2]


def test_episodes_and_join_keep_whole_episodes(cartpole_data):
    from transformer_rl.datasets.reader import join

    d = load(cartpole_data)
    a, b = d.episodes(np.array([0, 2])), d.episodes(np.array([5]))
    both = join([a, b])
    assert both.num_episodes == 3 and len(both) == sum(np.diff(d.episode_rows)[[0, 2, 5]])
    np.testing.assert_array_equal(both.episode_returns(), d.episode_returns()[[0, 2, 5]])
    np.testing.assert_array_equal(both.final_obs, d.final_obs[[0, 2, 5]])
    np.testing.assert_array_equal(both.obs[both.episode_rows[2]:], d.obs[d.episode_rows[5]:d.episode_rows[6]])
