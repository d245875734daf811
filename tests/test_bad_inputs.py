"""Bad or careless inputs, table-driven, through the real CLI.

Each case runs one `trl` command inside a prepared directory of real things (a dataset, a
damaged copy of it, a checkpoint, a finished run, plain files) and must end with exit code 2,
exactly one line on stderr that starts with "error:" and names the problem, nothing on stdout,
no traceback, and every file that existed before byte-identical (and nothing new created).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from conftest import edit_raw_manifest, snapshot
from transformer_rl.cli.app import app
from transformer_rl.envs import resolve

CP = ("--env", "CartPole-v1")
BO = ("--env", "Breakout-ram")
STEPS = ("--steps", "50")
RUN = ("run", "--root", "runs", "--iterations", "1", "--steps-per-iteration", "200")
TRAIN = ("train", "--data", "data", "--out", "new-ckpt", "--updates", "5")

# (id, arguments, words the error line must contain)
CASES = [
    # collect: env ids
    ("unknown-env", ("collect", "--env", "CartPole-v9", *STEPS, "--out", "o"), ["unknown env id", "CartPole-v1"]),
    ("image-env", ("collect", "--env", "Pong-v5", *STEPS, "--out", "o"), ["image observations", "Pong-ram"]),
    ("continuous-env", ("collect", "--env", "HalfCheetah-v4", *STEPS, "--out", "o"), ["continuous actions"]),
    ("multi-player-env", ("collect", "--env", "KuhnPoker-v1", *STEPS, "--out", "o"), ["multi-player"]),
    ("unknown-ram-game", ("collect", "--env", "Brekout-ram", *STEPS, "--out", "o"), ["unknown env id", "Breakout-ram"]),
    # collect: numbers
    ("steps-zero", ("collect", *CP, "--steps", "0", "--out", "o"), ["--steps", "out of range", "(0, inf)"]),
    ("steps-negative", ("collect", *CP, "--steps", "-5", "--out", "o"), ["--steps", "out of range", "(0, inf)"]),
    ("steps-not-int", ("collect", *CP, "--steps", "abc", "--out", "o"), ["--steps", "integer"]),
    ("num-envs-zero", ("collect", *CP, *STEPS, "--num-envs", "0", "--out", "o"), ["--num-envs", "out of range"]),
    ("batch-over-envs", ("collect", *CP, *STEPS, "--num-envs", "4", "--batch-size", "8", "--out", "o"),
     ["--batch-size 8 exceeds --num-envs 4"]),
    ("steps-and-episodes", ("collect", *CP, *STEPS, "--episodes", "3", "--out", "o"), ["only one of"]),
    ("no-target", ("collect", *CP, "--out", "o"), ["give one of --steps or --episodes"]),
    ("seed-negative", ("collect", *CP, *STEPS, "--seed", "-1", "--out", "o"), ["--seed -1", "out of range"]),
    ("seed-too-big", ("collect", *CP, *STEPS, "--seed", "2147483647", "--out", "o"), ["--seed", "[0, 2,147,483,640]"]),
    ("shard-rows-zero", ("collect", *CP, *STEPS, "--shard-rows", "0", "--out", "o"),
     ["--shard-rows", "out of range", "(0, inf)"]),
    ("frame-skip-huge", ("collect", *BO, *STEPS, "--frame-skip", "99999999999", "--out", "o"), ["--frame-skip"]),
    ("frame-skip-zero", ("collect", *BO, *STEPS, "--frame-skip", "0", "--out", "o"), ["--frame-skip", "1 to 64"]),
    ("sticky-above-one", ("collect", *BO, *STEPS, "--sticky", "1.5", "--out", "o"), ["--sticky", "[0, 1)"]),
    ("sticky-nan", ("collect", *BO, *STEPS, "--sticky", "nan", "--out", "o"), ["--sticky", "[0, 1)"]),
    ("sticky-not-atari", ("collect", *CP, *STEPS, "--sticky", "0.1", "--out", "o"), ["Atari"]),
    ("policy-unknown", ("collect", *CP, *STEPS, "--policy", "greedy", "--out", "o"), ["--policy", "random"]),
    # collect: paths
    ("out-is-dataset", ("collect", *CP, *STEPS, "--out", "data"), ["already holds a dataset", "--resume"]),
    ("out-is-file", ("collect", *CP, *STEPS, "--out", "notes.txt"), ["notes.txt", "file"]),
    ("out-under-file", ("collect", *CP, *STEPS, "--out", "notes.txt/sub"), ["notes.txt", "file"]),
    ("out-not-empty", ("collect", *CP, *STEPS, "--out", "stuff"), ["non-empty", "not a dataset"]),
    ("resume-other-env", ("collect", "--env", "Acrobot-v1", *STEPS, "--out", "data", "--resume"), ["CartPole-v1"]),
    ("resume-other-config", ("collect", *BO, *STEPS, "--out", "breakout", "--resume", "--sticky", "0"),
     ["configuration"]),
    ("resume-damaged", ("collect", *CP, "--steps", "99999", "--out", "damaged", "--resume"),
     ["shard-000001", "damaged"]),
    ("resume-missing-shard", ("collect", *CP, "--steps", "99999", "--out", "missing-shard", "--resume"),
     ["shard-000000", "missing"]),
    # datasets
    ("info-missing", ("datasets", "info", "nope"), ["does not exist"]),
    ("info-file", ("datasets", "info", "notes.txt"), ["is a file"]),
    ("info-not-dataset", ("datasets", "info", "stuff"), ["not a trl dataset"]),
    ("info-damaged", ("datasets", "info", "damaged"), ["shard-000001", "damaged", "validate"]),
    ("info-missing-key", ("datasets", "info", "missing-key"), ["missing key shards"]),
    ("info-bad-file-name", ("datasets", "info", "escaping"), ["shards[0].file"]),
    ("list-file", ("datasets", "list", "notes.txt"), ["not a directory"]),
    ("validate-not-dataset", ("datasets", "validate", "stuff"), ["not a trl dataset"]),
    ("verify-missing", ("datasets", "verify", "nope"), ["does not exist"]),
    # train
    ("train-no-data", ("train", "--data", "nope", "--out", "new-ckpt"), ["does not exist"]),
    ("train-out-file", (*TRAIN[:3], "--out", "notes.txt"), ["notes.txt", "not a checkpoint"]),
    ("train-out-checkpoint", (*TRAIN[:3], "--out", "ckpt"), ["already holds a checkpoint", "--overwrite"]),
    ("train-gamma-nan", (*TRAIN, "--gamma", "nan"), ["--gamma nan", "finite", "[0, 1]"]),
    ("train-gamma-big", (*TRAIN, "--gamma", "1.5"), ["--gamma 1.5", "[0, 1]"]),
    ("train-lr-zero", (*TRAIN, "--lr", "0"), ["--lr 0", "(0, inf)"]),
    ("train-lr-negative", (*TRAIN, "--lr", "-1"), ["--lr -1"]),
    ("train-lr-inf", (*TRAIN, "--lr", "inf"), ["--lr inf", "finite"]),
    ("train-n-step-zero", (*TRAIN, "--n-step", "0"), ["--n-step 0", "[1, inf)"]),
    ("train-batch-zero", (*TRAIN, "--batch", "0"), ["--batch 0"]),
    ("train-updates-zero", (*TRAIN, "--updates", "0"), ["--updates 0"]),
    ("train-eps-decay-negative", (*TRAIN, "--eps-decay-steps", "-5"), ["--eps-decay-steps -5"]),
    ("train-ppo-no-logp", (*TRAIN[:5], "--algo", "ppo"), ["logp"]),
    ("train-algo-unknown", (*TRAIN, "--algo", "sac"), ["--algo", "dqn"]),
    ("train-model-unknown", (*TRAIN, "--model", "rnn"), ["--model", "gpt"]),
    ("train-heads", (*TRAIN, "--n-embd", "30", "--n-head", "4"), ["multiple of --n-head"]),
    ("train-init-model", (*TRAIN, "--init", "ckpt", "--model", "mlp"), ["--init"]),
    ("train-init-not-ckpt", (*TRAIN, "--init", "notes.txt"), ["not a trl checkpoint"]),
    ("train-option-other-algo", (*TRAIN, "--clip", "0.1"), ["--clip", "--algo dqn"]),
    ("train-diverges", (*TRAIN, "--lr", "1e30", "--updates", "50"), ["training diverged", "lower --lr"]),
    ("train-damaged-data", ("train", "--data", "damaged", "--out", "new-ckpt", "--updates", "5"),
     ["shard-000001", "damaged"]),
    # eval
    ("eval-missing", ("eval", "nope"), ["not a trl checkpoint"]),
    ("eval-dataset", ("eval", "data"), ["not a trl checkpoint"]),
    ("eval-report-manifest", ("eval", "ckpt", "--episodes", "2", "--report", "data/_manifest.parquet"),
     ["not a trl eval-report"]),
    ("eval-report-notes", ("eval", "ckpt", "--episodes", "2", "--report", "notes.txt"), ["not a trl eval-report"]),
    ("eval-report-dir", ("eval", "ckpt", "--episodes", "2", "--report", "stuff"), ["is a directory"]),
    ("eval-report-no-parent", ("eval", "ckpt", "--episodes", "2", "--report", "nope/r.json"), ["does not exist"]),
    ("eval-seed-negative", ("eval", "ckpt", "--episodes", "2", "--seed", "-1"), ["--seed -1"]),
    ("eval-episodes-zero", ("eval", "ckpt", "--episodes", "0"), ["--episodes 0", "[1, 4096]"]),
    ("eval-episodes-huge", ("eval", "ckpt", "--episodes", "100000"), ["--episodes 100000", "[1, 4096]"]),
    ("num-envs-huge", ("collect", *CP, *STEPS, "--num-envs", "1000000", "--out", "o"), ["at most 4096"]),
    ("run-num-envs-huge", (*RUN, "--num-envs", "5000", "--name", "x"), ["--num-envs 5000", "[1, 4096]"]),
    ("eval-gif-not-gif", ("eval", "ckpt", "--episodes", "2", "--gif", "notes.txt"), [".gif"]),
    ("eval-gif-foreign", ("eval", "ckpt", "--episodes", "2", "--gif", "foreign.gif"), ["not drawn by trl"]),
    ("eval-record-exists", ("eval", "ckpt", "--episodes", "2", "--record", "data"), ["already exists"]),
    ("eval-sample-dqn", ("eval", "ckpt", "--episodes", "2", "--mode", "sample"), ["DQN checkpoint"]),
    ("eval-mode-unknown", ("eval", "ckpt", "--mode", "fancy"), ["--mode", "greedy"]),
    ("eval-mismatched-ckpt", ("eval", "mismatched-ckpt", "--episodes", "2"), ["damaged checkpoint", "obs_dim"]),
    ("eval-bad-config-json", ("eval", "broken-ckpt", "--episodes", "2"), ["damaged checkpoint"]),
    # run
    ("run-lr-negative", (*RUN, "--lr", "-1", "--name", "x"), ["--lr -1"]),
    ("run-gamma-nan", (*RUN, "--gamma", "nan", "--name", "x"), ["--gamma nan"]),
    ("run-clip-negative", (*RUN, "--algo", "ppo", "--clip", "-1", "--name", "x"), ["--clip -1"]),
    ("run-gae-lambda", (*RUN, "--algo", "ppo", "--gae-lambda", "2", "--name", "x"), ["--gae-lambda 2"]),
    ("run-ent-coef-nan", (*RUN, "--algo", "ppo", "--ent-coef", "nan", "--name", "x"), ["--ent-coef nan"]),
    ("run-stop-at-nan", (*RUN, "--stop-at", "nan", "--name", "x"), ["--stop-at nan"]),
    ("run-eps-decay", (*RUN, "--eps-decay-steps", "-5", "--name", "x"), ["--eps-decay-steps -5"]),
    ("run-batch-zero", (*RUN, "--batch", "0", "--name", "x"), ["--batch 0"]),
    ("run-iterations-zero", ("run", "--root", "runs", "--iterations", "0", "--name", "x"), ["--iterations 0"]),
    ("run-num-envs", (*RUN, "--num-envs", "-1", "--name", "x"), ["--num-envs -1"]),
    ("run-name-file", ("run", "--root", ".", "--name", "notes.txt"), ["holds no run state"]),
    ("train-replay-zero", (*TRAIN, "--replay-rows", "0"), ["--replay-rows 0"]),
    ("train-context-zero", (*TRAIN, "--context", "0"), ["--context 0"]),
    ("collect-seed-not-int", ("collect", *CP, *STEPS, "--seed", "1e3", "--out", "o"), ["--seed"]),
    ("info-version", ("datasets", "info", "future"), ["format version 99"]),
    ("run-seed-huge", (*RUN, "--seed", "99999999", "--name", "x"), ["--seed 99999999", "out of range"]),
    ("run-unknown-env", (*RUN, "--env", "Nope-v0", "--name", "x"), ["unknown env id"]),
    ("run-option-other-algo", (*RUN, "--algo", "ppo", "--n-step", "3", "--name", "x"), ["--n-step", "--algo ppo"]),
    ("run-eval-mode-dqn", (*RUN, "--eval-mode", "sample", "--name", "x"), ["--eval-mode sample"]),
    ("run-init-other-algo", (*RUN, "--algo", "dt", "--init", "ckpt", "--name", "x"), ["dqn checkpoint"]),
    ("run-init-missing", (*RUN, "--algo", "dt", "--init", "nope", "--name", "x"), ["not a trl checkpoint"]),
    ("run-seed-data-other-env", (*RUN, "--algo", "dt", "--seed-data", "breakout", "--name", "x"),
     ["no CartPole-v1 data"]),
    ("run-seed-percent", (*RUN, "--seed-percent", "0", "--name", "x"), ["--seed-percent 0"]),
    ("train-dt-mlp", (*TRAIN, "--algo", "dt", "--model", "mlp"), ["--model gpt"]),
    ("train-top-percent", (*TRAIN, "--algo", "bc", "--top-percent", "150"), ["--top-percent 150", "(0, 100]"]),
    ("train-below-nothing", (*TRAIN, "--algo", "dt", "--below-return", "-5"), ["below-return"]),
    ("eval-target-dqn", ("eval", "ckpt", "--episodes", "2", "--target-return", "5"), ["--target-return"]),
    ("run-root-file", ("run", "--root", "notes.txt", "--name", "x"), ["notes.txt", "file"]),
    ("run-other-model", (*RUN, "--name", "done", "--model", "mlp"), ["runs/done", "--model gpt, not mlp"]),
    ("run-other-algo", (*RUN, "--name", "done", "--algo", "ppo"), ["runs/done", "algo"]),
    ("run-other-tokens", (*RUN, "--name", "done", "--tokens", "feature"), ["runs/done", "--tokens step, not feature"]),
    # feature tokens: a byte table needs bytes; the seed's layout reads one observation
    ("run-table-floats", (*RUN, "--tokens", "feature", "--feature-embed", "table", "--name", "x"),
     ["--feature-embed table", "CartPole-v1", "floats", "--feature-embed linear"]),
    ("train-table-floats", (*TRAIN, "--tokens", "feature", "--feature-embed", "table"),
     ["--feature-embed table", "floats"]),
    ("train-table-step-tokens", (*TRAIN, "--feature-embed", "table"), ["--tokens feature"]),
    ("run-tokens-mlp", (*RUN, "--model", "mlp", "--tokens", "feature", "--name", "x"), ["--model gpt"]),
    ("run-seed-context", (*RUN, "--tokens", "seed", "--name", "x"), ["--tokens seed", "--context 1"]),
    ("run-seed-bc", (*RUN, "--algo", "bc", "--tokens", "seed", "--context", "1", "--name", "x"),
     ["--tokens seed", "--algo bc"]),
    ("run-readout-unknown", (*RUN, "--tokens", "feature", "--readout", "max", "--name", "x"), ["--readout", "summary"]),
    ("run-not-a-run", ("run", "--root", ".", "--name", "stuff"), ["holds no run state"]),
    ("run-device-unknown", (*RUN, "--device", "tpu", "--name", "x"), ["--device", "auto"]),
    # these machines have no GPU (CUDA-less torch): --device cuda must say so, not crash
    *([] if torch.cuda.is_available() else [
        ("run-device-cuda", (*RUN, "--device", "cuda", "--name", "x"), ["--device cuda", "--device cpu"]),
        ("train-device-cuda", (*TRAIN, "--device", "cuda"), ["--device cuda", "--device cpu"]),
        ("eval-device-cuda", ("eval", "ckpt", "--episodes", "2", "--device", "cuda"), ["--device cuda"]),
    ]),
    # bench
    ("bench-seconds-nan", ("bench", "--seconds", "nan"), ["--seconds nan"]),
    ("bench-seconds-zero", ("bench", "--seconds", "0"), ["--seconds 0"]),
    ("bench-rounds-zero", ("bench", "--rounds", "0"), ["--rounds 0"]),
    ("bench-json-manifest", ("bench", "--seconds", "0.1", "--json", "data/_manifest.parquet"), ["not a trl bench"]),
    ("bench-json-dir", ("bench", "--seconds", "0.1", "--json", "stuff"), ["is a directory"]),
    ("bench-num-envs-zero", ("bench", "--num-envs", "0,8"), ["--num-envs", "positive"]),
    ("bench-num-envs-text", ("bench", "--num-envs", "a,b"), ["--num-envs", "integers"]),
    ("bench-unknown-env", ("bench", "--env", "Nope-v0"), ["unknown env id"]),
    # the command line itself
    ("unknown-command", ("colect",), ["colect"]),
    ("unknown-option", ("collect", *CP, "--stepz", "5", "--out", "o"), ["--stepz"]),
]


@pytest.fixture(scope="module")
def world(tmp_path_factory, cartpole_data, breakout_data) -> Path:
    """A directory of real things for the bad inputs to hit."""
    root = tmp_path_factory.mktemp("world")
    shutil.copytree(cartpole_data, root / "data")
    shutil.copytree(breakout_data, root / "breakout")
    (root / "notes.txt").write_text("my notes\n")
    (root / "stuff").mkdir()
    (root / "stuff" / "a.txt").write_text("a\n")
    from PIL import Image

    Image.new("RGB", (4, 4)).save(root / "foreign.gif")
    # damaged copies: a truncated shard, a missing shard, a manifest missing a key, a shard file
    # name pointing out of the dataset
    shutil.copytree(cartpole_data, root / "damaged")
    shard = root / "damaged" / "shard-000001.parquet"
    shard.write_bytes(shard.read_bytes()[:-100])
    shutil.copytree(cartpole_data, root / "missing-shard")
    (root / "missing-shard" / "shard-000000.parquet").unlink()
    for name, edit in (("missing-key", lambda m: m.pop("shards")), ("future", lambda m: m.update(format_version=99)),
                       ("escaping", lambda m: m["shards"][0].update(file="../notes.txt"))):
        shutil.copytree(cartpole_data, root / name)
        edit_raw_manifest(root / name, edit)
    cwd = os.getcwd()
    os.chdir(root)
    try:
        assert invoke("train", "--data", "data", "--out", "ckpt", "--updates", "5").exit_code == 0
        r = invoke(*RUN, "--name", "done", "--updates", "5", "--eval-episodes", "2")
        assert r.exit_code == 0, r.output
    finally:
        os.chdir(cwd)
    shutil.copytree(root / "ckpt", root / "mismatched-ckpt")  # config says Acrobot (6 obs dims)
    config = json.loads((root / "ckpt" / "config.json").read_text())
    config["env"] = resolve("Acrobot-v1").to_json()
    config["model"]["obs_dim"] = 6
    (root / "mismatched-ckpt" / "config.json").write_text(json.dumps(config))
    shutil.copytree(root / "ckpt", root / "broken-ckpt")
    (root / "broken-ckpt" / "config.json").write_text('{"algo": "dqn", "model": ')
    return root


def invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_the_table_is_long_enough():
    assert len(CASES) >= 60 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("args, words", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_touches_nothing(world, monkeypatch, args, words):
    monkeypatch.chdir(world)
    before = snapshot(world)
    result = invoke(*args)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert "Traceback" not in result.output and result.exception is None or isinstance(
        result.exception, SystemExit), result.exception
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert result.stderr == lines[0] + "\n", repr(result.stderr)  # no blank lines around it
    assert result.stdout.strip() == "", result.stdout
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert snapshot(world) == before  # byte for byte, and nothing created


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
@pytest.mark.parametrize("args", [
    ("collect", *CP, *STEPS, "--out", "ro/new"),
    ("collect", *CP, *STEPS, "--out", "ro/data", "--resume"),
    ("train", "--data", "data", "--out", "ro/ckpt", "--updates", "5"),
    ("eval", "ro/ckpt", "--episodes", "2", "--report", "ro/r.json"),
    ("run", "--root", "ro", "--name", "x"),
    ("bench", "--seconds", "0.1", "--num-envs", "2", "--json", "ro/b.json"),
], ids=["collect", "resume", "train", "eval", "run", "bench"])
def test_read_only_directories(world, tmp_path, monkeypatch, args):
    ro = tmp_path / "ro"
    ro.mkdir()
    shutil.copytree(world / "data", ro / "data")
    shutil.copytree(world / "ckpt", ro / "ckpt")
    for path in (ro, ro / "data", ro / "ckpt"):
        path.chmod(0o555)
    shutil.copytree(world / "data", tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    try:
        result = invoke(*args)
    finally:
        for path in (ro, ro / "data", ro / "ckpt"):
            path.chmod(0o755)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert snapshot(tmp_path) == before
