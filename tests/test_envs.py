"""Env ids -> EnvPool specs, refusals, and the EnvPool facts the collector relies on."""

import numpy as np
import pytest

from conftest import single_env
from transformer_rl import envs
from transformer_rl.errors import UsageError

BALANCE = np.array([0.1, 0.5, 10.0, 2.0])  # linear controller: keeps CartPole up for 500 steps


def test_cartpole_spec():
    s = envs.resolve("CartPole-v1")
    assert (s.env_id, s.task, s.obs_shape, s.obs_dtype) == ("CartPole-v1", "CartPole-v1", (4,),
                                                           "float32")
    assert (s.num_actions, s.max_episode_steps, s.config) == (2, 500, {})
    assert not s.is_ram and s.obs_dim == 4
    assert envs.EnvSpec.from_json(s.to_json()) == s
    pool = envs.make_pool(s, 3, 0)
    obs, info = pool.reset()
    got = envs.observe(s, obs, info)
    assert got.shape == (3, 4) and got.dtype == np.float32


def test_breakout_ram_spec_is_ale_v5():
    s = envs.resolve("Breakout-ram")
    assert (s.task, s.obs_shape, s.obs_dtype, s.num_actions) == ("Breakout-v5", (128,), "uint8", 4)
    assert s.is_ram and s.max_episode_steps == 27_000
    c = s.config
    assert c["repeat_action_probability"] == 0.25 and c["frame_skip"] == 4
    assert c["full_action_space"] is False and c["episodic_life"] is False
    assert c["reward_clip"] is False and c["use_fire_reset"] is False
    assert envs.EnvSpec.from_json(s.to_json()) == s
    s2 = envs.resolve("Breakout-ram", sticky=0.0, frame_skip=2)
    assert s2.config["repeat_action_probability"] == 0.0 and s2.config["frame_skip"] == 2
    assert s2.to_json() != s.to_json()


@pytest.mark.parametrize("typed, closest", [
    ("CartPol-v1", "CartPole-v1"),
    ("cartpole-v1", "CartPole-v1"),
    ("Breakot-ram", "Breakout-ram"),
    ("Acrobot-v0", "Acrobot-v1"),
])
def test_unknown_id_names_closest(typed, closest):
    with pytest.raises(UsageError) as e:
        envs.resolve(typed)
    msg = str(e.value)
    assert typed in msg and closest in msg and "\n" not in msg


def test_hopeless_id_points_to_the_list():
    with pytest.raises(UsageError, match="trl envs"):
        envs.resolve("zzzzzzzzzzzz")
    assert "CartPole-v1" in envs.known_ids() and "Breakout-ram" in envs.known_ids()
    assert "Breakout-v5" not in envs.known_ids()  # image Atari ids are offered as -ram only


@pytest.mark.parametrize("env_id, words", [
    ("Pendulum-v1", "continuous"),
    ("Breakout-v5", "Breakout-ram"),
])
def test_unsupported_ids_are_refused(env_id, words):
    with pytest.raises(UsageError, match=words):
        envs.resolve(env_id)


@pytest.mark.parametrize("env_id, kwargs", [
    ("CartPole-v1", {"sticky": 0.1}),
    ("CartPole-v1", {"frame_skip": 2}),
    ("Breakout-ram", {"sticky": 1.0}),
    ("Breakout-ram", {"sticky": -0.1}),
    ("Breakout-ram", {"frame_skip": 0}),
    ("CartPole-v1", {"max_episode_steps": 0}),
])
def test_bad_options_are_refused(env_id, kwargs):
    with pytest.raises(UsageError):
        envs.resolve(env_id, **kwargs)


def test_autoreset_step_is_not_a_transition():
    """After an episode ends, the next step ignores the action and returns the new episode's
    first observation with elapsed_step 0 and reward 0."""
    s = envs.resolve("CartPole-v1", max_episode_steps=5)
    a, b = envs.make_pool(s, 2, 11), envs.make_pool(s, 2, 11)
    a.reset(), b.reset()
    ones = np.ones(2, np.int32)
    for t in range(1, 6):
        oa, ra, ta, ua, ia = a.step(ones)
        ob, *_ = b.step(ones)
        assert (ia["elapsed_step"] == t).all() and (ra == 1).all()
    assert ua.all() and not ta.any()
    oa, ra, ta, ua, ia = a.step(np.zeros(2, np.int32))  # autoreset: different actions...
    ob, rb, tb, ub, ib = b.step(np.ones(2, np.int32))
    assert (ia["elapsed_step"] == 0).all() and (ra == 0).all() and not (ta | ua).any()
    np.testing.assert_array_equal(oa, ob)  # ...same result: the action was ignored
    assert (np.abs(oa) <= 0.05).all()  # a reset observation
    oa, ra, _, _, ia = a.step(ones)
    assert (ia["elapsed_step"] == 1).all() and (ra == 1).all()


