"""Feature tokens (one token per observation feature) and the seed's layout: shapes, counts,
causality over time, attention over a set, checkpoints, every algorithm, and learning CartPole."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import cli
from transformer_rl.collect.policies import ModelPolicy
from transformer_rl.config import RunConfig
from transformer_rl.envs import resolve
from transformer_rl.models import (
    GPT,
    GPTConfig,
    ModelArgs,
    SeedGPT,
    build_model,
    distinct_steps,
    model_config_dict,
    on_windows,
)
from transformer_rl.pipeline import run
from transformer_rl.train import checkpoint
from transformer_rl.train.dqn import DQNConfig

READOUTS = ["summary", "mean", "flat"]


def block_params(c: int) -> int:
    return 12 * c * c + 13 * c  # attention 4C^2 + 4C, MLP 8C^2 + 5C, two LayerNorms 4C


def inputs(b=3, t=6, d=5, a=3, bytes_=False):
    g = torch.Generator().manual_seed(0)
    obs = torch.randint(0, 256, (b, t, d), generator=g).float() if bytes_ else torch.randn(b, t, d, generator=g)
    return obs, torch.randint(0, a + 1, (b, t), generator=g)


def feature_gpt(**kw) -> GPT:
    torch.manual_seed(0)
    model = GPT(GPTConfig(obs_dim=5, num_actions=3, context=6, n_embd=16, tokens="feature", **kw))
    for p in model.parameters():  # away from the near-zero init, so every path matters
        torch.nn.init.normal_(p, std=0.3)
    return model.eval()


def test_step_tokens_are_todays_model_to_the_bit():
    # recorded from the GPT before feature tokens existed: init and forward must not move
    for cfg, digest, count, q in ((GPTConfig(4, 2), "bfa7a276c96bbd6e", 26_149, 1.0427026227116585),
                                  (GPTConfig(128, 4, context=4, n_embd=16, gated=True, rtg=True, max_timestep=10),
                                   "89642b1d1f13dd2c", 11_257, -0.8552606608718634)):
        torch.manual_seed(0)
        model = GPT(cfg).eval()
        h = hashlib.sha256()
        for k, v in model.state_dict().items():
            h.update(k.encode())
            h.update(v.numpy().tobytes())
        assert (h.hexdigest()[:16], model.num_params()) == (digest, count)
        g = torch.Generator().manual_seed(1)
        obs = torch.randn(2, cfg.context, cfg.obs_dim, generator=g)
        prev = torch.randint(0, cfg.num_actions + 1, (2, cfg.context), generator=g)
        rtg, ts = torch.randn(2, cfg.context, generator=g), torch.randint(0, 10, (2, cfg.context), generator=g)
        assert model(obs, prev, rtg=rtg, timestep=ts).q.double().sum().item() == pytest.approx(q, abs=1e-6)


@pytest.mark.parametrize("readout", READOUTS)
@pytest.mark.parametrize("embed", ["linear", "table"])
def test_shapes_and_parameter_counts(readout, embed):
    D, A, C, K = 128, 4, 16, 8
    model = GPT(GPTConfig(D, A, context=K, n_embd=C, n_layer=2, tokens="feature", feature_embed=embed,
                          readout=readout, time_layers=1))
    obs, prev = inputs(2, K, D, A, bytes_=True)
    out = model(obs, prev)
    assert out.q.shape == (2, K, A) and out.logits.shape == (2, K, A) and out.value.shape == (2, K)
    value = 256 * C if embed == "table" else 2 * C
    readout_params = {"summary": C, "mean": 0, "flat": (C + 1) + (D * C + C)}[readout]
    encoder = value + D * C + readout_params + 2 * block_params(C) + 2 * C  # + ln_f
    step = (A + 1) * C + K * C + 1 * block_params(C) + 2 * C  # prev action, position, time block, ln_f
    heads = 2 * (C * A + A) + C + 1
    assert model.num_params() == encoder + step + heads
    # context 1: no blocks across time, the n_layer blocks run across features
    one = GPT(GPTConfig(D, A, context=1, n_embd=C, tokens="feature", feature_embed=embed, readout=readout))
    assert len(one.h) == 0 and one.num_params() == model.num_params() - block_params(C) - (K - 1) * C
    assert one(obs[:, :1], prev[:, :1]).q.shape == (2, 1, A)


@pytest.mark.parametrize("readout", READOUTS)
def test_no_position_sees_a_later_step(readout):
    model = feature_gpt(readout=readout, time_layers=2)
    obs, prev = inputs()
    mask = torch.ones(3, 6, dtype=torch.bool)
    mask[0, :2] = False
    for t in range(5):
        obs2, prev2 = obs.clone(), prev.clone()
        obs2[:, t + 1:] = torch.randn_like(obs2[:, t + 1:]) * 10
        prev2[:, t + 1:] = (prev2[:, t + 1:] + 1) % 4
        for m in (None, mask):
            a, b = model(obs, prev, m), model(obs2, prev2, m)
            torch.testing.assert_close(a.q[:, :t + 1], b.q[:, :t + 1], atol=1e-5, rtol=1e-5)
            assert not torch.allclose(a.q[:, t + 1:], b.q[:, t + 1:], atol=1e-3)


@pytest.mark.parametrize("readout", READOUTS)
def test_last_only_gives_the_full_forwards_last_position(readout):
    model = feature_gpt(readout=readout)
    obs, prev = inputs()
    full, last = model(obs, prev), model(obs, prev, last_only=True)
    torch.testing.assert_close(full.q[:, -1], last.q[:, -1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("readout", ["summary", "mean"])
def test_without_feature_ids_the_features_are_a_set(readout):
    perm = torch.tensor([3, 0, 4, 1, 2])
    obs, prev = inputs()
    off = feature_gpt(readout=readout, feature_id=False)
    torch.testing.assert_close(off(obs, prev).q, off(obs[..., perm], prev).q, atol=1e-5, rtol=1e-5)
    on = feature_gpt(readout=readout)  # which feature a token is now matters
    assert not torch.allclose(on(obs, prev).q, on(obs[..., perm], prev).q, atol=1e-3)


def test_table_embedding_reads_byte_values():
    model = feature_gpt(feature_embed="table")
    obs, prev = inputs(bytes_=True)
    obs2 = obs.clone()
    obs2[:, :, 2] = (obs2[:, :, 2] + 1) % 256  # one byte value moves by one code
    assert not torch.allclose(model(obs, prev).q, model(obs2, prev).q, atol=1e-4)
    assert model.wte.wve.weight.shape == (256, 16)


def test_attention_maps_across_features_are_what_the_fused_attention_uses():
    model = feature_gpt()
    obs, prev = inputs()
    maps = model.attention(obs, prev)  # (L, B, T, H, N, N), N = 5 features + the summary token
    assert maps.shape == (2, 3, 6, 2, 6, 6)
    torch.testing.assert_close(maps.sum(-1), torch.ones(2, 3, 6, 2, 6))
    assert maps.triu(1).abs().max() > 0.01  # bidirectional: features read later features
    enc = model.wte
    x = enc.embed(obs, model.norm)
    block = enc.h[0]
    _, _, v = block.attn.c_attn(block.ln_1(x)).split(16, dim=2)
    v = v.view(18, 6, 2, 8).transpose(1, 2)
    mine = block.attn.c_proj((maps[0].reshape(18, 2, 6, 6) @ v).transpose(1, 2).reshape(18, 6, 16))
    torch.testing.assert_close(mine, block.attn(block.ln_1(x), None), atol=1e-5, rtol=1e-5)


def test_the_seed_layout():
    spec = resolve("Breakout-ram")
    args = ModelArgs(tokens="seed", context=1, n_embd=16)
    model = build_model(args.config(spec))
    assert isinstance(model, SeedGPT) and model.features.wfe is None and model.features.w_out is None
    assert not model.config.prev_action and model.features.causal
    assert model.heads.q.in_features == 128  # the heads read one number per byte
    obs, prev = inputs(2, 1, 128, 4, bytes_=True)
    maps = model.attention(obs, prev)
    assert maps.shape == (2, 2, 1, 2, 128, 128) and maps.triu(1).abs().max() == 0  # causal, RAM order
    obs2 = obs.clone()
    obs2[..., 100:] = 0  # later bytes reach earlier ones only through the heads, never through attention
    x, x2 = (model.features.embed(o, model.norm) for o in (obs, obs2))
    for block in model.features.h:
        x, x2 = block(x, None), block(x2, None)
    torch.testing.assert_close(x[:, :100], x2[:, :100])
    assert model(obs, prev).q.shape == (2, 1, 4)


def test_the_seed_layout_reads_values_in_0_1(breakout_data, cartpole_data):
    from transformer_rl.datasets import load
    from transformer_rl.models import new_model

    for data, env in ((breakout_data, "Breakout-ram"), (cartpole_data, "CartPole-v1")):
        data = load(data)
        model = new_model(resolve(env), ModelArgs(tokens="seed", context=1, n_embd=8), data, seed=0)
        x = model.norm(torch.tensor(data.obs))
        assert x.min() >= 0 and x.max() <= 1 + 1e-6  # bytes / 255; floats over the first data's range
        if env == "Breakout-ram":
            assert (model.norm.obs_std == 255).all() and (model.norm.obs_mean == 0).all()


def test_old_checkpoints_load_as_step_tokens_and_new_ones_record_the_layout(tmp_path):
    spec = resolve("CartPole-v1")
    obs, prev = inputs(2, 8, 4, 2)
    for args in (ModelArgs(), ModelArgs(tokens="feature", readout="mean", feature_id=False)):
        torch.manual_seed(0)
        model = build_model(args.config(spec))
        path = tmp_path / str(args.tokens)
        checkpoint.save(path, model, spec, "dqn")
        config = json.loads((path / "config.json").read_text())
        assert config["model"]["tokens"] == str(args.tokens) and config["model"] == model_config_dict(model)
        if args.tokens == "step":  # as written before feature tokens: no field of theirs
            for key in ("tokens", "feature_embed", "feature_id", "readout", "time_layers"):
                config["model"].pop(key)
            (path / "config.json").write_text(json.dumps(config))
        back = checkpoint.load(path, spec=spec).model
        assert back.config == model.config and torch.equal(back(obs, prev).q, model(obs, prev).q)


@pytest.mark.parametrize("algo", ["dqn", "dt", "bc"])
def test_train_and_eval_with_feature_tokens(tmp_path, cartpole_data, algo):
    r = cli("train", "--algo", algo, "--data", cartpole_data, "--out", tmp_path / "ck", "--updates", "5",
            "--tokens", "feature", "--context", "4", "--n-embd", "8", "--readout", "mean")
    assert r.exit_code == 0, r.output
    meta = json.loads((tmp_path / "ck" / "config.json").read_text())["model"]
    assert (meta["tokens"], meta["readout"], meta["context"]) == ("feature", "mean", 4)
    r = cli("eval", tmp_path / "ck", "--episodes", "2")
    assert r.exit_code == 0, r.output


def test_ppo_runs_with_feature_tokens(tmp_path):
    cfg = RunConfig.create("CartPole-v1", "ppo", name="p", root=tmp_path, iterations=2, steps_per_iteration=256,
                           num_envs=4, eval_every=2, eval_episodes=2, epochs=1, tokens="feature", n_embd=8)
    report = run(cfg, log=lambda *_: None)
    assert report["iterations"] == 2
    assert checkpoint.load(tmp_path / "p" / "checkpoints" / "best").model.config.tokens == "feature"


def test_feature_tokens_learn_cartpole(tmp_path):
    # one iteration: 10k uniform-random steps, then 700 DQN updates of the default feature GPT
    # (context 8, width 32): 500.0 greedily (seed 0; with 1,000 updates seeds 0, 1, 2 scored 164,
    # 377 and 187); a random policy scores about 22, the untrained model about 9: a broken model
    # or mask stays near them
    cfg = RunConfig(name="learn", root=tmp_path, seed=0, iterations=1, steps_per_iteration=10_000,
                    eval_episodes=10, model=ModelArgs(tokens="feature"), learner=DQNConfig(updates=700))
    report = run(cfg, log=lambda *_: None)
    assert report["best"]["mean_return"] > 80, report


def test_windows_encode_each_step_once_with_the_same_outputs_and_gradients():
    model = feature_gpt()
    assert model.encodes_steps_once
    g = torch.Generator().manual_seed(2)
    obs, prev = torch.randn(20, 5, generator=g), torch.randint(0, 4, (7, 6), generator=g)
    index = np.minimum(np.arange(7)[:, None] * 2 + np.arange(6)[None, :], 19)  # overlapping windows
    steps, windows = distinct_steps(index)
    assert len(steps) == len(np.unique(index)) < index.size
    outputs = []
    for out in (lambda: model(obs[index], prev, last_only=True),
                lambda: on_windows(model, obs[steps], torch.from_numpy(windows), prev, None, last_only=True)):
        model.zero_grad()
        result = out()
        (result.q.sum() + result.logits.sum() + result.value.sum()).backward()
        outputs.append((result.value.detach(), [p.grad.clone() for p in model.parameters()]))
    torch.testing.assert_close(outputs[0][0], outputs[1][0])
    for a, b in zip(outputs[0][1], outputs[1][1], strict=True):
        torch.testing.assert_close(a, b)


def test_acting_encodes_each_step_once_and_acts_as_on_the_whole_window():
    """A policy keeps its envs' encoded contexts between calls; it gives what encoding every
    window anew gives, across episode starts, envs acting in turns and new weights."""
    model = feature_gpt()
    cached, anew = (ModelPolicy(model, 4, "sample", algo="ppo", seed=0) for _ in range(2))
    anew.encodes_steps_once = False
    rng = np.random.default_rng(0)
    for t in range(40):
        ids = np.sort(rng.choice(4, size=int(rng.integers(1, 5)), replace=False))
        obs, first = rng.normal(size=(len(ids), 5)).astype(np.float32), rng.random(len(ids)) < 0.1
        if t == 25:  # an update between rollouts: the stream says so, and the contexts are re-encoded
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(0.1)
            cached.new_weights()
        (a, logp, v), (a2, logp2, v2) = (p.act(obs, ids, first, np.zeros(len(ids))) for p in (cached, anew))
        np.testing.assert_array_equal(a, a2)
        np.testing.assert_allclose(logp, logp2, atol=1e-5)
        np.testing.assert_allclose(v, v2, atol=1e-5)


def test_the_attention_probe_reads_a_feature_model_across_its_features(tmp_path):
    """benchmarks/attention_probe.py on a committed CartPole feature checkpoint: the summary
    token's attention over the four features, per layer and head, from a real game."""
    repo = Path(__file__).parent.parent
    r = subprocess.run([sys.executable, str(repo / "benchmarks" / "attention_probe.py"), "--ckpt",
                        str(repo / "benchmarks/sweep/cartpole-ppo/checkpoints/gpt-feature-w8-s0"), "--episodes", "1",
                        "--plot", str(tmp_path / "a.png"), "--json", str(tmp_path / "a.json")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    found = json.loads((tmp_path / "a.json").read_text())
    attention = np.array(found["mean_attention"])  # (layers, heads, features)
    assert attention.shape == (2, 2, 4) and found["mode"] == "greedy" and found["steps"] > 100
    assert (attention > 0).all() and (attention.sum(-1) < 1).all()  # the rest: the summary token on itself
    assert found["features"] == ["cart position", "cart velocity", "pole angle", "pole angular velocity"]
    assert (tmp_path / "a.png").stat().st_size > 10_000
