"""The Python API: the README's examples run as they stand, and a loaded policy plays in one's
own loop exactly as `trl eval` plays (the same actions, step for step, from the same seed)."""

from __future__ import annotations

import re
from pathlib import Path

import envpool
import numpy as np
import pytest

import transformer_rl as trl

ROOT = Path(__file__).resolve().parents[1]
DQN = ROOT / "docs/checkpoints/cartpole-dqn-gpt"


def readme_examples() -> list[str]:
    section = (ROOT / "README.md").read_text().split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_readme_examples_run(monkeypatch, capsys):
    blocks = readme_examples()
    assert len(blocks) == 2
    monkeypatch.chdir(ROOT)
    for block in blocks:
        exec(compile(block, "README.md (Python API)", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "500.0"  # the gymnasium loop: the committed checkpoint solves it
    assert "pass overwrite=True" in printed[-1] and "--" not in printed[-1]


def play_envpool(policy, seed: int, *, with_reward: bool) -> tuple[list[int], float]:
    """One episode in a single EnvPool env seeded ``seed`` (env 0 of `trl eval --seed seed`)."""
    env = envpool.make_gymnasium("CartPole-v1", num_envs=1, seed=seed)
    obs, _ = env.reset()
    policy.reset()
    actions, total, reward = [], 0.0, None
    while True:
        action = policy.act(obs[0], reward if with_reward else None)
        actions.append(action)
        obs, rewards, terminated, truncated, _ = env.step(np.array([action]))
        reward = float(rewards[0])
        total += reward
        if terminated[0] or truncated[0]:
            return actions, total


def recorded_actions(checkpoint: Path, seed: int, out: Path, **kwargs) -> tuple[list[int], float]:
    report = trl.evaluate_checkpoint(checkpoint, episodes=1, seed=seed, record=out, device="cpu", **kwargs)
    return trl.load_dataset(out).action.tolist(), report["mean_return"]


def test_policy_plays_as_trl_eval_does(tmp_path):
    policy = trl.load_policy(DQN, device="cpu")
    actions, total = play_envpool(policy, 11, with_reward=False)
    assert (actions, total) == recorded_actions(DQN, 11, tmp_path / "eval")
    again, _ = play_envpool(policy, 11, with_reward=False)  # reset() forgets the last episode
    assert again == actions


def test_decision_transformer_keeps_its_return_to_go(tmp_path):
    trl.collect_dataset("CartPole-v1", tmp_path / "data", steps=3000, num_envs=4, seed=3)
    trl.train_model(tmp_path / "data", tmp_path / "dt", algo="dt", n_embd=16, updates=150, seed=0)
    policy = trl.load_policy(tmp_path / "dt", device="cpu", target_return=60.0)
    actions, total = play_envpool(policy, 5, with_reward=True)
    assert (actions, total) == recorded_actions(tmp_path / "dt", 5, tmp_path / "eval", target_return=60.0)


def test_vector_policy_restarts_only_the_envs_it_is_told():
    vector = trl.load_policy(DQN, device="cpu", num_envs=2)
    single = trl.load_policy(DQN, device="cpu")
    env = envpool.make_gymnasium("CartPole-v1", num_envs=2, seed=20)
    obs, _ = env.reset()
    for step in range(30):  # env 1 "restarts" at step 10: from then on it acts as a fresh episode
        if step == 10:
            single.reset()
        starts = np.array([False, step == 10])
        both = vector.act(obs, starts=starts)
        if step >= 10:
            assert both[1] == single.act(obs[1])
        obs, *_ = env.step(both)


def test_errors_name_the_python_argument(tmp_path):
    with pytest.raises(trl.UsageError) as caught:
        trl.train_model(tmp_path / "none", tmp_path / "out", n_embd=-3)
    assert caught.value.parameter == "n_embd" and str(caught.value).startswith("n_embd -3 is out of range")
    with pytest.raises(trl.UsageError, match="use greedy") as caught:
        trl.load_policy(DQN, mode="sample")
    assert caught.value.parameter == "mode"
    with pytest.raises(trl.UsageError, match=r"give shape \(3, 4\)"):
        trl.load_policy(DQN, num_envs=3, device="cpu").act(np.zeros((2, 4)))
    with pytest.raises(trl.UsageError, match="does not apply"):
        trl.run_experiment("CartPole-v1", "ppo", root=tmp_path, epsilon_start=0.5)
    with pytest.raises(trl.DamagedData):
        (tmp_path / "ckpt").mkdir()
        (tmp_path / "ckpt/config.json").write_text("{}")
        (tmp_path / "ckpt/model.safetensors").write_bytes(b"")
        trl.load_policy(tmp_path / "ckpt")
    assert not (tmp_path / "out").exists()
