import json

import numpy as np

from conftest import cli
from transformer_rl.collect.trace import Trace, rollout_transitions
from transformer_rl.config import RunConfig
from transformer_rl.datasets import load, read_manifest
from transformer_rl.datasets.checks import verify
from transformer_rl.pipeline import run
from transformer_rl.train import checkpoint
from transformer_rl.train.ppo import PPOConfig, gae


def test_gae_by_hand():
    # episode A: 2 rows, terminated; episode B: 2 rows, truncated (bootstraps from V(final))
    reward = np.array([1.0, 1.0, 1.0, 2.0], np.float32)
    value = np.array([0.5, 0.4, 1.0, 2.0], np.float32)
    next_value = np.array([0.4, 9.0, 2.0, 3.0], np.float32)  # 9.0 must be ignored (terminal)
    terminated = np.array([False, True, False, False])
    g, lam = 0.9, 0.5
    adv = gae(reward, value, next_value, terminated, np.array([0, 2, 4]), g, lam)
    d1 = 1.0 - 0.4  # terminal: no bootstrap
    d0 = 1.0 + g * 0.4 - 0.5
    d3 = 2.0 + g * 3.0 - 2.0  # truncated: bootstrap from the final observation's value
    d2 = 1.0 + g * 2.0 - 1.0
    assert np.allclose(adv, [d0 + g * lam * d1, d1, d2 + g * lam * d3, d3], atol=1e-6)


def test_ppo_run_records_behaviour_logp_and_trains(tmp_path):
    cfg = RunConfig(algo="ppo", name="p", root=tmp_path, iterations=4, steps_per_iteration=512,
                    num_envs=4, eval_every=2, eval_episodes=5, learner=PPOConfig(epochs=2))
    report = run(cfg, log=lambda *_: None)
    assert report["iterations"] == 4
    data = load(tmp_path / "p" / "data")
    # episodes carry on across iterations: the dataset holds whole episodes of one pool, the
    # later ones sampled from the model (logp and value recorded), the first uniform (value NaN)
    assert set(data.env_index.tolist()) <= {0, 1, 2, 3}
    sampled = np.isfinite(data.value)
    assert sampled.sum() > 500 and (data.logp[sampled] < 0).all()
    assert np.allclose(data.logp[~sampled], np.log(0.5))
    assert verify(tmp_path / "p" / "data").ok
    rows = [json.loads(x) for x in (tmp_path / "p" / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [1, 2, 3, 4]
    assert all(np.isfinite(r["losses/approx_kl"]) for r in rows)
    assert [r["iteration"] for r in rows if "eval/mean_return" in r] == [2, 4]

    # `trl train --algo ppo` continues the run's checkpoint on the run's dataset
    r = cli("train", "--algo", "ppo", "--data", tmp_path / "p" / "data", "--init",
            tmp_path / "p" / "checkpoints" / "iter-004", "--out", tmp_path / "more", "--epochs", "1")
    assert r.exit_code == 0, r.output
    back = checkpoint.load(tmp_path / "more")
    assert back.algo == "ppo" and back.meta["counters"]["updates"] > 0


def test_train_ppo_needs_recorded_logp(tmp_path, cartpole_data):
    r = cli("train", "--algo", "ppo", "--data", cartpole_data, "--out", tmp_path / "ck")
    assert r.exit_code == 2 and "logp" in r.output and not (tmp_path / "ck").exists()


def test_rollout_fragments_by_hand():
    # env 0: an episode ends (terminated) at entry 2; entry 3 is the autoreset (elapsed 0).
    # env 1: one episode running through the whole rollout. Entry 0 was acted on in the previous
    # rollout (prefix 1); entry 5 is not acted on yet.
    elapsed = np.array([[4, 7], [5, 8], [6, 9], [0, 10], [1, 11], [2, 12]], np.int32)
    terminated = np.zeros((6, 2), bool)
    terminated[2, 0] = True
    obs = np.arange(12, dtype=np.float32).reshape(6, 2, 1)  # obs[t, env] = 2 t + env
    trace = Trace(obs=obs, reward=np.ones((6, 2), np.float32), terminated=terminated,
                  truncated=np.zeros((6, 2), bool), elapsed=elapsed,
                  action=np.ones((6, 2), np.int32), logp=np.full((6, 2), -0.5, np.float32), prefix=1,
                  lives=np.array([[3, 5], [3, 5], [3, 5], [5, 4], [5, 4], [5, 4]]))  # env 1 loses one
    data = rollout_transitions(trace)
    learn, life_lost = data.learn, data.life_lost
    # env 0: fragment rows from entries 0, 1 (ends terminated, final obs = entry 2), then rows
    # from entries 3, 4 (cut by the rollout: final obs = entry 5); env 1: rows from entries 0..4
    assert data.episode_rows.tolist() == [0, 2, 4, 9]
    assert data.obs[:, 0].tolist() == [0, 2, 6, 8, 1, 3, 5, 7, 9]
    assert data.final_obs[:, 0].tolist() == [4, 10, 11]
    assert data.terminated.tolist() == [False, True, False, False, False, False, False, False, False]
    assert data.truncated[[3, 8]].all() and data.truncated.sum() == 2  # rollout ends bootstrap
    assert data.step.tolist() == [4, 5, 0, 1, 7, 8, 9, 10, 11]
    assert learn.tolist() == [False, True, True, True, False, True, True, True, True]
    # env 1's transition from entry 2 to 3 lost a life; env 0's new game (3 -> 5 lives) did not
    assert np.flatnonzero(life_lost).tolist() == [6]


def test_gae_stops_at_a_terminal_row_inside_an_episode():
    # episodic life: a lost life inside one episode ends the return there (no bootstrap, no carry)
    reward = np.array([1.0, 0.0, 2.0], np.float32)
    value = np.array([0.5, 0.7, 1.0], np.float32)
    next_value = np.array([0.7, 1.0, 4.0], np.float32)
    terminal = np.array([False, True, False])
    g, lam = 0.9, 0.5
    adv = gae(reward, value, next_value, terminal, np.array([0, 3]), g, lam)
    d2 = 2.0 + g * 4.0 - 1.0
    d1 = 0.0 - 0.7
    d0 = 1.0 + g * 0.7 - 0.5
    assert np.allclose(adv, [d0 + g * lam * d1, d1, d2], atol=1e-6)


def test_presets_fill_only_what_the_command_line_left_open():
    atari = RunConfig.create("Breakout-ram", "ppo")
    assert (atari.num_envs, atari.eval_mode, atari.learner.lr) == (32, "sample", 1e-3)
    assert atari.learner.reward_clip and atari.learner.episodic_life and atari.model.ram_norm == "data"
    given = RunConfig.create("Breakout-ram", "ppo", num_envs=8, lr=3e-4, reward_clip=False)
    assert (given.num_envs, given.learner.lr, given.learner.reward_clip) == (8, 3e-4, False)
    classic = RunConfig.create("CartPole-v1", "ppo", seed=3)
    assert (classic.num_envs, classic.learner.lr, classic.learner.reward_clip, classic.seed) == (8, 2.5e-4, False, 3)
    assert (classic.iterations, classic.steps_per_iteration, classic.eval_every) == (146, 1024, 5)
    dqn = RunConfig.create("CartPole-v1", "dqn", eps_decay_steps=1000)
    assert (dqn.iterations, dqn.learner.eps_decay_steps, dqn.learner.lr) == (20, 1000, 5e-4)


def _metrics(run_dir):
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.endswith("_s")} for r in rows]  # times vary


