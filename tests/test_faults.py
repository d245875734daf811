"""Faults: one-line errors (exit 2) that change nothing; damaged data fails validation (exit 1);
SIGKILL at random instants leaves a valid dataset that --resume completes without loss."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import cli, one_line_error, snapshot, write_raw_manifest
from transformer_rl.datasets import load, read_manifest
from transformer_rl.datasets.checks import validate, verify
from transformer_rl.datasets.format import sha256_file
from transformer_rl.errors import UsageError

CARTPOLE = ["collect", "--env", "CartPole-v1"]


@pytest.mark.parametrize("args, expect", [
    (["--env", "CartPol-v1", "--steps", "10"], "CartPole-v1"),
    (["--env", "Breakot-ram", "--steps", "10"], "Breakout-ram"),
    (["--env", "Pendulum-v1", "--steps", "10"], "Discrete"),
    (["--env", "Breakout-v5", "--steps", "10"], "Breakout-ram"),
    (["--env", "CartPole-v1", "--steps", "10", "--sticky", "0.1"], "--sticky"),
    (["--env", "CartPole-v1", "--steps", "0"], "--steps"),
    (["--env", "CartPole-v1", "--steps", "-5"], "--steps"),
    (["--env", "CartPole-v1", "--episodes", "0"], "--episodes"),
    (["--env", "CartPole-v1", "--steps", "10", "--num-envs", "0"], "--num-envs"),
    (["--env", "CartPole-v1", "--steps", "10", "--num-envs", "-1"], "--num-envs"),
    (["--env", "CartPole-v1", "--steps", "10", "--batch-size", "0"], "--batch-size"),
    (["--env", "CartPole-v1", "--steps", "10", "--num-envs", "4", "--batch-size", "8"],
     "exceeds"),
    (["--env", "CartPole-v1", "--steps", "10", "--shard-rows", "0"], "--shard-rows"),
    (["--env", "CartPole-v1", "--steps", "10", "--seed", "-1"], "--seed"),
    (["--env", "CartPole-v1"], "--steps or --episodes"),
    (["--env", "CartPole-v1", "--steps", "10", "--episodes", "3"], "--steps or --episodes"),
    (["--env", "CartPole-v1", "--steps", "10", "--policy", "greedy"], "--policy"),
])
def test_bad_collect_options(tmp_path, args, expect):
    line = one_line_error(cli("collect", *args, "--out", tmp_path / "x"))
    assert expect in line and line.startswith("error:")
    assert not (tmp_path / "x").exists()  # refused before anything is created


def test_out_is_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("keep")
    before = snapshot(f)
    assert "is a file" in one_line_error(cli(*CARTPOLE, "--steps", 10, "--out", f))
    assert "--out" in one_line_error(cli(*CARTPOLE, "--steps", 10, "--out", f / "sub"))
    assert "is a file" in one_line_error(cli(*CARTPOLE, "--steps", 10, "--out", f, "--resume"))
    assert snapshot(f) == before


def test_out_is_a_foreign_directory(tmp_path):
    d = tmp_path / "dir"
    (d / "sub").mkdir(parents=True)
    (d / "notes.txt").write_text("keep")
    (d / "sub" / "a.parquet").write_bytes(b"not ours")
    before = snapshot(d)
    for extra in ([], ["--resume"]):
        line = one_line_error(cli(*CARTPOLE, "--steps", 10, "--out", d, *extra))
        assert "not a dataset" in line
    assert snapshot(d) == before and sorted(p.name for p in d.iterdir()) == ["notes.txt", "sub"]


def test_existing_dataset_needs_resume_and_the_same_env(cartpole_data):
    before = snapshot(cartpole_data)
    assert "--resume" in one_line_error(cli(*CARTPOLE, "--steps", 10, "--out", cartpole_data))
    line = one_line_error(cli("collect", "--env", "Breakout-ram", "--steps", 10,
                              "--out", cartpole_data, "--resume"))
    assert "CartPole-v1" in line and "Breakout-ram" in line
    line = one_line_error(cli("collect", "--env", "Acrobot-v1", "--steps", 10,
                              "--out", cartpole_data, "--resume"))
    assert "Acrobot-v1" in line
    assert snapshot(cartpole_data) == before  # bytes and mtimes: nothing rewritten


def test_appending_another_config_is_refused(breakout_data):
    before = snapshot(breakout_data)
    for extra in (["--sticky", "0.0"], ["--frame-skip", "2"]):
        line = one_line_error(cli("collect", "--env", "Breakout-ram", "--steps", 10,
                                  "--out", breakout_data, "--resume", *extra))
        assert "configuration" in line
    assert snapshot(breakout_data) == before


def copy_dataset(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def damage(kind: str, root: Path, shard: str) -> None:
    path = root / shard
    data = bytearray(path.read_bytes())
    if kind == "corrupt":  # same size, a few bytes flipped in the middle
        for i in range(len(data) // 2, len(data) // 2 + 4):
            data[i] ^= 0xFF
        path.write_bytes(bytes(data))
    elif kind == "truncated":
        path.write_bytes(bytes(data[: len(data) // 3]))
    elif kind == "missing":
        path.unlink()


@pytest.mark.parametrize("kind, words", [
    ("corrupt", "checksum"),
    ("truncated", "bytes"),
    ("missing", "missing"),
])
def test_damaged_shard_fails_validation_naming_it(tmp_path, cartpole_data, kind, words):
    root = copy_dataset(cartpole_data, tmp_path / kind)
    shard = read_manifest(root)["shards"][1]["file"]
    damage(kind, root, shard)
    before = snapshot(root)
    report = validate(root)
    assert not report.ok and len(report.problems) == 1, report.problems  # no knock-on errors
    assert shard in report.problems[0] and words in report.problems[0]
    for command in ("validate", "verify"):
        line = one_line_error(cli("datasets", command, root), code=1)
        assert "FAIL" in line and shard in line
    # every reader checks each shard's size and checksum first, and names the damaged file
    line = one_line_error(cli("datasets", "info", root))
    assert shard in line and "validate" in line
    with pytest.raises(UsageError, match=shard):
        load(root)
    assert snapshot(root) == before  # checking never repairs or rewrites


def test_damaged_manifest_is_a_usage_error(tmp_path, cartpole_data):
    root = copy_dataset(cartpole_data, tmp_path / "m")
    write_raw_manifest(root, '{"format": "trl-dataset", ')
    assert "not valid JSON" in one_line_error(cli("datasets", "info", root))
    for command in ("validate", "verify"):  # a damaged dataset fails the check: exit 1
        assert "not valid JSON" in one_line_error(cli("datasets", command, root), code=1)
    write_raw_manifest(root, '{"format": "trl-dataset", "format_version": 99}')
    assert "version 99" in one_line_error(cli("datasets", "validate", root))
    line = one_line_error(cli(*CARTPOLE, "--steps", 10, "--out", root, "--resume"))
    assert "version" in line


def test_not_a_dataset_is_a_usage_error(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    for command in ("info", "validate", "verify"):
        assert "not a trl dataset" in one_line_error(cli("datasets", command, tmp_path))
        assert "does not exist" in one_line_error(cli("datasets", command, tmp_path / "nope"))
        assert "is a file" in one_line_error(cli("datasets", command, tmp_path / "a.txt"))


def test_datasets_list(tmp_path, cartpole_data, breakout_data):
    r = cli("datasets", "list", cartpole_data.parent.parent)
    assert r.exit_code == 0 and "CartPole-v1" in r.output and "Breakout-ram" in r.output, r.output
    assert "no datasets" in cli("datasets", "list", tmp_path).output
    assert "not a directory" in one_line_error(cli("datasets", "list", tmp_path / "nope"))


# --- SIGKILL at random instants ---------------------------------------------------------------

KILL_STEPS = 60_000


def _listed(out: Path, key: str) -> int:
    """How many segments or shards the manifest lists (0 before the first write)."""
    try:
        return len(read_manifest(out)[key])
    except (UsageError, KeyError, ValueError):
        return 0


def test_sigkill_leaves_a_valid_dataset_and_resume_loses_nothing(tmp_path):
    out = tmp_path / "k"
    cmd = [sys.executable, "-m", "transformer_rl", "collect", "--env", "CartPole-v1",
           "--steps", str(KILL_STEPS), "--num-envs", "8", "--shard-rows", "3000",
           "--out", str(out)]
    rng = np.random.default_rng(2024)
    # Kills are placed by progress, not by the clock, so a fast machine cannot finish the run first:
    # each lands a few shards into its run (at most 15 of the 20), a random instant into the next.
    after_shards = rng.integers(2, 6, 3)
    jitter = rng.uniform(0.0, 0.02, 3)
    kept = None  # rows listed before the last kill: they must survive unchanged
    files: dict[str, str] = {}  # listed shard -> sha256
    interrupted = 0
    for i in range(3):
        segments, shards = _listed(out, "segments"), _listed(out, "shards")
        p = subprocess.Popen(cmd + (["--resume"] if i else []), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        # wait past the imports: until this run has opened its segment in the manifest
        while (_listed(out, "segments") <= segments and p.poll() is None
               and time.monotonic() < deadline):
            time.sleep(0.02)
        assert _listed(out, "segments") == segments + 1, (
            p.stderr.read() if p.poll() is not None else "")
        while _listed(out, "shards") < shards + after_shards[i] and p.poll() is None:
            time.sleep(0.002)
        time.sleep(float(jitter[i]))
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        p.stderr.close()
        interrupted += p.returncode == -signal.SIGKILL
        report = validate(out)
        assert report.ok, (i, report.problems)
        m = read_manifest(out)
        for s in m["shards"]:  # shards listed before stay byte for byte; new ones complete
            assert files.setdefault(s["file"], sha256_file(out / s["file"])) == s["sha256"]
        d = load(out)
        np.testing.assert_array_equal(d.episode_id, np.repeat(np.arange(d.num_episodes),
                                                              np.diff(d.episode_rows)))
        if kept is not None:
            assert len(d) >= len(kept)
            _same_prefix(d, kept)
        kept = d
    assert interrupted >= 2, "the kills came after the runs had finished: nothing was tested"
    r = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]  # leftovers removed
    report = verify(out)  # validates, then re-simulates every episode bit for bit
    assert report.ok, report.problems
    d = load(out)
    m = read_manifest(out)
    assert len(d) >= KILL_STEPS and len(m["segments"]) == 4
    assert sorted(p.name for p in out.glob("shard-*.parquet")) == [s["file"] for s in m["shards"]]
    ids, counts = np.unique(d.episode_id, return_counts=True)
    np.testing.assert_array_equal(ids, np.arange(d.num_episodes))  # 0..E-1, no duplicates
    assert (counts == np.diff(d.episode_rows)).all()
    _same_prefix(d, kept)  # no episode listed before a kill was lost or changed
    for s in m["shards"]:
        if s["file"] in files:
            assert files[s["file"]] == s["sha256"]
    assert validate(out).ok
    assert cli("datasets", "verify", out).exit_code == 0


def _same_prefix(d, kept) -> None:
    n, e = len(kept), kept.num_episodes
    for name in ("obs", "action", "reward", "terminated", "truncated", "episode_id", "env_index",
                 "step"):
        np.testing.assert_array_equal(getattr(d, name)[:n], getattr(kept, name), err_msg=name)
    np.testing.assert_array_equal(d.final_obs[:e], kept.final_obs)
