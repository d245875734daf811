"""The losses by hand on tiny tensors, and the run directory's rollback after a crash."""

import json
import math
import shutil

import pytest
import torch

from conftest import cli, snapshot
from transformer_rl.config import RunConfig
from transformer_rl.datasets import load, read_manifest
from transformer_rl.datasets.checks import validate
from transformer_rl.datasets.writer import truncate
from transformer_rl.envs import resolve
from transformer_rl.models import GPT, GPTConfig, ModelOutput
from transformer_rl.pipeline import run
from transformer_rl.runs import RunDir
from transformer_rl.train.dqn import dqn_loss
from transformer_rl.train.dt import action_loss
from transformer_rl.train.ppo import PPOConfig, ppo_loss


class Table(torch.nn.Module):
    """Q-values and logits read straight from the observation, times ``scale``."""

    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(scale))

    def forward(self, obs, prev_action, mask=None, last_only=False):
        obs = obs[:, -1:] if last_only else obs
        q = self.scale * obs
        return ModelOutput(q=q, logits=q, value=self.scale * obs[..., 0])


def t(x, dtype=torch.float32):
    return torch.tensor(x, dtype=dtype)


def test_dqn_loss_by_hand():
    # one window of 2 positions, 2 actions; the target network reads -10x the online values, so
    # double DQN (online argmax, target value) and a plain target max give different targets
    batch = {
        "obs": t([[[1, 3], [2, 0]]]), "prev_action": t([[2, 0]], torch.long), "mask": t([[1, 1]], torch.bool),
        "next_obs": t([[[5, 4], [0, 7]]]), "next_prev_action": t([[0, 1]], torch.long),
        "next_mask": t([[1, 1]], torch.bool),
        "action": t([[1, 0]], torch.long), "ret": t([[1, 2]]), "weight": t([[0.5, 0.0]]),
        "boot_pos": t([[0, 1]], torch.long), "loss_mask": t([[1, 1]], torch.bool),
    }
    loss, q_taken = dqn_loss(Table(), Table(-10.0), batch, huber_delta=1.0)
    # position 0: Q(a=1) = 3; online argmax of [5, 4] is 0, valued -50 by the target:
    # y = 1 + 0.5 * -50 = -24, Huber(27) = 26.5. Position 1: Q(a=0) = 2, weight 0 (terminal): y = 2
    assert q_taken.tolist() == [3.0, 2.0]
    assert loss.item() == pytest.approx((26.5 + 0.0) / 2)
    batch["loss_mask"] = t([[0, 1]], torch.bool)  # padding positions are never learned
    assert dqn_loss(Table(), Table(-10.0), batch, huber_delta=1.0)[0].item() == 0.0


def test_ppo_loss_by_hand():
    cfg = PPOConfig(clip=0.2, ent_coef=0.01, vf_coef=0.5)
    batch = {
        # two steps, each a window of one: pi = [0.5, 0.5] and [0.75, 0.25]
        "obs": t([[0.0, 0.0], [math.log(3), 0.0]]), "windows": t([[0], [1]], torch.long),
        "prev_action": t([[2], [2]], torch.long), "mask": t([[1], [1]], torch.bool),
        "action": t([0, 0], torch.long), "old_logp": t([math.log(0.5), math.log(0.5)]),
        "adv": t([1.0, -1.0]), "ret": t([1.0, 0.0]),
    }
    loss, info = ppo_loss(Table(), batch, cfg)
    a = 1 / math.sqrt(2)  # advantages normalised: mean 0, (unbiased) std sqrt(2)
    ratio = [1.0, 1.5]
    # row 0: -a * 1; row 1 (negative advantage): max(a * 1.5, a * 1.2) = a * 1.5
    pg = (-a * ratio[0] + a * ratio[1]) / 2
    v = 0.5 * ((0.0 - 1.0) ** 2 + (math.log(3) - 0.0) ** 2) / 2
    ent = (math.log(2) - (0.75 * math.log(0.75) + 0.25 * math.log(0.25))) / 2
    assert info["losses/policy_loss"] == pytest.approx(pg, abs=1e-6)
    assert info["losses/value_loss"] == pytest.approx(v, abs=1e-6)
    assert info["losses/entropy"] == pytest.approx(ent, abs=1e-6)
    assert loss.item() == pytest.approx(pg - 0.01 * ent + 0.5 * v, abs=1e-6)
    assert info["losses/approx_kl"] == pytest.approx((0.5 - math.log(1.5)) / 2, abs=1e-6)
    assert info["losses/clipfrac"] == pytest.approx(0.5)