def test_cartpole_time_limit_is_truncation_not_termination():
    s = envs.resolve("CartPole-v1")
    pool = envs.make_pool(s, 4, 5)
    obs, _ = pool.reset()
    for t in range(1, 501):
        obs, reward, term, trunc, info = pool.step((obs @ BALANCE > 0).astype(np.int32))
        assert (info["elapsed_step"] == t).all() and not term.any()
        assert trunc.all() == (t == 500) and trunc.any() == (t == 500)


def test_breakout_ram_truncation_and_autoreset():
    s = envs.resolve("Breakout-ram", max_episode_steps=20)
    pool = envs.make_pool(s, 2, 0)
    obs, info = pool.reset()
    first = envs.observe(s, obs, info).copy()
    assert first.shape == (2, 128) and first.dtype == np.uint8
    for _ in range(20):
        obs, reward, term, trunc, info = pool.step(np.ones(2, np.int32))
    assert trunc.all() and not term.any() and (info["elapsed_step"] == 20).all()
    obs, reward, term, trunc, info = pool.step(np.ones(2, np.int32))
    assert (info["elapsed_step"] == 0).all() and (reward == 0).all() and not (term | trunc).any()


def _stream(step, n: int, actions: np.ndarray, observe):
    """Run ``actions`` (T, n) through a sync pool; stack what each step returned."""
    out = []
    for a in actions:
        obs, reward, term, trunc, info = step(a)
        out.append((observe(obs, info).copy(), reward.copy(), term.copy(), trunc.copy(),
                    info["elapsed_step"].copy()))
    return [np.stack(x) for x in zip(*out, strict=True)]


@pytest.mark.parametrize("env_id, n, steps", [("CartPole-v1", 4, 300), ("Breakout-ram", 2, 150)])
def test_env_i_of_pool_seeded_s_is_single_env_seeded_s_plus_i(env_id, n, steps):
    s = envs.resolve(env_id)
    seed = 41
    rng = np.random.default_rng(0)
    actions = rng.integers(0, s.num_actions, (steps, n), dtype=np.int32)
    pool = envs.make_pool(s, n, seed)
    obs, info = pool.reset()
    pool0 = envs.observe(s, obs, info).copy()
    pooled = _stream(pool.step, n, actions, lambda o, i: envs.observe(s, o, i))
    assert (pooled[4] == 0).any(), "no autoreset inside the compared stream"
    for i in range(n):
        env = single_env(s, seed + i)
        obs, info = env.reset()
        np.testing.assert_array_equal(envs.observe(s, obs, info)[0], pool0[i])
        single = _stream(env.step, 1, actions[:, i : i + 1], lambda o, inf: envs.observe(s, o, inf))
        for got, want in zip(single, pooled, strict=True):
            np.testing.assert_array_equal(got[:, 0], want[:, i])


def test_async_pool_plays_the_same_streams():
    """Async (batch < num_envs): env i's stream is still that of one env seeded S + i."""
    s = envs.resolve("CartPole-v1")
    n, seed, steps = 4, 9, 120

    def policy(env_id: int, t: int) -> int:
        return (env_id * 7 + t * 3 + t // 5) % 2

    pool = envs.make_pool(s, n, seed, batch_size=2)
    pool.async_reset()
    seen = [[] for _ in range(n)]
    while min(len(x) for x in seen) < steps:
        obs, reward, term, trunc, info = pool.recv()
        ids = info["env_id"]
        for j, i in enumerate(ids):
            seen[i].append((obs[j].copy(), reward[j], term[j], trunc[j]))
        pool.send(np.array([policy(i, len(seen[i]) - 1) for i in ids], np.int32), ids)
    for i in range(n):
        env = single_env(s, seed + i)
        obs, _ = env.reset()
        np.testing.assert_array_equal(obs[0], seen[i][0][0])
        for t in range(1, steps):
            obs, reward, term, trunc, _ = env.step(np.array([policy(i, t - 1)], np.int32))
            want = seen[i][t]
            np.testing.assert_array_equal(obs[0], want[0])
            assert (reward[0], term[0], trunc[0]) == want[1:]
