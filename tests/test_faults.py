import numpy as np
import pytest

from conftest import cli
from transformer_rl.datasets import read_manifest


def one_line_error(r):
    assert r.exit_code == 2, r.output
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in r.output, r.output
    return lines[0]


@pytest.mark.parametrize("args, expect", [
    (["--env", "CartPol-v1", "--steps", "10"], "CartPole-v1"),
    (["--env", "Pendulum-v1", "--steps", "10"], "Discrete"),
    (["--env", "CartPole-v1", "--steps", "0"], "--steps"),
    (["--env", "CartPole-v1", "--steps", "10", "--num-envs", "-1"], "--num-envs"),
    (["--env", "CartPole-v1", "--steps", "10", "--num-envs", "4", "--batch-size", "8"], "exceeds"),
    (["--env", "CartPole-v1", "--steps", "10", "--shard-rows", "0"], "--shard-rows"),
    (["--env", "CartPole-v1"], "--steps or --episodes"),
])
def test_bad_collect_options(tmp_path, args, expect):
    assert expect in one_line_error(cli("collect", *args, "--out", tmp_path / "x"))
    assert not (tmp_path / "x").exists()


def test_out_is_file_or_foreign_dir_or_existing_dataset(tmp_path, cartpole_data):
    f = tmp_path / "file"
    f.write_text("keep")
    assert "file" in one_line_error(cli("collect", "--env", "CartPole-v1", "--steps", "10", "--out", f))
    assert f.read_text() == "keep"
    d = tmp_path / "dir"
    d.mkdir()
    (d / "notes.txt").write_text("keep")
    one_line_error(cli("collect", "--env", "CartPole-v1", "--steps", "10", "--out", d))
    assert sorted(p.name for p in d.iterdir()) == ["notes.txt"]
    snapshot = {p.name: p.read_bytes() for p in cartpole_data.iterdir()}
    assert "--resume" in one_line_error(
        cli("collect", "--env", "CartPole-v1", "--steps", "10", "--out", cartpole_data))
    assert "Breakout-ram" in one_line_error(
        cli("collect", "--env", "Breakout-ram", "--steps", "10", "--out", cartpole_data, "--resume"))
    assert {p.name: p.read_bytes() for p in cartpole_data.iterdir()} == snapshot


def test_appending_another_config_is_refused(tmp_path):
    out = tmp_path / "b"
    r = cli("collect", "--env", "Breakout-ram", "--episodes", "1", "--num-envs", "2", "--out", out)
    assert r.exit_code == 0, r.output
    assert "configuration" in one_line_error(
        cli("collect", "--env", "Breakout-ram", "--episodes", "2", "--sticky", "0.0", "--out", out,
            "--resume"))


def copy_dataset(src, dst):
    dst.mkdir()
    for p in src.iterdir():
        (dst / p.name).write_bytes(p.read_bytes())
    return dst


def test_corrupt_truncated_and_missing_shards_fail_validation(tmp_path, cartpole_data):
    shard = read_manifest(cartpole_data)["shards"][1]["file"]
    corrupt = copy_dataset(cartpole_data, tmp_path / "corrupt")
    data = bytearray((corrupt / shard).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (corrupt / shard).write_bytes(bytes(data))
    truncated = copy_dataset(cartpole_data, tmp_path / "truncated")
    (truncated / shard).write_bytes((truncated / shard).read_bytes()[:100])
    missing = copy_dataset(cartpole_data, tmp_path / "missing")
    (missing / shard).unlink()
    for d in (corrupt, truncated, missing):
        for command in ("validate", "verify"):
            r = cli("datasets", command, d)
            assert r.exit_code == 1 and shard in r.output and "Traceback" not in r.output, r.output


def test_not_a_dataset_is_a_usage_error(tmp_path):
    for command in ("info", "validate", "verify"):
        assert "not a trl dataset" in one_line_error(cli("datasets", command, tmp_path))
    assert "does not exist" in one_line_error(cli("datasets", "info", tmp_path / "nope"))


def test_windows_never_cross_episodes(cartpole_data):
    from transformer_rl.datasets import load, sample_windows

    d = load(cartpole_data)
    w = sample_windows(d, 512, 16, np.random.default_rng(0))
    assert (d.episode_id[w.index] == d.episode_id[w.index[:, -1:]]).all()
    valid_len = w.mask.sum(1)
    expected = np.minimum(16, w.index[:, -1] - d.episode_start[w.index[:, -1]] + 1)
    assert np.array_equal(valid_len, expected)
    assert (w.mask[:, 1:] >= w.mask[:, :-1]).all()  # padding only on the left
