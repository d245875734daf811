"""Which past steps does a trained Breakout-ram GPT attend to when it acts? A first probe.

Plays the checkpoint (sampling, as its evaluation does) and, at every step, records each layer's
and head's attention from the acting position (the window's last) to the K steps of the window,
with the ball's and the paddle's positions read from the RAM (AtariARI's annotation of Breakout:
ball_x = ram[99], ball_y = ram[101] (grows downward; ~185-190 at the paddle), paddle_x = ram[72]).
"Near the paddle" = the ball descending with ball_y in [160, 200): the moments before a catch or
a miss. Only steps with a full window count, so offsets compare across steps.

  .venv/bin/python benchmarks/attention_probe.py --ckpt docs/checkpoints/breakout-ppo-gpt \
      --episodes 5 --plot docs/breakout_attention.png --json docs/breakout_attention.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from transformer_rl.collect.policies import ModelPolicy
from transformer_rl.envs import make_pool
from transformer_rl.train import checkpoint

BALL_X, BALL_Y, PADDLE_X = 99, 101, 72


def play(ckpt: Path, episodes: int, seed: int) -> dict[str, np.ndarray]:
    loaded = checkpoint.load(ckpt, optimizer=False)
    model, spec = loaded.model.eval(), loaded.spec
    if getattr(model.config, "tokens", "step") != "step":  # its maps are across features, not steps
        raise SystemExit(f"{ckpt} has {model.config.tokens} tokens; this probe reads attention across steps "
                         "(GPT.attention gives a feature model's maps across features)")
    k = model.config.context
    pool = make_pool(spec, 1, seed)
    _, info = pool.reset()
    policy = ModelPolicy(model, 1, "sample", algo="ppo", seed=seed)
    first, reward = np.array([True]), np.zeros(1, np.float32)
    rows: dict[str, list] = {"ram": [], "attention": [], "full": [], "episode": [], "reward": []}
    done = 0
    while done < episodes:
        ram = info["ram"]
        action, _, _ = policy.act(ram, np.array([0]), first, reward)
        mask = np.arange(k) >= k - policy.ctx_len[0]
        maps = model.attention(torch.from_numpy(policy.ctx_obs[:1]), torch.from_numpy(policy.ctx_prev[:1]),
                               torch.from_numpy(mask[None]))  # (L, 1, H, K, K)
        rows["attention"].append(maps[:, 0, :, -1, :].numpy())  # (L, H, K): the acting position's
        rows["ram"].append(ram[0].copy())
        rows["full"].append(bool(mask.all()))
        rows["episode"].append(done)
        _, reward, term, trunc, info = pool.step(action)
        rows["reward"].append(float(reward[0]))
        first = info["elapsed_step"] == 0
        done += int(term[0] or trunc[0])
    pool.close()
    return {key: np.array(value) for key, value in rows.items()}


def moments(ram: np.ndarray, episode: np.ndarray) -> dict[str, np.ndarray]:
    y = ram[:, BALL_Y].astype(int)
    descending = np.zeros(len(y), bool)
    descending[1:] = (np.diff(y) > 0) & (episode[1:] == episode[:-1])
    in_play = y > 0
    return {"near paddle": descending & (y >= 160) & (y < 200),
            "ball far (y < 120)": in_play & (y < 120),
            "all": np.ones(len(y), bool)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", type=Path, default=Path("docs/checkpoints/breakout-ppo-gpt"))
    p.add_argument("--episodes", type=int, default=5)
    p.add_argument("--seed", type=int, default=123456789)
    p.add_argument("--plot", type=Path, default=Path("docs/breakout_attention.png"))
    p.add_argument("--json", type=Path, default=Path("docs/breakout_attention.json"))
    a = p.parse_args()
    rec = play(a.ckpt, a.episodes, a.seed)
    att = rec["attention"]  # (N, L, H, K), the window's positions oldest first
    n_layer, n_head, k = att.shape[1:]
    full = rec["full"]
    groups = {name: m & full for name, m in moments(rec["ram"], rec["episode"]).items()}
    # by offset: 0 = the acting step itself, j = j steps before it
    by_offset = {name: att[m][..., ::-1].mean(0) for name, m in groups.items()}  # (L, H, K)
    summary = {
        "checkpoint": str(a.ckpt), "episodes": a.episodes, "seed": a.seed, "steps": int(len(att)),
        "returns": [float(rec["reward"][rec["episode"] == e].sum()) for e in range(a.episodes)],
        "steps_per_group": {name: int(m.sum()) for name, m in groups.items()},
        "mean_attention_by_offset": {name: np.round(v, 4).tolist() for name, v in by_offset.items()},
        "note": "[layer][head][offset]; offset 0 = the acting step, j = j steps earlier",
    }
    a.json.write_text(json.dumps(summary, indent=1) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(4 * n_layer * n_head, 8))
    grid = fig.add_gridspec(2, n_layer * n_head)
    for layer in range(n_layer):
        for head in range(n_head):
            ax = fig.add_subplot(grid[0, layer * n_head + head])
            for (name, values), style in zip(by_offset.items(), ("o-", "s--", ":"), strict=True):
                ax.plot(range(k), values[layer, head], style, label=f"{name} ({summary['steps_per_group'][name]})")
            ax.set_title(f"layer {layer + 1}, head {head + 1}")
            ax.set_xlabel("steps before the acting step")
            ax.set_ylabel("mean attention")
            ax.set_ylim(0, 1)
            ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    # one stretch of the first episode: last layer's attention (heads averaged) by offset, over time
    ax = fig.add_subplot(grid[1, :])
    span = np.flatnonzero(rec["episode"] == 0)[:300]
    heat = att[span, -1].mean(1)[..., ::-1].T  # (K, steps)
    ax.imshow(heat, aspect="auto", cmap="viridis", origin="lower", vmin=0, vmax=0.5,
              extent=(span[0], span[-1] + 1, -0.5, k - 0.5))
    ax.set_ylabel(f"layer {n_layer}: steps back\n(colour: attention, 0-0.5)")
    ax.set_xlabel("step of episode 1 (white: ball_y, scaled; red ticks: near the paddle)")
    y = rec["ram"][span, BALL_Y] / 210 * (k - 1)
    ax.plot(span + 0.5, y, color="white", lw=0.8)
    near = span[groups["near paddle"][span]]
    ax.scatter(near + 0.5, np.full(len(near), k - 0.7), color="red", marker="|", s=30)
    fig.suptitle(f"{a.ckpt}: attention of the acting position over {summary['steps']:,} steps "
                 f"({a.episodes} episodes, returns {', '.join(f'{r:g}' for r in summary['returns'])})")
    fig.tight_layout()
    fig.savefig(a.plot, dpi=100)
    print(json.dumps({key: summary[key] for key in ("steps", "returns", "steps_per_group")}))
    for name, values in by_offset.items():
        print(name, "layer/head -> attention at offsets 0..K-1:")
        for layer in range(n_layer):
            for head in range(n_head):
                print(f"  L{layer + 1}H{head + 1}: " + " ".join(f"{v:.2f}" for v in values[layer, head]))
    print(f"plot: {a.plot}; figures: {a.json}")


if __name__ == "__main__":
    main()
