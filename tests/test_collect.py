"""Collection: every row a real transition, whole episodes, targets, resume, foreign readers."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from conftest import (
    BREAKOUT_STEPS,
    CARTPOLE_STEPS,
    cli,
    output_lines,
    random_collect,
    replay_stream,
)
from transformer_rl import envs
from transformer_rl.datasets import load, read_manifest
from transformer_rl.datasets.checks import validate, verify


def assert_real_transitions(d, max_steps: int) -> None:
    """Structure every dataset must have, checked from the arrays (independent of validate)."""
    n, rows = len(d), d.episode_rows
    lengths = np.diff(rows)
    assert n > 0 and rows[0] == 0 and rows[-1] == n and (lengths > 0).all()
    assert (lengths <= max_steps).all()
    # episode ids 0..E-1, each one contiguous run, in order
    np.testing.assert_array_equal(d.episode_id, np.repeat(np.arange(len(lengths)), lengths))
    # step column is 0..len-1 within each episode: no autoreset row sneaks in
    np.testing.assert_array_equal(d.step, np.arange(n) - np.repeat(rows[:-1], lengths))
    # exactly one end flag per episode, on its last row, never both
    assert not (d.terminated & d.truncated).any()
    np.testing.assert_array_equal(np.flatnonzero(d.terminated | d.truncated), rows[1:] - 1)
    # env_index constant within an episode, within the manifest's streams
    np.testing.assert_array_equal(d.env_index, np.repeat(d.env_index[rows[:-1]], lengths))
    streams = sum(s["num_envs"] for s in d.manifest["segments"])
    assert d.env_index.min() >= 0 and d.env_index.max() < streams
    # a truncated episode ran to the time limit; a terminated one may not exceed it
    assert (lengths[d.truncated[rows[1:] - 1]] == max_steps).all()
    assert np.isnan(d.logp).all() and np.isnan(d.value).all()  # the random policy records none


def assert_cartpole_physics(d) -> None:
    rows = d.episode_rows
    assert (d.reward == 1.0).all()  # autoreset steps pay 0: none recorded
    assert (np.abs(d.obs[rows[:-1]]) <= 0.05).all()  # every episode starts at a reset state
    x, theta = d.final_obs[:, 0], d.final_obs[:, 2]
    fell = (np.abs(x) > 2.4) | (np.abs(theta) > 12 * 2 * np.pi / 360)
    np.testing.assert_array_equal(fell, d.terminated[rows[1:] - 1])  # terminal obs is final_obs
    # no row's observation is already past the failure threshold
    assert (np.abs(d.obs[:, 0]) <= 2.4).all() and (np.abs(d.obs[:, 2]) <= 0.2095).all()


def test_sync_cartpole_rows_are_real_transitions(cartpole_data):
    d = load(cartpole_data)
    m = read_manifest(cartpole_data)
    assert len(d) >= CARTPOLE_STEPS and len(m["shards"]) >= 2
    assert [(s["num_envs"], s["batch_size"]) for s in m["segments"]] == [(8, 8)]
    assert sorted(set(d.env_index.tolist())) == list(range(8))
    assert_real_transitions(d, 500)
    assert_cartpole_physics(d)
    # shards: whole episodes, ids continuing from shard to shard
    first = 0
    for s in m["shards"]:
        t = pq.read_table(cartpole_data / s["file"], columns=["episode_id", "terminated",
                                                               "truncated"])
        assert s["first_episode_id"] == first and t.num_rows == s["rows"]
        ids = t["episode_id"].to_numpy()
        assert ids[0] == first and ids[-1] == first + s["episodes"] - 1
        assert t["terminated"][-1].as_py() or t["truncated"][-1].as_py()  # ends on an episode end
        first += s["episodes"]
    # a shard closes once it holds --shard-rows rows (whole episodes: a little more)
    assert all(1500 <= s["rows"] < 2250 for s in m["shards"][:-1]), m["shards"]


def test_async_breakout_rows_are_real_transitions(breakout_data):
    d = load(breakout_data)
    m = read_manifest(breakout_data)
    assert [(s["num_envs"], s["batch_size"]) for s in m["segments"]] == [(4, 2)]
    assert len(d) >= BREAKOUT_STEPS and d.obs.dtype == np.uint8 and d.obs.shape[1] == 128
    assert d.final_obs.dtype == np.uint8
    assert_real_transitions(d, 27_000)
    assert set(np.unique(d.action)) <= {0, 1, 2, 3}
    assert m["env"]["config"]["repeat_action_probability"] == 0.25


@pytest.mark.parametrize("batch_size", [None, 3])
def test_final_obs_of_truncated_episodes_is_what_the_env_returned(tmp_path, batch_size):
    spec = envs.resolve("CartPole-v1", max_episode_steps=15)
    out = tmp_path / "t"
    random_collect(spec, out, seed=5, episodes=40, num_envs=4, batch_size=batch_size)
    d = load(out)
    assert d.truncated.sum() >= 5 and d.terminated.sum() >= 5  # both kinds of ending
    assert_real_transitions(d, 15)
    for i in range(4):  # each stream re-played step by step with a fresh single env
        replay_stream(spec, d, i)


def test_async_breakout_streams_replay(breakout_data):
    d = load(breakout_data)
    spec = envs.EnvSpec.from_json(d.manifest["env"])
    for i in sorted(set(d.env_index.tolist()))[:2]:
        replay_stream(spec, d, i)


@pytest.mark.parametrize("fixture", ["cartpole_data", "breakout_data"])
def test_cli_validate_and_verify_pass(fixture, request):
    root = request.getfixturevalue(fixture)
    r = cli("datasets", "validate", root)
    assert r.exit_code == 0 and "OK" in r.output and "structure valid" in r.output, r.output
    r = cli("datasets", "verify", root)
    assert r.exit_code == 0 and "bit for bit" in r.output, r.output
    rows = len(load(root))
    assert f"{rows:,} rows" in r.output
    r = cli("datasets", "info", root, "--json")
    assert r.exit_code == 0, r.output
    assert f'"rows": {rows}' in r.output


@pytest.mark.parametrize("extra", [[], ["--batch-size", "3"]])
def test_cli_episodes_records_exactly_n(tmp_path, extra):
    out = tmp_path / "e"
    r = cli("collect", "--env", "CartPole-v1", "--episodes", 37, "--num-envs", 8, "--out", out,
            *extra)
    assert r.exit_code == 0, r.output
    d = load(out)
    assert d.num_episodes == 37 and len(d) == d.episode_rows[-1]
    assert_real_transitions(d, 500)
    assert validate(out).ok and verify(out).ok


@pytest.mark.parametrize("extra", [[], ["--batch-size", "2"]])
def test_cli_steps_records_at_least_n_rows(tmp_path, extra):
    out = tmp_path / "s"
    r = cli("collect", "--env", "CartPole-v1", "--steps", 1000, "--num-envs", 4, "--seed", 7,
            "--out", out, *extra)
    assert r.exit_code == 0, r.output
    d = load(out)
    assert 1000 <= len(d) < 1000 + 4 * 500  # whole episodes only: at most one batch over
    assert "transitions" in output_lines(r)[-1]
    assert read_manifest(out)["seed"] == 7 and read_manifest(out)["segments"][0]["seed"] == 7
    assert verify(out).ok


def test_resume_appends_a_segment_and_verifies(tmp_path):
    out = tmp_path / "r"
    r = cli("collect", "--env", "CartPole-v1", "--steps", 1500, "--num-envs", 4, "--out", out,
            "--shard-rows", 500)
    assert r.exit_code == 0, r.output
    before = load(out)
    shards_before = read_manifest(out)["shards"]
    files_before = {s["file"]: (out / s["file"]).read_bytes() for s in shards_before}
    r = cli("collect", "--env", "CartPole-v1", "--steps", 3000, "--num-envs", 3, "--batch-size", 2,
            "--out", out, "--resume", "--shard-rows", 500)
    assert r.exit_code == 0, r.output
    m = read_manifest(out)
    assert [(s["env_index_offset"], s["seed"], s["num_envs"], s["batch_size"])
            for s in m["segments"]] == [(0, 0, 4, 4), (4, 4, 3, 2)]
    assert m["shards"][: len(shards_before)] == shards_before  # old shards untouched
    assert {f: (out / f).read_bytes() for f in files_before} == files_before
    d = load(out)
    assert len(d) >= 3000
    n = len(before)
    np.testing.assert_array_equal(d.obs[:n], before.obs)
    np.testing.assert_array_equal(d.action[:n], before.action)
    assert set(d.env_index[n:].tolist()) == {4, 5, 6}  # the new segment's new streams
    assert_real_transitions(d, 500)
    assert verify(out).ok
    r = cli("datasets", "verify", out)
    assert r.exit_code == 0, r.output
    # resuming a dataset that already reached its target records nothing
    r = cli("collect", "--env", "CartPole-v1", "--steps", 3000, "--out", out, "--resume")
    assert r.exit_code == 0, r.output
    assert len(load(out)) == len(d) and verify(out).ok


def test_episodes_resume_counts_what_is_there(tmp_path):
    spec = envs.resolve("CartPole-v1")
    out = tmp_path / "c"
    random_collect(spec, out, episodes=30, num_envs=4)
    stats = random_collect(spec, out, seed=0, append=True, episodes=50, num_envs=3)
    assert stats.episodes == 20 and stats.dataset_episodes == 50
    assert load(out).num_episodes == 50 and verify(out).ok


def test_reads_unchanged_with_pyarrow_dataset_and_pandas(cartpole_data):
    d = load(cartpole_data)
    names = ["episode_id", "env_index", "step", "obs", "action", "reward", "terminated",
             "truncated", "logp", "value", "final_obs"]
    # as the README documents: skip the manifest when reading the directory
    table = pads.dataset(str(cartpole_data), format="parquet",
                         exclude_invalid_files=True).to_table()
    assert table.num_rows == len(d) and table.column_names == names
    table = table.sort_by([("episode_id", "ascending"), ("step", "ascending")])
    np.testing.assert_array_equal(np.stack(table["obs"].to_pylist()).astype(np.float32), d.obs)
    np.testing.assert_array_equal(table["action"].to_numpy(), d.action)
    # the listed shard files as a dataset, in manifest order: rows in dataset order
    files = [str(cartpole_data / s["file"]) for s in read_manifest(cartpole_data)["shards"]]
    ordered = pads.dataset(files, format="parquet").to_table()
    np.testing.assert_array_equal(ordered["episode_id"].to_numpy(), d.episode_id)

    df = pd.read_parquet(cartpole_data, ignore_prefixes=["manifest"])
    assert len(df) == len(d) and list(df.columns) == names
    df = df.sort_values(["episode_id", "step"], kind="stable").reset_index(drop=True)
    np.testing.assert_array_equal(np.stack(df["obs"].to_numpy()).astype(np.float32), d.obs)
    np.testing.assert_array_equal(df["reward"].to_numpy(), d.reward)
    np.testing.assert_array_equal(df["terminated"].to_numpy(), d.terminated)
    np.testing.assert_array_equal(df["truncated"].to_numpy(), d.truncated)
    assert df["logp"].isna().all() and df["value"].isna().all()
    last = df.groupby("episode_id").tail(1)
    assert df["final_obs"].notna().sum() == len(last) == d.num_episodes
    np.testing.assert_array_equal(np.stack(last["final_obs"].to_numpy()).astype(np.float32),
                                  d.final_obs)


def test_schema_metadata_and_types(breakout_data):
    m = read_manifest(breakout_data)
    schema = pq.read_schema(breakout_data / m["shards"][0]["file"])
    assert schema.metadata[b"format"] == b"trl-dataset"
    assert schema.metadata[b"env_id"] == b"Breakout-ram"
    obs = schema.field("obs").type
    assert pa.types.is_fixed_size_list(obs) and obs.list_size == 128
    assert obs.value_type == pa.uint8() and not schema.field("obs").nullable
    assert str(schema.field("episode_id").type) == "int64"
    assert str(schema.field("step").type) == "int32"
    assert str(schema.field("env_index").type) == "int32"
    assert schema.field("logp").nullable and schema.field("final_obs").nullable


def test_collect_runs_without_importing_torch(tmp_path):
    """`trl collect` (and envs, datasets) skip torch: a second of start-up for a short collection."""
    import subprocess
    import sys

    code = ("import sys; from transformer_rl.cli import main; sys.argv = ['trl', *sys.argv[1:]]\n"
            "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    out = tmp_path / "d"
    for args in (["collect", "--env", "CartPole-v1", "--steps", "500", "--out", str(out)],
                 ["datasets", "verify", str(out)], ["envs"]):
        r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    assert verify(out).ok
