import numpy as np
import pytest
import torch

from transformer_rl.models import GPT, MLP, GPTConfig, MLPConfig, build_model, model_config_dict


def inputs(b=3, t=8, d=4, a=2):
    g = torch.Generator().manual_seed(0)
    return torch.randn(b, t, d, generator=g), torch.randint(0, a + 1, (b, t), generator=g)


def test_shapes_and_parameter_count():
    for model in (GPT(GPTConfig(4, 2, context=8)), MLP(MLPConfig(4, 2))):
        obs, prev = inputs()
        out = model(obs, prev)
        assert out.q.shape == (3, 8, 2) and out.logits.shape == (3, 8, 2) and out.value.shape == (3, 8)
        assert model.num_params() == sum(p.numel() for p in model.parameters())
        assert type(build_model(model_config_dict(model))) is type(model)


def test_gpt_is_causal():
    torch.manual_seed(0)
    model = GPT(GPTConfig(4, 2, context=8)).eval()
    obs, prev = inputs()
    base = model(obs, prev).q
    obs2 = obs.clone()
    obs2[:, 5] += 3.0
    changed = model(obs2, prev).q
    assert torch.allclose(base[:, :5], changed[:, :5], atol=1e-6)
    assert not torch.allclose(base[:, 5:], changed[:, 5:])


def test_left_padding_is_ignored_and_finite():
    torch.manual_seed(0)
    model = GPT(GPTConfig(4, 2, context=8)).eval()
    obs, prev = inputs()
    mask = torch.ones(3, 8, dtype=torch.bool)
    mask[:, :3] = False
    base = model(obs, prev, mask).q
    obs2, prev2 = obs.clone(), prev.clone()
    obs2[:, :3] = 100.0
    prev2[:, :3] = 0
    other = model(obs2, prev2, mask).q
    assert torch.isfinite(other).all()
    assert torch.allclose(base[:, 3:], other[:, 3:], atol=1e-5)


