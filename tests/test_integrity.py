"""Integrity below the surface, table-driven through the real CLI: output paths that alias
existing data, hostile files read below the top level, and tampering that only re-simulation or
the schema can catch.

Every usage case ends with exit code 2, exactly one line on stderr naming the problem, and the
world byte-identical (nothing created). Every tamper case rewrites a shard as valid Parquet and
fixes its size and checksum in the manifest, so that only `verify`'s re-simulation and the
schema checks can find it: `datasets verify` must fail (exit 1) and name the shard.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from conftest import edit_raw_manifest, snapshot, write_raw_manifest
from transformer_rl.cli.app import app
from transformer_rl.datasets.format import sha256_file
from transformer_rl.envs import resolve

CP = ("--env", "CartPole-v1")
STEPS = ("--steps", "50")
RUN = ("run", "--root", "runs", "--iterations", "1", "--steps-per-iteration", "200", "--updates", "5",
       "--eval-episodes", "2")
TRAIN = ("train", "--data", "data", "--out", "new-ckpt", "--updates", "5")


def invoke(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(app, [str(a) for a in args], env=env)


# -- hostile files: (name, what to copy, edit of the copy) --------------------------------------


def edit_json(file: str, change: Callable[[dict], None]) -> Callable[[Path], None]:
    def edit(root: Path) -> None:
        obj = json.loads((root / file).read_text())
        change(obj)
        (root / file).write_text(json.dumps(obj))
    return edit


def write_text(file: str, text: str) -> Callable[[Path], None]:
    return lambda root: (root / file).write_text(text)


def rewrite_shard(change: Callable[[pa.Table], pa.Table], shard: int = 1) -> Callable[[Path], None]:
    """Replace a shard by ``change(table)`` written as valid Parquet, its size and checksum fixed
    in the manifest: only the checks of the rows themselves can tell."""

    def edit(root: Path) -> None:
        path = root / f"shard-{shard:06d}.parquet"
        pq.write_table(change(pq.read_table(path)), path)
        edit_raw_manifest(root, lambda m: m["shards"][shard].update(bytes=path.stat().st_size,
                                                                    sha256=sha256_file(path)))
    return edit


def set_column(name: str, change: Callable[[np.ndarray], np.ndarray]) -> Callable[[pa.Table], pa.Table]:
    def apply(table: pa.Table) -> pa.Table:
        i = table.schema.get_field_index(name)
        values = change(table[name].to_numpy(zero_copy_only=False).copy())
        return table.set_column(i, table.schema.field(i), pa.array(values, table.schema.field(i).type))
    return apply


def mid_episode_rows(table: pa.Table, k: int = 3) -> np.ndarray:
    """``k`` rows that are neither the first nor the last of their episode."""
    ids = table["episode_id"].to_numpy()
    inner = np.flatnonzero((np.diff(ids, prepend=-1) == 0) & (np.diff(ids, append=-1) == 0))
    return inner[:k]


def rows(table: pa.Table, values: Callable[[np.ndarray, np.ndarray], None], name: str) -> pa.Table:
    picked = mid_episode_rows(table)

    def change(column: np.ndarray) -> np.ndarray:
        values(column, picked)
        return column
    return set_column(name, change)(table)


def obs_float64(table: pa.Table) -> pa.Table:
    i = table.schema.get_field_index("obs")
    return table.set_column(i, pa.field("obs", pa.list_(pa.float64(), 4), nullable=False),
                            table["obs"].cast(pa.list_(pa.float64(), 4)))


def swap_first_two_episodes(table: pa.Table) -> pa.Table:
    ids = table["episode_id"].to_numpy()
    first, second = ids[0], ids[0] + 1
    order = np.concatenate([np.flatnonzero(ids == second), np.flatnonzero(ids == first), np.flatnonzero(ids > second)])
    return table.take(pa.array(order))


def renumbered_swap(table: pa.Table) -> pa.Table:
    """Two episodes of one env swapped, ids and steps renumbered so that validate cannot tell."""
    ids, env = table["episode_id"].to_numpy(), table["env_index"].to_numpy()
    starts = np.flatnonzero(np.diff(ids, prepend=-1))
    envs = env[starts]
    e = next(i for i in range(len(starts)) if np.sum(envs[i + 1:] == envs[i]))
    f = e + 1 + int(np.flatnonzero(envs[e + 1:] == envs[e])[0])
    order = list(range(len(starts)))
    order[e], order[f] = order[f], order[e]
    bounds = np.append(starts, len(ids))
    picked = np.concatenate([np.arange(bounds[i], bounds[i + 1]) for i in order])
    out = table.take(pa.array(picked))
    lengths = np.diff(bounds)[order]
    renumbered = np.repeat(ids[0] + np.arange(len(order)), lengths)  # ids in order again
    return out.set_column(0, out.schema.field(0), pa.array(renumbered, pa.int64()))


def first_final_obs(table: pa.Table) -> pa.Table:
    ids = table["episode_id"].to_numpy()
    last = int(np.flatnonzero(np.diff(ids, append=-1))[0])
    final = table["final_obs"].to_pylist()
    final[last] = [v + 0.5 for v in final[last]]
    i = table.schema.get_field_index("final_obs")
    return table.set_column(i, table.schema.field(i), pa.array(final, table.schema.field(i).type))


def add_column(table: pa.Table) -> pa.Table:
    return table.append_column("extra", pa.array(np.zeros(table.num_rows, np.int32)))


TAMPER = [  # (id, edit, words the verify output must contain)
    ("reward-1e-6", rewrite_shard(lambda t: rows(t, lambda c, r: c.__setitem__(r[:1], c[r[:1]] + 1e-6), "reward")),
     ["shard-000001", "reward"]),
    ("reward-1000", rewrite_shard(lambda t: rows(t, lambda c, r: c.__setitem__(r, 1000), "reward")),
     ["shard-000001", "reward"]),
    ("obs-nudged", rewrite_shard(lambda t: pa.Table.from_pydict(
        {**{n: t[n] for n in t.column_names},
         "obs": pa.array([[v + (1e-4 if i == 5 else 0) for v in o] for i, o in enumerate(t["obs"].to_pylist())],
                         t.schema.field("obs").type)}, schema=t.schema)), ["shard-000001", "observation"]),
    ("final-obs", rewrite_shard(first_final_obs), ["shard-000001", "observation"]),
    ("action-flipped", rewrite_shard(lambda t: rows(t, lambda c, r: c.__setitem__(r[:1], 1 - c[r[:1]]), "action")),
     ["shard-000001", "differs from re-simulation"]),
    ("action-99", rewrite_shard(lambda t: rows(t, lambda c, r: c.__setitem__(r[:1], 99), "action")),
     ["shard-000001", "action 99"]),
    ("action-negative", rewrite_shard(lambda t: rows(t, lambda c, r: c.__setitem__(r[:1], -1), "action")),
     ["shard-000001", "action -1"]),
    ("terminated-early", rewrite_shard(lambda t: rows(t, lambda c, r: c.__setitem__(r[:1], True), "terminated")),
     ["shard-000001", "end flag"]),
    ("truncated-and-terminated", rewrite_shard(set_column("truncated", lambda c: c | np.arange(len(c)) == len(c) - 1)),
     ["shard-000001", "end flag"]),
    ("episodes-reordered", rewrite_shard(swap_first_two_episodes), ["shard-000001", "episode ids"]),
    ("episodes-renumbered", rewrite_shard(renumbered_swap), ["shard-000001", "differs from re-simulation"]),
    ("env-index", rewrite_shard(lambda t: rows(t, lambda c, r: c.__setitem__(r[:1], c[r[:1]] + 1), "env_index")),
     ["shard-000001", "env_index"]),
    ("step-skipped", rewrite_shard(lambda t: rows(t, lambda c, r: c.__setitem__(r[:1], c[r[:1]] + 1), "step")),
     ["shard-000001", "steps out of order"]),
    ("reward-nan", rewrite_shard(lambda t: rows(t, lambda c, r: c.__setitem__(r[:1], np.nan), "reward")),
     ["shard-000001", "reward"]),
    ("obs-float64", rewrite_shard(obs_float64), ["shard-000001", "column obs"]),
    ("extra-column", rewrite_shard(add_column), ["shard-000001", "extra"]),
    ("missing-column", rewrite_shard(lambda t: t.drop_columns(["logp"])), ["shard-000001", "logp"]),
    ("rows-dropped", rewrite_shard(lambda t: t.slice(0, t.num_rows - 1)), ["shard-000001"]),
]


@pytest.mark.parametrize("case, edit, words", TAMPER, ids=[c[0] for c in TAMPER])
def test_verify_catches_tampering(cartpole_data, tmp_path, case, edit, words):
    data = tmp_path / "data"
    shutil.copytree(cartpole_data, data)
    edit(data)
    result = invoke("datasets", "verify", data)
    assert result.exit_code == 1, result.output
    assert "FAIL" in result.output
    for word in words:
        assert word in result.output, (word, result.output)
    # what validate can see (all but what only re-simulation finds), it reports too
    simulated_only = {"reward-1e-6", "reward-1000", "obs-nudged", "final-obs", "action-flipped", "episodes-renumbered"}
    assert invoke("datasets", "validate", data).exit_code == (0 if case in simulated_only else 1)


def test_verify_passes_untampered_data(cartpole_data, breakout_data):
    for data in (cartpole_data, breakout_data):
        result = invoke("datasets", "verify", data)
        assert result.exit_code == 0 and "OK" in result.output, result.output


def test_tampered_shards_are_refused_by_their_readers(cartpole_data, tmp_path, monkeypatch):
    """What verify refuses, train and collect --resume refuse too (the rows are checked when read)."""
    monkeypatch.chdir(tmp_path)
    for name, edit in (("a99", TAMPER[5][1]), ("f64", TAMPER[14][1]), ("nan", TAMPER[13][1])):
        shutil.copytree(cartpole_data, name)
        edit(Path(name))
        before = snapshot(tmp_path)
        for args in (("train", "--data", name, "--out", "ck", "--updates", "2"),
                     ("datasets", "info", name)):
            result = invoke(*args)
            lines = [line for line in result.stderr.splitlines() if line.strip()]
            assert result.exit_code == 2 and len(lines) == 1 and "shard-000001" in lines[0], result.output
        assert snapshot(tmp_path) == before


# -- usage errors: (id, edit of the world or None, arguments, words) -----------------------------

def manifest(change: Callable[[dict], None]):
    return ("data-copy", lambda root: edit_raw_manifest(root, change))


def manifest_file(make: Callable[[Path], bytes]):
    """The dataset's _manifest.parquet replaced by ``make(its path)``."""
    return ("data-copy", lambda root: (root / "_manifest.parquet").write_bytes(make(root / "_manifest.parquet")))


