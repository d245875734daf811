"""Other tools read trl's data: any Parquet reader opens a dataset folder with its plainest call
(pandas, pyarrow, polars, DuckDB), and Minari's format goes both ways (export, import)."""

from __future__ import annotations

import json
import re
import shutil
import sys
import warnings
from pathlib import Path

import duckdb
import gymnasium as gym
import minari
import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from minari.data_collector.episode_buffer import EpisodeBuffer

from conftest import cli, one_line_error, raw_manifest, snapshot
from transformer_rl.datasets import load, read_manifest
from transformer_rl.datasets.checks import validate, verify
from transformer_rl.datasets.format import MANIFEST, MANIFEST_V1
from transformer_rl.datasets.summary import summarize
from transformer_rl.errors import UsageError
from transformer_rl.files import LOCK

# -- any Parquet reader -----------------------------------------------------------------------


def plain_reads(d: Path) -> dict[str, tuple[int, float]]:
    """(rows, sum of rewards) as each reader sees the folder, with its plainest call."""
    pandas_df, polars_df = pd.read_parquet(d), pl.read_parquet(d)
    table = ds.dataset(d).to_table()
    rows, reward = duckdb.sql(f"SELECT count(*), sum(reward) FROM '{d}/*.parquet'").fetchall()[0]
    return {"pandas": (len(pandas_df), float(pandas_df["reward"].sum())),
            "pyarrow": (table.num_rows, float(pa.compute.sum(table["reward"]).as_py())),
            "polars": (polars_df.height, float(polars_df["reward"].sum())),
            "duckdb": (rows, float(reward))}


def test_any_parquet_reader_reads_the_folder(cartpole_data, breakout_data):
    for root in (cartpole_data, breakout_data):
        data = load(root)
        expected = (len(data), float(data.reward.sum()))
        assert plain_reads(root) == {reader: expected for reader in ("pandas", "pyarrow", "polars", "duckdb")}
        # every column, row for row, in dataset order
        np.testing.assert_array_equal(pd.read_parquet(root)["episode_id"], data.episode_id)
        np.testing.assert_array_equal(pl.read_parquet(root)["obs"].to_numpy(), data.obs)
        assert ds.dataset(root).to_table().equals(pa.concat_tables(pq.read_table(root / s["file"])
                                                                   for s in data.manifest["shards"]))
        assert sorted(p.name for p in root.iterdir() if not p.name.startswith("shard-")) == [MANIFEST]


def test_the_readmes_reading_block_runs(cartpole_data, tmp_path, monkeypatch):
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = re.search(r"\*\*Reading it elsewhere:\*\*.*?```python\n(.*?)```", text, re.S)[1]
    shutil.copytree(cartpole_data, tmp_path / "data" / "cartpole")
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(block, scope)
    data = load(cartpole_data)
    assert len(scope["df"]) == scope["table"].num_rows == scope["frame"].height == len(data)
    assert len(scope["returns"]) == data.num_episodes


def test_pandas_pyarrow_and_duckdb_read_beside_a_writer(cartpole_data, tmp_path):
    """What a writer leaves in the folder while it works (its lock, a shard and a manifest being
    written) starts with a dot: pandas, pyarrow and DuckDB's glob skip it (polars reads every
    file of a folder, so it reads a dataset no writer holds)."""
    root = shutil.copytree(cartpole_data, tmp_path / "d")
    expected = plain_reads(root)["pandas"]
    (root / LOCK).write_text("12345\n")
    (root / ".shard-000009.parquet.tmp").write_bytes(b"PAR1 half written")
    (root / f".{MANIFEST}.tmp").write_bytes(b"PAR1 half written")
    assert len(pd.read_parquet(root)) == ds.dataset(root).count_rows() == expected[0]
    assert duckdb.sql(f"SELECT count(*) FROM '{root}/*.parquet'").fetchall()[0][0] == expected[0]


def as_version_1(src: Path, dst: Path) -> Path:
    """A version-1 dataset: the same shards, the manifest as manifest.json (as trl 0.1 wrote it)."""
    root = shutil.copytree(src, dst)
    manifest = raw_manifest(root)
    manifest["format_version"] = 1
    (root / MANIFEST_V1).write_text(json.dumps(manifest, indent=1))
    (root / MANIFEST).unlink()
    return root


