"""What does a trained GPT attend to when it acts? Across steps, or across a state's features.

Plays the checkpoint (as its run evaluated it: the train config's eval mode, else PPO samples
and DQN acts greedily; `--mode` overrides) and records, at
every step, each layer's and head's attention from the acting position:
- step tokens: to the K steps of its window, with the ball's and the paddle's positions read
  from the RAM (AtariARI's annotation of Breakout: ball_x = ram[99], ball_y = ram[101] (grows
  downward; ~185-190 at the paddle), paddle_x = ram[72]). "Near the paddle" = the ball
  descending with ball_y in [160, 200): the moments before a catch or a miss. Only steps with a
  full window count, so offsets compare across steps.
- feature tokens (`--tokens feature`, summary readout): the summary token's attention across the
  acting step's D features (which RAM bytes, or which of CartPole's four numbers, the policy
  reads), per layer and head, and the features that draw the most of it.

  .venv/bin/python benchmarks/attention_probe.py --ckpt docs/checkpoints/breakout-ppo-gpt \
      --episodes 5 --plot docs/breakout_attention.png --json docs/breakout_attention.json
  .venv/bin/python benchmarks/attention_probe.py --ckpt benchmarks/sweep/cartpole-ppo/checkpoints/gpt-feature-w24-s0 \
      --episodes 5 --plot docs/cartpole_feature_attention.png --json docs/cartpole_feature_attention.json
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
NAMES = {"CartPole-v1": ["cart position", "cart velocity", "pole angle", "pole angular velocity"],
         "Breakout-ram": {BALL_X: "ball_x", BALL_Y: "ball_y", PADDLE_X: "paddle_x"}}


def play(ckpt: Path, episodes: int, seed: int, mode: str | None) -> dict:
    """Every step's observation and the acting position's attention: (L, H, K) across the window's
    steps for step tokens, (L, H, D) from the summary token across the step's features."""
    loaded = checkpoint.load(ckpt, optimizer=False)
    model, spec = loaded.model.eval(), loaded.spec
    tokens = getattr(model.config, "tokens", "step")
    if loaded.algo.value not in ("ppo", "dqn"):
        raise SystemExit(f"{ckpt} is a {loaded.algo.value} checkpoint; this probe plays PPO and DQN ones")
    if tokens == "step" and spec.env_id != "Breakout-ram":
        raise SystemExit(f"{ckpt} plays {spec.env_id}; the probe across steps labels Breakout-ram's RAM "
                         "(ball and paddle), so give a Breakout-ram checkpoint")
    if tokens != "step" and getattr(model.config, "readout", None) != "summary":
        raise SystemExit(f"{ckpt} reads its features out by {model.config.readout}; this probe reads the summary "
                         "token's attention (--readout summary)")
    k = model.config.context
    pool = make_pool(spec, 1, seed)
    obs, info = pool.reset()
    ppo = loaded.algo.value == "ppo"
    mode = mode or loaded.meta.get("train_config", {}).get("eval_mode") or ("sample" if ppo else "greedy")
    policy = ModelPolicy(model, 1, mode, algo=loaded.algo.value, acts_on="policy" if ppo else "q", seed=seed)
    first, reward = np.array([True]), np.zeros(1, np.float32)
    rows: dict[str, list] = {"obs": [], "attention": [], "full": [], "episode": [], "reward": []}
    done = 0
    while done < episodes:
        obs = info["ram"] if spec.is_ram else obs
        action, _, _ = policy.act(obs, np.array([0]), first, reward)
        mask = np.arange(k) >= k - policy.ctx_len[0]
        maps = model.attention(torch.from_numpy(policy.ctx_obs[:1]), torch.from_numpy(policy.ctx_prev[:1]),
                               torch.from_numpy(mask[None]))
        # step tokens (L, 1, H, K, K): the acting position's row; feature tokens (L, 1, K, H, D + 1,
        # D + 1): the acting step's summary token (last) across the D features
        rows["attention"].append((maps[:, 0, :, -1, :] if tokens == "step" else maps[:, 0, -1, :, -1, :-1]).numpy())
        rows["obs"].append(obs[0].copy())
        rows["full"].append(bool(mask.all()))
        rows["episode"].append(done)
        obs, reward, term, trunc, info = pool.step(action)
        rows["reward"].append(float(reward[0]))
        first = info["elapsed_step"] == 0
        done += int(term[0] or trunc[0])
    pool.close()
    return {"tokens": tokens, "env": spec.env_id, "mode": mode, **{key: np.array(value) for key, value in rows.items()}}


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
    p.add_argument("--mode", choices=["greedy", "sample"], help="how the policy acts (default: as its run evaluated)")
    a = p.parse_args()
    rec = play(a.ckpt, a.episodes, a.seed, a.mode)
    if rec["tokens"] != "step":
        return across_features(a, rec)
    across_steps(a, rec)