def manifest_with_rows(path: Path) -> bytes:
    """A manifest file that also holds one row: readers of the folder would see it."""
    table = pq.read_table(path)
    rows = pq.read_table(path.parent / "shard-000000.parquet").slice(0, 1).cast(table.schema)
    sink = pa.BufferOutputStream()
    pq.write_table(pa.concat_tables([table, rows]), sink)
    return sink.getvalue().to_pybytes()


def manifest_of_other_schema(path: Path, keep_manifest: bool = True) -> bytes:
    """The manifest file with its reward column float64 (and its manifest JSON, or none)."""
    schema = pq.read_schema(path)
    other = schema.set(schema.get_field_index("reward"), pa.field("reward", pa.float64(), nullable=False))
    sink = pa.BufferOutputStream()
    pq.write_table(other.with_metadata(schema.metadata if keep_manifest else {}).empty_table(), sink)
    return sink.getvalue().to_pybytes()


def ckpt(change: Callable[[dict], None], file: str = "config.json"):
    return ("ckpt-copy", edit_json(file, change))


def run_dir(edit: Callable[[Path], None]):
    return ("runs/done-copy", edit)


def drop_param(groups: dict) -> None:
    groups["param_groups"][0]["params"].pop()


def garbage_mid_metrics(root: Path) -> None:
    lines = (root / "metrics.jsonl").read_text().splitlines()
    (root / "metrics.jsonl").write_text("\n".join(["not json at all", *lines]) + "\n")