def test_losses_stay_float32_under_bf16_autocast():
    """--device cuda runs the forward under bf16 autocast; the losses must still be float32 and
    agree with the fp32 ones to bf16 precision. (torch autocasts on CPU too, so this runs here.)"""
    torch.manual_seed(0)
    model = GPT(GPTConfig(obs_dim=4, num_actions=2, context=4))
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.2)
    b, k = 16, 4
    batch = {"obs": torch.randn(b, k, 4), "prev_action": torch.randint(0, 3, (b, k)),
             "mask": torch.ones(b, k, dtype=torch.bool), "action": torch.randint(0, 2, (b,)),
             "old_logp": torch.full((b,), math.log(0.5)), "adv": torch.randn(b), "ret": torch.randn(b)}
    dqn_batch = {**batch, "next_obs": torch.randn(b, k, 4), "next_prev_action": torch.randint(0, 3, (b, k)),
                 "next_mask": batch["mask"], "action": torch.randint(0, 2, (b, k)), "ret": torch.randn(b, k),
                 "weight": torch.full((b, k), 0.99), "boot_pos": torch.full((b, k), k - 1),
                 "loss_mask": batch["mask"]}
    ppo_batch = {**batch, "obs": batch["obs"].view(b * k, 4), "windows": torch.arange(b * k).view(b, k)}
    losses = {
        "ppo": lambda: ppo_loss(model, ppo_batch, PPOConfig())[0],
        "dqn": lambda: dqn_loss(model, model, dqn_batch, 1.0)[0],
        "dt": lambda: action_loss(model, {**batch, "action": dqn_batch["action"], "rtg": None, "timestep": None})[0],
    }
    for name, loss in losses.items():
        full = loss()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = loss()
        assert half.dtype == torch.float32 and torch.isfinite(half), name
        assert half.item() == pytest.approx(full.item(), rel=0.05, abs=0.02), name
        half.backward()  # gradients flow back through the bf16 forward


def test_truncate_drops_later_shards_and_segments(tmp_path, cartpole_data):
    root = tmp_path / "d"
    shutil.copytree(cartpole_data, root)
    before = read_manifest(root)
    assert len(before["shards"]) >= 3
    truncate(root, shards=1, segments=1)
    after = read_manifest(root)
    assert after["shards"] == before["shards"][:1] and after["segments"] == before["segments"][:1]
    assert sorted(p.name for p in root.iterdir()) == ["_manifest.parquet", before["shards"][0]["file"]]
    assert validate(root).ok and len(load(root)) == before["shards"][0]["rows"]


def test_rundir_rolls_back_what_followed_the_last_committed_state(tmp_path):
    settings = dict(name="r", root=tmp_path, steps_per_iteration=1500, updates=20, eval_episodes=3,
                    stop_at=1e9)
    run(RunConfig.create("CartPole-v1", "dqn", iterations=1, **settings), log=lambda *_: None)
    run_path = tmp_path / "r"
    after_one = (run_path / "state.json").read_text()
    shards_one = read_manifest(run_path / "data")["shards"]
    best_one = (run_path / "checkpoints" / "best" / "model.safetensors").read_bytes()
    # the run goes on to iteration 3, then "crashes" back to the state after iteration 1
    run(RunConfig.create("CartPole-v1", "dqn", iterations=3, **settings), log=lambda *_: None)
    assert len(read_manifest(run_path / "data")["shards"]) > len(shards_one)
    (run_path / "state.json").write_text(after_one)
    cfg = RunConfig.create("CartPole-v1", "dqn", iterations=3, **settings)
    run_dir = RunDir(cfg)
    run_dir.open(resolve("CartPole-v1"), log=lambda *_: None)
    assert read_manifest(run_path / "data")["shards"] == shards_one
    assert validate(run_path / "data").ok
    rows = [json.loads(x) for x in (run_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [1]
    assert (run_path / "checkpoints" / "best" / "model.safetensors").read_bytes() == best_one
    assert run_dir.resume_learner(resolve("CartPole-v1")).updates == 20  # iteration 1's checkpoint


def test_a_diverging_run_stops_with_one_line_and_keeps_its_last_good_checkpoint(tmp_path):
    args = ["run", "--root", tmp_path, "--name", "d", "--steps-per-iteration", "500", "--updates", "20",
            "--eval-episodes", "2", "--stop-at", "1e9"]
    assert cli(*args, "--iterations", "1").exit_code == 0
    good = snapshot(tmp_path / "d" / "checkpoints")
    r = cli(*args, "--iterations", "2", "--lr", "1e30")
    assert r.exit_code == 2 and "training diverged" in r.stderr and len(r.stderr.splitlines()) == 1, r.output
    assert snapshot(tmp_path / "d" / "checkpoints") == good
    assert json.loads((tmp_path / "d" / "state.json").read_text())["iteration"] == 1
    assert cli(*args, "--iterations", "2").exit_code == 0  # and it goes on with a sane --lr