def returns(rec: dict, episodes: int) -> list[float]:
    return [float(rec["reward"][rec["episode"] == e].sum()) for e in range(episodes)]


def across_features(a: argparse.Namespace, rec: dict) -> None:
    att = rec["attention"]  # (N, L, H, D): the summary token's attention across the features
    n_layer, n_head, d = att.shape[1:]
    names = NAMES.get(rec["env"], {})
    label = [names[i] if isinstance(names, list) else names.get(i, f"byte {i}") for i in range(d)]
    mean = att.mean(0)  # (L, H, D)
    top = {f"layer {layer + 1}": [[label[i], round(float(mean[layer].mean(0)[i]), 4)]
                                  for i in np.argsort(-mean[layer].mean(0))[:10]] for layer in range(n_layer)}
    summary = {"checkpoint": str(a.ckpt), "episodes": a.episodes, "seed": a.seed, "mode": rec["mode"],
               "steps": int(len(att)), "returns": returns(rec, a.episodes), "features": label,
               "mean_attention": np.round(mean, 4).tolist(), "top_features_heads_averaged": top,
               "note": "[layer][head][feature]: the summary token's attention; uniform = 1 / (D + 1) each, "
                       "the rest on itself"}
    a.json.write_text(json.dumps(summary, indent=1) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(n_layer, 1, figsize=(max(6, 0.12 * d + 4), 3 * n_layer), squeeze=False)
    for layer, ax in enumerate(axes[:, 0]):
        width = 0.8 / n_head
        for head in range(n_head):
            ax.bar(np.arange(d) + head * width, mean[layer, head], width, label=f"head {head + 1}")
        ax.axhline(1 / (d + 1), color="grey", lw=0.8, ls="--", label="uniform")
        ax.set_title(f"layer {layer + 1}: the summary token's mean attention per feature")
        ax.set_xticks(np.arange(d) + 0.4 - width / 2, label if d <= 16 else [""] * d)
        ax.grid(alpha=0.3, axis="y")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(f"{a.ckpt}: {summary['steps']:,} steps, {a.episodes} episodes, returns "
                 f"{', '.join(f'{r:g}' for r in summary['returns'])}", fontsize=9)
    fig.tight_layout()
    fig.savefig(a.plot, dpi=100)
    print(json.dumps({key: summary[key] for key in ("steps", "returns", "top_features_heads_averaged")}, indent=1))
    print(f"plot: {a.plot}; figures: {a.json}")


def across_steps(a: argparse.Namespace, rec: dict) -> None:
    att = rec["attention"]  # (N, L, H, K), the window's positions oldest first
    n_layer, n_head, k = att.shape[1:]
    full = rec["full"]
    groups = {name: m & full for name, m in moments(rec["obs"], rec["episode"]).items()}
    # by offset: 0 = the acting step itself, j = j steps before it
    by_offset = {name: att[m][..., ::-1].mean(0) for name, m in groups.items()}  # (L, H, K)
    summary = {
        "checkpoint": str(a.ckpt), "episodes": a.episodes, "seed": a.seed, "steps": int(len(att)),
        "returns": returns(rec, a.episodes),
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
    y = rec["obs"][span, BALL_Y] / 210 * (k - 1)
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