INFO = ("datasets", "info", "data-copy")
EVAL = ("eval", "ckpt-copy", "--episodes", "2", "--report", "r.json")
RESUME = (*RUN, "--name", "done-copy")
CASES = [
    # output paths that name existing data through '..', '.' or a symlink
    ("collect-out-dotdot", None, ("collect", *CP, *STEPS, "--out", "data/x/.."), ["'..'"]),
    # (the command line gives "data/." to trl as "data": refused as what it names)
    ("collect-out-dot", None, ("collect", *CP, *STEPS, "--out", "data/."), ["already holds a dataset"]),
    ("collect-out-cwd", None, ("collect", *CP, *STEPS, "--out", "."), ["'.'"]),
    ("collect-out-up", None, ("collect", *CP, *STEPS, "--out", "stuff/.."), ["'..'"]),
    ("collect-out-symlink", None, ("collect", *CP, *STEPS, "--out", "data-link"), ["already holds a dataset"]),
    ("collect-out-detour", None, ("collect", *CP, *STEPS, "--out", "stuff/../data"), ["already holds a dataset"]),
    ("collect-out-symlink-dir", None, ("collect", *CP, *STEPS, "--out", "stuff-link"), ["non-empty"]),
    ("eval-record-dotdot", None, ("eval", "ckpt", "--episodes", "2", "--record", "data/y/.."), ["'..'"]),
    ("eval-record-dot", None, ("eval", "ckpt", "--episodes", "2", "--record", "data/."), ["already exists"]),
    ("eval-record-symlink", None, ("eval", "ckpt", "--episodes", "2", "--record", "data-link"), ["already exists"]),
    ("eval-report-dotdot", None, ("eval", "ckpt", "--episodes", "2", "--report", "stuff/.."), ["'..'"]),
    ("eval-gif-dotdot", None, ("eval", "ckpt", "--episodes", "2", "--gif", "stuff/.."), ["'..'"]),
    ("train-out-dotdot", None, ("train", "--data", "data", "--out", "ckpt/z/..", "--updates", "5"), ["'..'"]),
    ("train-out-dot", None, ("train", "--data", "data", "--out", ".", "--updates", "5"), ["'.'"]),
    ("train-out-symlink", None, ("train", "--data", "data", "--out", "ckpt-link", "--updates", "5"),
     ["already holds a checkpoint"]),
    ("run-name-dotdot", None, ("run", "--root", "runs", "--name", ".."), ["'..'"]),
    ("run-name-dot", None, ("run", "--root", "runs", "--name", "."), ["holds no run state"]),
    ("run-name-inner-dotdot", None, ("run", "--root", "runs", "--name", "done/.."), ["'..'"]),
    ("run-root-detour", None, (*RUN, "--root", "stuff/../runs", "--name", "done", "--model", "mlp"),
     ["--model gpt, not mlp"]),
    ("bench-json-dotdot", None, ("bench", "--seconds", "0.1", "--json", "stuff/.."), ["'..'"]),
    # manifests below the top level
    ("manifest-obs-shape-empty", manifest(lambda m: m["observation"].update(shape=[])), INFO, ["observation.shape"]),
    ("manifest-obs-dtype", manifest(lambda m: m["observation"].update(dtype="float64")), INFO, ["observation.dtype"]),
    ("manifest-obs-shape-other", manifest(lambda m: m["observation"].update(shape=[5])), INFO, ["observation"]),
    ("manifest-obs-not-object", manifest(lambda m: m.update(observation=[4])), INFO, ["observation"]),
    ("manifest-action-zero", manifest(lambda m: m["action"].update(n=0)), INFO, ["action.n"]),
    ("manifest-action-other", manifest(lambda m: m["action"].update(n=3)), INFO, ["action space"]),
    ("manifest-action-type", manifest(lambda m: m["action"].update(type="box")), INFO, ["action.type"]),
    ("manifest-env-unknown-key", manifest(lambda m: m["env"]["config"].update(turbo=True)), INFO, ["turbo"]),
    ("manifest-env-obs-shape", manifest(lambda m: m["env"].update(obs_shape=[5])), INFO, ["env.obs_shape"]),
    ("manifest-env-extra-field", manifest(lambda m: m["env"].update(colour="red")), INFO, ["colour"]),
    ("manifest-env-task", manifest(lambda m: m["env"].update(task="Acrobot-v1")), INFO, ["env.task"]),
    ("manifest-env-not-object", manifest(lambda m: m.update(env="CartPole-v1")), INFO, ["env"]),
    ("manifest-env-unknown-id", manifest(lambda m: (m["env"].update(env_id="Nope-v0"), m.update(env_id="Nope-v0"))),
     INFO, ["Nope-v0"]),
    ("manifest-segment-seed-huge", manifest(lambda m: m["segments"][0].update(seed=10**30)), INFO,
     ["segments[0].seed"]),
    ("manifest-seed-huge", manifest(lambda m: m.update(seed=10**30)), INFO, ["seed"]),
    ("manifest-segment-offset", manifest(lambda m: m["segments"][0].update(env_index_offset=3)), INFO,
     ["segments[0]"]),
    ("manifest-segment-num-envs", manifest(lambda m: m["segments"][0].update(num_envs="8")), INFO,
     ["segments[0].num_envs"]),
    ("manifest-shard-rows-string", manifest(lambda m: m["shards"][0].update(rows="1500")), INFO, ["shards[0].rows"]),
    ("manifest-shard-first-id", manifest(lambda m: m["shards"][1].update(first_episode_id=0)), INFO, ["shards[1]"]),
    ("manifest-shard-segment", manifest(lambda m: m["shards"][0].update(segment=7)), INFO, ["shards[0].segment"]),
    ("manifest-version-true", manifest(lambda m: m.update(format_version=True)), INFO, ["format_version"]),
    ("manifest-version-float", manifest(lambda m: m.update(format_version=1.0)), INFO, ["format_version"]),
    ("manifest-version-string", manifest(lambda m: m.update(format_version="1")), INFO, ["format_version", "'1'"]),
    ("manifest-not-object", ("data-copy", lambda root: write_raw_manifest(root, "[1, 2]")), INFO,
     ["not a trl dataset manifest"]),
    ("manifest-deep", ("data-copy", lambda root: write_raw_manifest(root, "[" * 100000 + "]" * 100000)), INFO,
     ["manifest"]),
    # the version-2 manifest file itself: cut off, holding rows, of another schema, claiming version 1
    ("manifest-file-cut", manifest_file(lambda p: p.read_bytes()[:-40]), INFO, ["_manifest.parquet", "Parquet"]),
    ("manifest-file-rows", manifest_file(manifest_with_rows), INFO, ["holds 1 rows"]),
    ("manifest-file-schema", manifest_file(manifest_of_other_schema), INFO, ["schema"]),
    ("manifest-file-no-json", manifest_file(lambda p: manifest_of_other_schema(p, keep_manifest=False)), INFO,
     ["no trl manifest"]),
    ("manifest-file-version-1", manifest(lambda m: m.update(format_version=1)), INFO, ["manifest.json"]),
    ("manifest-resume", manifest(lambda m: m["segments"][0].update(seed=10**30)),
     ("collect", *CP, "--steps", "99999", "--out", "data-copy", "--resume"), ["segments[0].seed"]),
    ("manifest-train", manifest(lambda m: m["env"]["config"].update(turbo=True)),
     ("train", "--data", "data-copy", "--out", "x", "--updates", "2"), ["turbo"]),
    # checkpoints
    ("ckpt-env-changed", ckpt(lambda c: c["env"].update(obs_shape=[5])), EVAL, ["env.obs_shape"]),
    ("ckpt-env-other", ckpt(lambda c: c.update(env=resolve("Acrobot-v1").to_json())), EVAL, ["obs_dim"]),
    ("ckpt-algo-unknown", ckpt(lambda c: c.update(algo="sac")), EVAL, ["algo", "'sac'"]),
    ("ckpt-counters-type", ckpt(lambda c: c["counters"].update(updates="many")), EVAL, ["counters.updates"]),
    ("ckpt-model-missing", ckpt(lambda c: c.pop("model")), EVAL, ["missing key model"]),
    ("ckpt-model-huge", ckpt(lambda c: c["model"].update(n_embd=1_000_000)), EVAL, ["parameters", "smaller model"]),
    ("ckpt-model-width-text", ckpt(lambda c: c["model"].update(n_embd="wide")), EVAL, ["damaged checkpoint"]),
    ("ckpt-model-unknown-key", ckpt(lambda c: c["model"].update(turbo=1)), EVAL, ["damaged checkpoint"]),
    ("ckpt-version", ckpt(lambda c: c.update(checkpoint_version=7)), EVAL, ["checkpoint_version"]),
    ("ckpt-optimizer-short", ckpt(drop_param, "optimizer.json"),
     ("train", "--data", "data", "--out", "x", "--updates", "2", "--init", "ckpt-copy"), ["optimizer", "parameters"]),
    ("ckpt-optimizer-cut", ("ckpt-copy", write_text("optimizer.json", '{"param_groups": [')),
     ("train", "--data", "data", "--out", "x", "--updates", "2", "--init", "ckpt-copy"), ["optimizer.json"]),
    ("run-init-optimizer-short", ckpt(drop_param, "optimizer.json"), (*RUN, "--name", "new", "--init", "ckpt-copy"),
     ["optimizer", "parameters"]),
    # run directories
    ("run-state-cut", run_dir(lambda r: (r / "state.json").write_text('{"iteration": 1, "env_')), RESUME,
     ["state.json", "not valid JSON"]),
    ("run-state-type", run_dir(edit_json("state.json", lambda s: s.update(iteration="1"))), RESUME,
     ["state.json", "iteration"]),
    ("run-state-best", run_dir(edit_json("state.json", lambda s: s["best"].update(iteration=99))), RESUME,
     ["best iteration 99"]),
    ("run-config-no-key", run_dir(edit_json("config.json", lambda c: c.pop("algo"))), RESUME,
     ["config.json", "missing key algo"]),
    ("run-metrics-garbage", run_dir(garbage_mid_metrics), RESUME, ["metrics.jsonl line 1"]),
    # settings from the environment and sizes that cannot be allocated
    ("torch-threads-text", None, (*TRAIN, "@TRL_TORCH_THREADS=abc"), ["TRL_TORCH_THREADS", "abc"]),
    ("torch-threads-zero", None, (*TRAIN, "@TRL_TORCH_THREADS=0"), ["TRL_TORCH_THREADS", "'0'"]),
    ("train-n-embd-huge", None, (*TRAIN, "--n-embd", "1000000"), ["parameters", "smaller model"]),
    ("run-n-embd-huge", None, (*RUN, "--n-embd", "1000000", "--name", "x"), ["parameters", "smaller model"]),
    ("run-hidden-huge", None, (*RUN, "--model", "mlp", "--hidden", "10000000", "--name", "x"), ["smaller model"]),
    ("bench-seconds-tiny", None, ("bench", "--seconds", "1e-300"), ["--seconds", "[0.01, 3600]"]),
    # compact runs
    ("run-keep-data-dqn", None, (*RUN, "--keep-data", "none", "--name", "x"), ["--keep-data none", "--algo ppo"]),
    ("run-keep-data-dt", None, (*RUN, "--algo", "dt", "--init", "dt-ckpt", "--keep-data", "none", "--name", "x"),
     ["--keep-data none"]),
    ("run-keep-checkpoints", None, (*RUN, "--keep-checkpoints", "some", "--name", "x"), ["--keep-checkpoints", "last"]),
    ("run-eval-budget-zero", None, (*RUN, "--eval-budget", "0", "--name", "x"), ["--eval-budget 0", "(0, 1]"]),
    ("run-resume-other-keep", None, (*RUN, "--name", "done", "--keep-checkpoints", "last"),
     ["keep_checkpoints all, not last"]),
    # checked before the first write
    ("run-seed-data-damaged", None, (*RUN, "--algo", "dt", "--init", "dt-ckpt", "--seed-data", "tampered",
                                     "--name", "x"), ["--seed-data", "shard-000001"]),
]