@pytest.mark.parametrize("n_layer,gated", [(1, False), (2, False), (3, True)])
def test_last_only_gives_the_full_forwards_last_position(n_layer, gated):
    """Acting and PPO ask for the last position only; the last block then runs one query. The
    answer must be the full forward's, with left padding and without a mask."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(obs_dim=5, num_actions=3, context=6, n_layer=n_layer, n_head=2, n_embd=16,
                          gated=gated))
    for p in model.parameters():  # away from the near-zero init, so every path matters
        torch.nn.init.normal_(p, std=0.3)
    obs, prev = torch.randn(7, 6, 5), torch.randint(0, 4, (7, 6))
    mask = torch.ones(7, 6, dtype=torch.bool)
    mask[:3, :2] = False
    for m in (mask, None):
        full, last = model(obs, prev, m), model(obs, prev, m, last_only=True)
        assert last.logits.shape == (7, 1, 3)
        for a, b in ((full.q, last.q), (full.logits, last.logits), (full.value, last.value)):
            torch.testing.assert_close(a[:, -1], b[:, -1], atol=1e-6, rtol=1e-5)
    mlp = MLP(MLPConfig(obs_dim=5, num_actions=3))
    torch.testing.assert_close(mlp(obs, prev).q[:, -1], mlp(obs, prev, last_only=True).q[:, -1])


def test_attention_maps_are_what_the_fused_attention_uses():
    torch.manual_seed(0)
    model = GPT(GPTConfig(4, 2, context=8, n_layer=2)).eval()
    obs, prev = inputs()
    mask = torch.ones(3, 8, dtype=torch.bool)
    mask[0, :3] = False
    for m in (mask, None):
        maps = model.attention(obs, prev, m)  # (L, B, H, T, T)
        assert maps.shape == (2, 3, 2, 8, 8)
        torch.testing.assert_close(maps.sum(-1), torch.ones(2, 3, 2, 8))
        assert maps.triu(1).abs().max() == 0  # causal
        # the first block's output, rebuilt from the maps, is the fused attention's
        x, attn_mask = model._tokens(model.encode(obs), prev, m, None, None)
        block = model.h[0]
        _, _, v = block.attn.c_attn(block.ln_1(x)).split(32, dim=2)
        v = v.view(3, 8, 2, 16).transpose(1, 2)
        mine = block.attn.c_proj((maps[0] @ v).transpose(1, 2).reshape(3, 8, 32))
        torch.testing.assert_close(mine, block.attn(block.ln_1(x), attn_mask), atol=1e-5, rtol=1e-5)
    assert model.attention(obs, prev, mask)[:, 0, :, 3:, :3].abs().max() == 0  # real steps never read padding


def test_mlp_positions_are_independent():
    model = MLP(MLPConfig(4, 2)).eval()
    obs, prev = inputs()
    obs2 = obs.clone()
    obs2[:, 2] += 1.0
    a, b = model(obs, prev).q, model(obs2, prev).q
    assert torch.allclose(a[:, [0, 1, 3, 4]], b[:, [0, 1, 3, 4]]) and not torch.allclose(a[:, 2], b[:, 2])


def test_mlp_with_stacked_history_sees_exactly_its_last_k_steps():
    from transformer_rl.models.mlp import stack_history

    x = torch.arange(1.0, 6.0).reshape(1, 5, 1)  # steps 1..5, one feature
    mask = torch.tensor([[False, True, True, True, True]])  # step 1 is left padding
    assert stack_history(x, mask, 3)[0].tolist() == [[0, 0, 0], [0, 0, 2], [0, 2, 3], [2, 3, 4], [3, 4, 5]]
    model = MLP(MLPConfig(4, 2, context=3)).eval()
    obs, prev = inputs()
    obs2 = obs.clone()
    obs2[:, 1] += 1.0  # reaches positions 1, 2 and 3 only
    a, b = model(obs, prev).q, model(obs2, prev).q
    assert torch.allclose(a[:, [0, 4]], b[:, [0, 4]]) and not torch.allclose(a[:, [1, 2, 3]], b[:, [1, 2, 3]])
    torch.testing.assert_close(model(obs, prev).q[:, -1], model(obs, prev, last_only=True).q[:, -1])


def test_obs_normalisation_is_saved_and_used():
    model = GPT(GPTConfig(4, 2, context=8)).eval()
    obs, prev = inputs()
    before = model(obs, prev).q
    model.set_obs_normalization(torch.full((4,), 1.0), torch.full((4,), 2.0))
    assert torch.equal(model.state_dict()["norm.obs_std"], torch.full((4,), 2.0))
    assert not torch.allclose(before, model(obs, prev).q)


def test_gpt_learns_a_task_that_needs_attention():
    # target at position t: sum of feature 0 over positions <= t; only attention can do it
    torch.manual_seed(0)
    model = GPT(GPTConfig(4, 2, context=8, n_embd=32))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(1)
    for _ in range(300):
        obs = torch.randn(64, 8, 4, generator=g)
        target = obs[..., 0].cumsum(1)
        loss = ((model(obs, torch.zeros(64, 8, dtype=torch.long)).value - target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    # the target's variance grows to ~8 at the last position; predicting 0 scores ~4.5
    assert loss.item() < 0.5, loss.item()


@pytest.mark.parametrize("ram_norm", ["fixed", "data"])
def test_ram_bytes_normalisation(breakout_data, ram_norm):
    from transformer_rl.datasets import load
    from transformer_rl.envs import resolve
    from transformer_rl.models import ModelArgs, new_model

    data = load(breakout_data)
    model = new_model(resolve("Breakout-ram"), ModelArgs(ram_norm=ram_norm), data, seed=0)
    mean, std = model.norm.obs_mean.numpy(), model.norm.obs_std.numpy()
    if ram_norm == "fixed":
        assert (mean == 0).all() and (std == 255).all()
    else:  # per byte, but never finer than 8 so that a byte constant so far cannot explode later
        assert np.allclose(mean, data.obs.mean(0), atol=1e-3) and std.min() >= 8
        assert (np.abs((data.obs - mean) / std) <= 5 + 1e-5).all()