def test_overlap_plays_one_iteration_behind_and_is_deterministic(tmp_path):
    """With --overlap the envs play iteration k+1 while the learner updates on k, with the
    weights from before that update: DQN's segments name them. Two runs agree to the bit."""
    settings = dict(iterations=3, steps_per_iteration=400, num_envs=4, updates=100, eval_episodes=4,
                    root=tmp_path, overlap=True, stop_at=1e9)
    for name in ("a", "b"):
        run(RunConfig.create("CartPole-v1", "dqn", name=name, **settings), log=lambda *_: None)
    assert _metrics(tmp_path / "a") == _metrics(tmp_path / "b")
    segments = read_manifest(tmp_path / "a" / "data")["segments"]
    assert [s["producer"].get("iteration") for s in segments] == [None, 0, 1]  # random, then one behind
    assert verify(tmp_path / "a" / "data").ok

    # PPO: the rollouts after the first are sampled from a snapshot one update behind; the
    # ratio corrects for it, so the surrogate is still clipped around the behaviour policy
    settings.update(algo="ppo", steps_per_iteration=256, eval_every=3)
    del settings["updates"]
    for name in ("p", "q"):
        run(RunConfig.create("CartPole-v1", name=name, epochs=2, **settings), log=lambda *_: None)
    ppo = _metrics(tmp_path / "p")
    assert ppo == _metrics(tmp_path / "q")
    assert [r["iteration"] for r in ppo] == [1, 2, 3] and all(np.isfinite(r["losses/approx_kl"]) for r in ppo)
    assert verify(tmp_path / "p" / "data").ok


def test_a_resumed_overlapping_run_plays_the_snapshot_not_the_live_model(tmp_path, monkeypatch):
    """A resumed --overlap run's stream starts from the snapshot: were it the learner itself, the
    envs would act with weights the learner thread is changing while they play."""
    from transformer_rl.collect.experience import RolloutExperience
    from transformer_rl.train.learner import Snapshot

    settings = dict(steps_per_iteration=256, num_envs=4, eval_every=2, eval_episodes=4, epochs=1, root=tmp_path,
                    name="r", overlap=True, stop_at=1e9)
    run(RunConfig.create("CartPole-v1", "ppo", iterations=2, **settings), log=lambda *_: None)
    actors, play = [], RolloutExperience.play

    def watched(self, it, learner, env_steps, weights):
        actors.append(learner)
        return play(self, it, learner, env_steps, weights)

    monkeypatch.setattr(RolloutExperience, "play", watched)
    run(RunConfig.create("CartPole-v1", "ppo", iterations=4, **settings), log=lambda *_: None)
    assert len(actors) == 2 and all(isinstance(a, Snapshot) for a in actors), actors
    assert [r["iteration"] for r in _metrics(tmp_path / "r")] == [1, 2, 3, 4]