@pytest.fixture(scope="module")
def world(tmp_path_factory, cartpole_data) -> Path:
    root = tmp_path_factory.mktemp("integrity")
    shutil.copytree(cartpole_data, root / "data")
    (root / "stuff").mkdir()
    (root / "stuff" / "a.txt").write_text("a\n")
    os.symlink("data", root / "data-link")
    os.symlink("stuff", root / "stuff-link")
    shutil.copytree(cartpole_data, root / "tampered")
    TAMPER[5][1](root / "tampered")  # an action of 99
    cwd = os.getcwd()
    os.chdir(root)
    try:
        for args in (("train", "--data", "data", "--out", "ckpt", "--updates", "5"),
                     ("train", "--algo", "dt", "--data", "data", "--out", "dt-ckpt", "--updates", "5"),
                     (*RUN, "--name", "done")):
            result = invoke(*args)
            assert result.exit_code == 0, result.output
    finally:
        os.chdir(cwd)
    os.symlink("ckpt", root / "ckpt-link")
    return root


def test_the_table_is_long_enough():
    assert len(CASES) + len(TAMPER) >= 60 and len({c[0] for c in CASES + TAMPER}) == len(CASES) + len(TAMPER)


@pytest.mark.parametrize("prepare, args, words", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_touches_nothing(world, tmp_path, monkeypatch, prepare, args, words):
    here = tmp_path / "w"
    shutil.copytree(world, here, symlinks=True)
    if prepare is not None:
        target, edit = prepare
        source = {"data-copy": "data", "ckpt-copy": "ckpt", "runs/done-copy": "runs/done"}[target]
        shutil.copytree(here / source, here / target)
        edit(here / target)
    env = {k: v for a in args if a.startswith("@") for k, v in [a[1:].split("=", 1)]}
    args = [a for a in args if not a.startswith("@")]
    monkeypatch.chdir(here)
    before = snapshot(here)
    result = invoke(*args, env=env)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert result.stdout.strip() == "", result.stdout
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert snapshot(here) == before  # byte for byte, and nothing created


def test_collect_through_an_alias_leaves_the_dataset_byte_identical(world, tmp_path, monkeypatch):
    here = tmp_path / "w"
    shutil.copytree(world / "data", here / "data")
    monkeypatch.chdir(here)
    before = snapshot(here)
    for out in ("data/x/..", "data/.", "data/x/../", "./data/x/../.."):
        assert invoke("collect", *CP, *STEPS, "--out", out).exit_code == 2
    assert snapshot(here) == before
    assert pc.sum(pq.read_table(here / "data" / "shard-000000.parquet")["reward"]).as_py() > 0


def test_checkpoint_files_are_shared_like_the_rest(world):
    """safetensors writes owner-only files; a checkpoint's files all follow the umask instead."""
    umask = os.umask(0)
    os.umask(umask)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (world / "ckpt").iterdir()}
    assert set(modes) >= {"model.safetensors", "optimizer.safetensors", "config.json"}
    assert set(modes.values()) == {0o666 & ~umask}, modes


def test_envs_with_no_match_is_one_line():
    result = invoke("envs", "zzz")
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.strip() == "error: no env id contains 'zzz'; `trl envs` lists them all"