def test_version_1_datasets_still_read_validate_verify_and_append(cartpole_data, tmp_path):
    root = as_version_1(cartpole_data, tmp_path / "v1")
    assert read_manifest(root)["format_version"] == 1
    assert len(load(root)) == len(load(cartpole_data)) and validate(root).ok and verify(root).ok
    assert cli("datasets", "info", root).exit_code == 0
    r = cli("datasets", "list", tmp_path)
    assert r.exit_code == 0 and "v1" in r.output and "damaged" not in r.output, r.output
    r = cli("collect", "--env", "CartPole-v1", "--steps", len(load(root)) + 200, "--out", root, "--resume")
    assert r.exit_code == 0, r.output
    assert not (root / MANIFEST).exists() and read_manifest(root)["format_version"] == 1  # stays version 1
    assert len(read_manifest(root)["segments"]) == 2 and verify(root).ok


# -- Minari -------------------------------------------------------------------------------------


@pytest.fixture()
def minari_root(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "minari"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    return root


def shard_rows(root: Path) -> pa.Table:
    return pa.concat_tables(pq.read_table(root / s["file"]) for s in read_manifest(root)["shards"])


def test_trl_minari_trl_round_trip_is_row_for_row(cartpole_data, breakout_data, minari_root, tmp_path):
    for root, name in ((cartpole_data, "trl/cartpole-random-v0"), (breakout_data, "trl/breakout-ram-random-v0")):
        r = cli("datasets", "export", root, "--minari", name)
        assert r.exit_code == 0 and "minari.load_dataset" in r.output, r.output
        back = tmp_path / name.replace("/", "-")
        r = cli("datasets", "import", name, "--out", back)
        assert r.exit_code == 0 and "re-simulates" in r.output, r.output
        assert shard_rows(back).equals(shard_rows(root))  # every column of every row
        before, after = read_manifest(root), read_manifest(back)
        assert {k: after[k] for k in ("env", "seed", "segments")} == {k: before[k] for k in ("env", "seed", "segments")}
        assert after["source"]["dataset_id"] == name and after["source"]["resimulable"]
        assert validate(back).ok and verify(back).ok  # its seeds make it re-simulable
        assert cli("datasets", "verify", back).exit_code == 0


def test_minari_reads_the_export(cartpole_data, minari_root):
    assert cli("datasets", "export", cartpole_data, "--minari", "trl/cartpole-random-v0").exit_code == 0
    dataset = minari.load_dataset("trl/cartpole-random-v0")
    data = load(cartpole_data)
    assert (dataset.total_episodes, dataset.total_steps) == (data.num_episodes, len(data))
    assert dataset.observation_space.shape == (4,) and dataset.observation_space.dtype == np.float32
    assert dataset.action_space == gym.spaces.Discrete(2)
    returns = []
    for e, episode in enumerate(dataset.iterate_episodes()):
        a, b = data.episode_rows[e], data.episode_rows[e + 1]
        np.testing.assert_array_equal(episode.observations, np.concatenate([data.obs[a:b], data.final_obs[e:e + 1]]))
        np.testing.assert_array_equal(episode.actions, data.action[a:b])
        np.testing.assert_array_equal(episode.rewards, data.reward[a:b])
        np.testing.assert_array_equal(episode.terminations, data.terminated[a:b])
        np.testing.assert_array_equal(episode.truncations, data.truncated[a:b])
        returns.append(episode.rewards.sum())
    info = summarize(cartpole_data)["episode_return"]
    assert info == {"mean": round(float(np.mean(returns)), 3), "std": round(float(np.std(returns)), 3),
                    "min": float(np.min(returns)), "max": float(np.max(returns))}


def test_the_export_is_what_minaris_own_writer_writes(cartpole_data, minari_root):
    """The same episodes through minari.create_dataset_from_buffers: the same files, tables and
    metadata keys (trl adds its own under 'trl')."""
    data = load(cartpole_data).episodes(np.arange(5))
    ours = minari_root / "trl" / "ours-v0" / "data"
    assert cli("datasets", "export", cartpole_data, "--minari", "trl/ours-v0").exit_code == 0
    buffers = [EpisodeBuffer(observations=np.concatenate([data.obs[a:b], data.final_obs[e:e + 1]]),
                             actions=data.action[a:b], rewards=data.reward[a:b],
                             terminations=data.terminated[a:b], truncations=data.truncated[a:b])
               for e, (a, b) in enumerate(zip(data.episode_rows[:-1], data.episode_rows[1:], strict=True))]
    theirs_dataset = json.loads((ours / "metadata.json").read_text())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no author, permalink, ...
        minari.create_dataset_from_buffers(
            "trl/theirs-v0", buffers, data_format="parquet", jpeg_encoding=False,
            observation_space=minari.serialization.deserialize_space(theirs_dataset["observation_space"]),
            action_space=gym.spaces.Discrete(2))
    theirs = minari_root / "trl" / "theirs-v0" / "data"
    for e in range(5):
        assert sorted(p.name for p in (ours / str(e)).iterdir()) == sorted(p.name for p in (theirs / str(e)).iterdir())
        assert pq.read_table(ours / str(e) / "part-0.parquet").equals(pq.read_table(theirs / str(e) / "part-0.parquet"))
        assert json.loads((ours / str(e) / "metadata.json").read_text()) == \
            json.loads((theirs / str(e) / "metadata.json").read_text())
    assert set(json.loads((theirs / "metadata.json").read_text())) <= set(theirs_dataset)


def gymnasium_minari_dataset(name: str, episodes: int = 12, data_format: str = "arrow", seed: int = 0):
    """A Minari dataset of gymnasium's own CartPole-v1 (not EnvPool), by Minari's own writer."""
    env = gym.make("CartPole-v1")
    rng = np.random.default_rng(seed)
    buffers = []
    for e in range(episodes):
        obs, _ = env.reset(seed=seed + e)
        observations, actions, rewards, terms, truncs = [obs], [], [], [], []
        while True:
            action = int(rng.integers(2))
            obs, reward, term, trunc, _ = env.step(action)
            observations.append(obs)
            actions.append(action)
            rewards.append(reward)
            terms.append(term)
            truncs.append(trunc)
            if term or trunc:
                break
        buffers.append(EpisodeBuffer(seed=seed + e, observations=np.array(observations), actions=np.array(actions),
                                     rewards=np.array(rewards), terminations=np.array(terms),
                                     truncations=np.array(truncs)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return minari.create_dataset_from_buffers(name, buffers, env="CartPole-v1", data_format=data_format,
                                                  algorithm_name="random")


def test_a_foreign_minari_dataset_imports_and_trains_dt(minari_root, tmp_path):
    dataset = gymnasium_minari_dataset("gym/cartpole-random-v0")
    out = tmp_path / "imported"
    r = cli("datasets", "import", "gym/cartpole-random-v0", "--out", out)
    assert r.exit_code == 0 and "cannot re-simulate" in r.output, r.output
    data = load(out)
    assert (data.num_episodes, len(data)) == (dataset.total_episodes, dataset.total_steps)
    returns = [episode.rewards.sum() for episode in dataset.iterate_episodes()]
    np.testing.assert_allclose(data.episode_returns(), returns)
    manifest = read_manifest(out)
    assert manifest["env_id"] == "CartPole-v1" and manifest["source"]["env_from"] == "env_spec"
    assert not manifest["source"]["resimulable"] and manifest["segments"][0]["imported"]
    assert validate(out).ok and cli("datasets", "validate", out).exit_code == 0
    line = one_line_error(cli("datasets", "verify", out), code=1)  # said plainly, never a pass
    assert "cannot be re-simulated" in line and "gym/cartpole-random-v0" in line
    r = cli("train", "--algo", "dt", "--data", out, "--out", tmp_path / "dt", "--updates", "20")
    assert r.exit_code == 0, r.output
    # the same data from its path, in Minari's Parquet format too, and with the env given
    gymnasium_minari_dataset("gym/cartpole-parquet-v0", episodes=3, data_format="parquet")
    r = cli("datasets", "import", minari_root / "gym" / "cartpole-parquet-v0", "--env", "CartPole-v1",
            "--out", tmp_path / "from-path")
    assert r.exit_code == 0 and validate(tmp_path / "from-path").ok, r.output


def edit_metadata(change):
    def edit(data: Path) -> None:
        meta = json.loads((data / "metadata.json").read_text())
        change(meta)
        (data / "metadata.json").write_text(json.dumps(meta))
    return edit


def drop_trl_and_env(meta: dict) -> None:
    meta.pop("trl")
    meta.pop("env_spec", None)


def cut_episode(data: Path) -> None:
    path = data / "3" / "part-0.parquet"
    path.write_bytes(path.read_bytes()[:-50])


def flag_mid_episode(data: Path) -> None:
    path = data / "2" / "part-0.parquet"
    table = pq.read_table(path)
    flags = np.zeros(table.num_rows, bool)
    flags[0] = True
    pq.write_table(table.set_column(3, "terminations", pa.array(flags)), path)


IMPORT = ("datasets", "import", "src/m-v0", "--out", "new")
BAD_MINARI = [
    ("export-no-minari", ("datasets", "export", "data"), None, ["--minari NAME"]),
    ("export-bad-id", ("datasets", "export", "data", "--minari", "no version"), None, ["dataset id"]),
    ("export-exists", ("datasets", "export", "data", "--minari", "src/m-v0"), None, ["already exists", "src/m-v0"]),
    ("export-not-dataset", ("datasets", "export", "mroot", "--minari", "trl/y-v0"), None, ["not a trl dataset"]),
    ("import-missing", ("datasets", "import", "src/nope-v0", "--out", "new"), None, ["no local Minari dataset"]),
    ("import-out-exists", ("datasets", "import", "src/m-v0", "--out", "data"), None, ["already exists"]),
    ("import-not-minari", ("datasets", "import", "data", "--out", "new"), None, ["not a Minari dataset"]),
    ("import-other-env", (*IMPORT, "--env", "Acrobot-v1"), None, ["float32 (4,)", "Acrobot-v1"]),
    ("import-hdf5", IMPORT, edit_metadata(lambda m: m.update(data_format="hdf5")), ["HDF5"]),
    ("import-metadata-json", IMPORT, lambda d: (d / "metadata.json").write_text("{"), ["not valid JSON"]),
    ("import-metadata-key", IMPORT, edit_metadata(lambda m: m.pop("total_steps")), ["total_steps"]),
    ("import-dict-space", IMPORT, edit_metadata(lambda m: m.update(observation_space='{"type": "Dict"}')),
     ["flat Box"]),
    ("import-float64", IMPORT, edit_metadata(lambda m: m.update(
        observation_space=m["observation_space"].replace("float32", "float64"))), ["float64"]),
    ("import-no-env", IMPORT, edit_metadata(drop_trl_and_env), ["--env"]),
    ("import-unknown-env", IMPORT, edit_metadata(lambda m: (drop_trl_and_env(m), m.update(
        env_spec=json.dumps({"id": "MyGame-v3"})))), ["MyGame-v3", "--env"]),
    ("import-cut-episode", IMPORT, cut_episode, ["3", "unreadable"]),
    ("import-mid-flag", IMPORT, flag_mid_episode, ["episode 2 ends before its last step"]),
    ("import-missing-episode", IMPORT, lambda d: shutil.rmtree(d / "5"), ["5 is missing"]),
    ("import-steps", IMPORT, edit_metadata(lambda m: m.update(total_steps=m["total_steps"] + 1)), ["total_steps"]),
]


@pytest.fixture(scope="module")
def minari_world(tmp_path_factory, cartpole_data) -> Path:
    """data (a trl dataset) and mroot/src/m-v0 (its Minari export)."""
    world = tmp_path_factory.mktemp("minari-world")
    shutil.copytree(cartpole_data, world / "data")
    r = cli("datasets", "export", world / "data", "--minari", "src/m-v0", "--minari-root", world / "mroot")
    assert r.exit_code == 0, r.output
    return world


@pytest.mark.parametrize("case, args, edit, words", BAD_MINARI, ids=[c[0] for c in BAD_MINARI])
def test_bad_minari_input_is_one_line_and_touches_nothing(minari_world, tmp_path, monkeypatch, case, args, edit,
                                                          words):
    world = shutil.copytree(minari_world, tmp_path / "w")
    monkeypatch.chdir(world)
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(world / "mroot"))
    if edit is not None:
        edit(world / "mroot" / "src" / "m-v0" / "data")
    before = snapshot(world)
    line = one_line_error(cli(*args))
    assert all(w in line for w in words), line
    assert snapshot(world) == before and not (world / "new").exists()  # nothing written, nothing half-written


def test_export_without_minari_names_the_extra(cartpole_data, minari_root, monkeypatch):
    monkeypatch.setitem(sys.modules, "minari", None)  # as if it were not installed
    line = one_line_error(cli("datasets", "export", cartpole_data, "--minari", "trl/x-v0"))
    assert "transformer-rl[minari]" in line and not minari_root.exists()


def test_a_failed_export_or_import_leaves_nothing(cartpole_data, minari_root, tmp_path, monkeypatch):
    from transformer_rl.datasets import minari as trl_minari
    from transformer_rl.datasets.minari_import import import_minari

    assert cli("datasets", "export", cartpole_data, "--minari", "src/m-v0").exit_code == 0
    before = snapshot(minari_root)

    def interrupted(spec):  # Ctrl-C after every episode is written, before the metadata
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(trl_minari, "_spaces", interrupted)
        with pytest.raises(KeyboardInterrupt):
            trl_minari.export_minari(cartpole_data, "new/space/x-v0")
    assert snapshot(minari_root) == before and not (minari_root / "new").exists()  # its namespaces too
    # an import that fails after writing shards (the step count disagrees at the end)
    meta = minari_root / "src" / "m-v0" / "data" / "metadata.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "total_steps": 1}))
    with pytest.raises(UsageError, match="total_steps"):
        import_minari("src/m-v0", tmp_path / "out", shard_rows=500)
    assert not (tmp_path / "out").exists()
