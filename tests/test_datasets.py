"""The reader: contiguous arrays, next observations, returns, and K-step windows."""

import numpy as np
import pandas as pd
import pytest

from transformer_rl import envs
from transformer_rl.datasets import build_sequences, load, read_manifest
from transformer_rl.datasets.writer import open_for_append


def check_windows(seq, index, mask, ends: np.ndarray, k: int) -> None:
    assert index.shape == mask.shape == (len(ends), k)
    np.testing.assert_array_equal(index[:, -1], ends)  # each window ends at its step
    assert mask[:, -1].all()
    start = seq.start[ends]
    # never crosses an episode boundary: every index is a step of the end step's episode
    assert (seq.start[index] == start[:, None]).all()
    # mask False exactly on the left padding: valid length = steps available in the episode
    valid = np.minimum(k, ends - start + 1)
    np.testing.assert_array_equal(mask.sum(1), valid)
    np.testing.assert_array_equal(mask, np.arange(k)[None, :] >= (k - valid)[:, None])
    # real positions are consecutive steps; padding points at the episode's first step
    want = np.where(mask, ends[:, None] + np.arange(-k + 1, 1)[None, :], start[:, None])
    np.testing.assert_array_equal(index, want)


def test_sequences_lay_out_each_episode_and_its_final_observation(cartpole_data):
    d = load(cartpole_data)
    seq = build_sequences(d, num_actions=2)
    assert len(seq) == len(d) + d.num_episodes
    np.testing.assert_array_equal(seq.obs[seq.step_of_row], d.obs)
    final_steps = np.flatnonzero(seq.row < 0)
    np.testing.assert_array_equal(seq.obs[final_steps], d.final_obs)
    np.testing.assert_array_equal(final_steps, seq.stop[final_steps])
    # the previous action: 2 ("none") at each episode's first step, else the action before
    first = seq.step_of_row[d.episode_rows[:-1]]
    assert (seq.prev_action[first] == 2).all()
    inner = np.setdiff1d(np.arange(1, len(d)), d.episode_rows[:-1])
    np.testing.assert_array_equal(seq.prev_action[seq.step_of_row[inner]], d.action[inner - 1])
    np.testing.assert_array_equal(seq.prev_action[final_steps], d.action[d.episode_rows[1:] - 1])


@pytest.mark.parametrize("k", [1, 8, 64, 600])
def test_windows_at_every_step(cartpole_data, breakout_data, k):
    for root, n_actions in ((cartpole_data, 2), (breakout_data, 4)):
        seq = build_sequences(load(root), n_actions)
        ends = np.arange(len(seq))
        index, mask = seq.windows(ends, k)
        check_windows(seq, index, mask, ends, k)
        if k == 8:  # both padded and full windows occur
            assert (~mask).any() and mask[:, 0].any()
    # episode starts are padded all the way: one real step
    starts = np.unique(seq.start)
    index, mask = seq.windows(starts, 5)
    assert (mask.sum(1) == 1).all() and (index == starts[:, None]).all()


def test_arrays_are_consistent(cartpole_data):
    d = load(cartpole_data)
    m = read_manifest(cartpole_data)
    n = sum(s["rows"] for s in m["shards"])
    assert len(d) == n and d.num_episodes == sum(s["episodes"] for s in m["shards"])
    assert d.obs.shape == (n, 4) and d.obs.dtype == np.float32 and d.obs.flags.c_contiguous
    assert d.final_obs.shape == (d.num_episodes, 4)
    assert d.action.shape == d.reward.shape == d.terminated.shape == (n,)
    assert d.reward.dtype == np.float32 and d.terminated.dtype == bool
    np.testing.assert_array_equal(d.done, d.terminated | d.truncated)
    assert d.manifest == m


def test_next_obs(cartpole_data, breakout_data):
    for root in (cartpole_data, breakout_data):
        d = load(root)
        nxt = d.next_obs()
        assert nxt.shape == d.obs.shape and nxt.dtype == d.obs.dtype
        last = d.episode_rows[1:] - 1
        inner = np.setdiff1d(np.arange(len(d)), last)
        np.testing.assert_array_equal(nxt[inner], d.obs[inner + 1])  # shifted within episodes
        np.testing.assert_array_equal(nxt[last], d.final_obs)  # the env's last obs at ends
        # never the next episode's first observation (CartPole: reset obs are tiny)
        assert not np.array_equal(nxt[last[:-1]], d.obs[last[:-1] + 1])


def test_episode_returns_match_pandas(cartpole_data, breakout_data):
    for root in (cartpole_data, breakout_data):
        d = load(root)
        df = pd.read_parquet(root, columns=["episode_id", "reward"])
        sums = df.groupby("episode_id")["reward"].sum()
        np.testing.assert_array_equal(sums.index.to_numpy(), np.arange(d.num_episodes))
        np.testing.assert_allclose(d.episode_returns(), sums.to_numpy(), rtol=0, atol=1e-4)
    d = load(breakout_data)
    assert d.episode_returns().sum() == d.reward.sum()


def test_load_chosen_and_newest_shards(cartpole_data):
    full = load(cartpole_data)
    shards = read_manifest(cartpole_data)["shards"]
    assert len(shards) >= 3
    one = load(cartpole_data, shards=[1])
    s = shards[1]
    assert len(one) == s["rows"] and one.num_episodes == s["episodes"]
    a = full.episode_rows[s["first_episode_id"]]
    np.testing.assert_array_equal(one.obs, full.obs[a : a + s["rows"]])
    np.testing.assert_array_equal(one.final_obs, full.final_obs[s["first_episode_id"]:][
        : s["episodes"]])
    newest = load(cartpole_data, newest_rows=shards[-1]["rows"] + 1)  # needs the last two
    assert len(newest) == shards[-1]["rows"] + shards[-2]["rows"]
    np.testing.assert_array_equal(newest.obs, full.obs[len(full) - len(newest):])
    assert len(load(cartpole_data, newest_rows=10**9)) == len(full)


def test_empty_dataset_loads(tmp_path):
    spec = envs.resolve("CartPole-v1")
    writer = open_for_append(tmp_path / "e", spec, seed=0, num_envs=2, batch_size=2,
                             producer={"policy": "random"}, shard_rows=10, append=False)
    writer.close()
    d = load(tmp_path / "e")
    assert len(d) == 0 and d.num_episodes == 0 and d.obs.shape == (0, 4)
    assert d.episode_returns().shape == (0,)
