"""`trl train` and `trl run`: train on a dataset; or loop collect -> train -> eval.

A run lives in runs/<name>/: data/ (the replay dataset), checkpoints/iter-NNN, evals/iter-NNN
(recorded greedy episodes), metrics.jsonl, reports/iter-NNN.json, report.json, curve.png,
state.json. state.json is written last in each iteration, so a crash resumes from the last
complete iteration: data collected after it is rolled back first.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from transformer_rl.collect.policies import ModelPolicy, RandomPolicy
from transformer_rl.collect.rollout import CollectConfig, collect
from transformer_rl.datasets.format import read_manifest, write_manifest
from transformer_rl.datasets.reader import Transitions, load
from transformer_rl.envs import EnvSpec, resolve
from transformer_rl.errors import UsageError
from transformer_rl.evaluate.evaluate import evaluate, write_report
from transformer_rl.models import build_model
from transformer_rl.train import checkpoint
from transformer_rl.train.dqn import DQNConfig, DQNState, new_state, train_dqn
from transformer_rl.train.ppo import PPOConfig, train_ppo


@dataclass
class ModelArgs:
    model: str = "gpt"  # gpt or mlp
    context: int = 8  # GPT window K (MLP: 1)
    n_layer: int = 2
    n_head: int = 2
    n_embd: int = 32
    hidden: int = 64  # MLP width

    def validate(self) -> None:
        if self.model not in ("gpt", "mlp"):
            raise UsageError(f"unknown --model {self.model!r}: use gpt or mlp")
        for name in ("context", "n_layer", "n_head", "n_embd", "hidden"):
            if getattr(self, name) <= 0:
                raise UsageError(f"--{name.replace('_', '-')} must be positive")
        if self.model == "gpt" and self.n_embd % self.n_head:
            raise UsageError(f"--n-embd {self.n_embd} must be a multiple of --n-head {self.n_head}")

    def config(self, spec: EnvSpec) -> dict[str, Any]:
        base = {"obs_dim": spec.obs_dim, "num_actions": spec.num_actions, "model": self.model}
        if self.model == "gpt":
            return {**base, "context": self.context, "n_layer": self.n_layer,
                    "n_head": self.n_head, "n_embd": self.n_embd}
        if self.model == "mlp":
            return {**base, "hidden": self.hidden, "n_layer": self.n_layer}
        raise UsageError(f"unknown --model {self.model!r}: use gpt or mlp")


def new_model(spec: EnvSpec, args: ModelArgs, data: Transitions, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_model(args.config(spec))
    if spec.obs_dtype == "uint8":  # RAM bytes: a fixed scale keeps never-seen bytes sane
        mean, std = np.zeros(spec.obs_dim), np.full(spec.obs_dim, 255.0)
    else:  # early (random-policy) data understates how far later states range (CartPole's x):
        # scale so that the data's extremes land within +-5, not only by the std
        mean = data.obs.mean(0)
        std = np.maximum(data.obs.std(0), np.abs(data.obs - mean).max(0) / 5) + 1e-3
    model.set_obs_normalization(torch.as_tensor(mean), torch.as_tensor(std))
    return model


@dataclass
class RunConfig:
    env: str = "CartPole-v1"
    algo: str = "dqn"
    name: str = "default"
    root: Path = Path("runs")
    seed: int = 0
    iterations: int = 20  # collect -> train -> eval cycles (at most; stops once solved)
    steps_per_iteration: int = 10_000  # env transitions recorded per iteration
    num_envs: int = 8
    eps_start: float = 1.0  # DQN: epsilon-greedy schedule over total env steps
    eps_end: float = 0.02
    eps_decay_steps: int = 40_000
    eval_episodes: int = 100
    stop_at: float | None = None  # stop once eval mean reaches this (default: env threshold)
    model: ModelArgs = field(default_factory=ModelArgs)
    dqn: DQNConfig = field(default_factory=DQNConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)

    def validate(self) -> None:
        self.model.validate()
        for name in ("iterations", "steps_per_iteration", "num_envs", "eval_episodes"):
            if getattr(self, name) <= 0:
                raise UsageError(f"--{name.replace('_', '-')} must be positive")
        if self.algo not in ("dqn", "ppo"):
            raise UsageError(f"unknown --algo {self.algo!r}: use dqn or ppo")
        if self.dqn.updates <= 0 or self.dqn.batch_size <= 0:
            raise UsageError("--updates and --batch-size must be positive")

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["root"] = str(self.root)
        return d


def new_learner(model: torch.nn.Module, cfg: RunConfig) -> DQNState:
    """Optimizer (and, for DQN, the target network) that persist across iterations."""
    if cfg.algo == "dqn":
        return new_state(model, cfg.dqn)
    return DQNState(torch.optim.Adam(model.parameters(), lr=cfg.ppo.lr, eps=1e-5), target=None)


def epsilon_at(cfg: RunConfig, env_steps: int) -> float:
    frac = min(1.0, env_steps / max(1, cfg.eps_decay_steps))
    return cfg.eps_start + frac * (cfg.eps_end - cfg.eps_start)


def _rollback(data_dir: Path, shards: int, segments: int) -> None:
    """Drop what a crashed iteration appended after the last complete one."""
    manifest = read_manifest(data_dir)
    extra = manifest["shards"][shards:]
    manifest["shards"] = manifest["shards"][:shards]
    manifest["segments"] = manifest["segments"][:segments]
    write_manifest(data_dir, manifest)
    for shard in extra:
        (data_dir / shard["file"]).unlink(missing_ok=True)


def run(cfg: RunConfig, *, log=print) -> dict[str, Any]:
    """The whole loop; resumes runs/<name> from its last complete iteration."""
    cfg.validate()
    spec = resolve(cfg.env)
    run_dir = cfg.root / cfg.name
    data_dir, state_path = run_dir / "data", run_dir / "state.json"
    stop_at = cfg.stop_at if cfg.stop_at is not None else _threshold(spec)
    state: dict[str, Any] = {"iteration": 0, "env_steps": 0, "best": None, "wall_s": 0.0}
    model = learner = None
    if state_path.exists():
        state = json.loads(state_path.read_text())
        saved = json.loads((run_dir / "config.json").read_text())
        if saved["env"] != cfg.env or saved["algo"] != cfg.algo:
            raise UsageError(f"{run_dir} is a {saved['env']} {saved['algo']} run; use another --name")
        _rollback(data_dir, state["shards"], state["segments"])
        ckpt = checkpoint.load(run_dir / "checkpoints" / f"iter-{state['iteration']:03d}", spec=spec)
        model = ckpt.model
        learner = new_learner(model, cfg)
        learner.optimizer.load_state_dict(ckpt.optimizer_state)
        learner.updates = ckpt.meta["counters"].get("updates", 0)
        log(f"resuming {run_dir} after iteration {state['iteration']}")
    elif run_dir.exists() and any(run_dir.iterdir()):
        raise UsageError(f"{run_dir} exists but holds no run state; choose another --name")
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(cfg.to_json(), indent=1) + "\n")
    torch.manual_seed(cfg.seed)
    while state["iteration"] < cfg.iterations and not state.get("solved"):
        it = state["iteration"] + 1
        t0 = time.perf_counter()
        seed = cfg.seed * 1000 + it * 10  # pool seeds differ per iteration; streams stay unique
        eps = 1.0 if model is None or cfg.algo == "ppo" else epsilon_at(cfg, state["env_steps"])
        if model is None:  # PPO: uniform random is a behaviour policy with known logp
            policy = RandomPolicy(spec.num_actions, seed, record_logp=cfg.algo == "ppo")
        else:
            policy = ModelPolicy(model, cfg.num_envs, "epsilon" if cfg.algo == "dqn" else "sample",
                                 algo=cfg.algo, epsilon=eps, seed=seed,
                                 describe={"iteration": it - 1, "checkpoint": f"iter-{it - 1:03d}"})
        rows_before = _rows(data_dir) if data_dir.exists() else 0
        collect_cfg = CollectConfig(steps=rows_before + cfg.steps_per_iteration,
                                    num_envs=cfg.num_envs, seed=seed)
        stats = collect(spec, data_dir, policy, collect_cfg, append=data_dir.exists())
        if cfg.algo == "dqn":  # the replay: the newest rows
            data = load(data_dir, newest_rows=cfg.dqn.replay_rows)
        else:  # on-policy: this iteration's rollouts only
            shards = read_manifest(data_dir)["shards"]
            data = load(data_dir, shards=[i for i, s in enumerate(shards) if s["segment"] == len(
                read_manifest(data_dir)["segments"]) - 1])
        if model is None:
            model = new_model(spec, cfg.model, data, cfg.seed)
            learner = new_learner(model, cfg)
            log(f"{cfg.model.model}: {model.num_params():,} parameters")
        t_collect = time.perf_counter() - t0
        if cfg.algo == "dqn":
            metrics = train_dqn(model, data, cfg.dqn, learner, seed=cfg.seed * 1000 + it)
        else:
            metrics = train_ppo(model, data, cfg.ppo, learner.optimizer, seed=cfg.seed * 1000 + it)
            learner.updates += metrics["charts/updates"]
        state["env_steps"] += stats.env_steps
        record = run_dir / "evals" / f"iter-{it:03d}"
        shutil.rmtree(record, ignore_errors=True)  # left by a crash inside this iteration
        record.parent.mkdir(exist_ok=True)
        report = evaluate(model, spec, cfg.algo, episodes=cfg.eval_episodes,
                          seed=10_000_000 + cfg.seed * 1000 + it, record=record)
        write_report(report, run_dir / "reports" / f"iter-{it:03d}.json")
        ckpt_dir = run_dir / "checkpoints" / f"iter-{it:03d}"
        checkpoint.save(ckpt_dir, model, spec, cfg.algo, optimizer=learner.optimizer,
                        counters={"iteration": it, "env_steps": state["env_steps"],
                                  "updates": learner.updates},
                        train_config=cfg.to_json())
        wall = time.perf_counter() - t0
        state["wall_s"] += wall
        row = {"iteration": it, "env_steps": state["env_steps"], "wall_s": round(state["wall_s"], 2),
               "charts/epsilon": round(eps, 4), "charts/collect_s": round(t_collect, 2),
               "charts/collect_return": float(np.mean(stats.returns)) if stats.returns else None,
               **metrics, "eval/mean_return": report["mean_return"],
               "eval/std_return": report["std_return"], "eval/episodes": report["episodes"]}
        with open(run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        if state["best"] is None or report["mean_return"] > state["best"]["mean_return"]:
            state["best"] = {"iteration": it, **report}
            _copy_dir(ckpt_dir, run_dir / "checkpoints" / "best")
        manifest = read_manifest(data_dir)
        state.update(iteration=it, shards=len(manifest["shards"]), segments=len(manifest["segments"]),
                     solved=bool(stop_at is not None and report["mean_return"] >= stop_at))
        _write_json(state_path, state)
        loss = metrics.get("losses/td_loss", metrics.get("losses/policy_loss", float("nan")))
        explore = f"eps {eps:.2f}" if cfg.algo == "dqn" else f"kl {metrics['losses/approx_kl']:.4f}"
        log(f"iter {it}: env steps {state['env_steps']:,}  {explore}  "
            f"loss {loss:.3f}  eval {report['mean_return']:.1f} "
            f"± {report['std_return']:.1f}  ({wall:.1f}s)")
        if stop_at is not None and report["mean_return"] >= stop_at:
            log(f"eval mean {report['mean_return']:.1f} >= {stop_at}: solved")
            break
    final = {"env": cfg.env, "algo": cfg.algo, "model": cfg.model.model, "seed": cfg.seed,
             "parameters": model.num_params() if model is not None else None,
             "iterations": state["iteration"], "env_steps": state["env_steps"],
             "wall_s": round(state["wall_s"], 2), "best": state["best"],
             "solved": bool(stop_at is not None and state["best"]
                            and state["best"]["mean_return"] >= stop_at),
             "stop_at": stop_at}
    _write_json(run_dir / "report.json", final)
    plot_curve(run_dir)
    return final


def _rows(data_dir: Path) -> int:
    return sum(s["rows"] for s in read_manifest(data_dir)["shards"])


def _threshold(spec: EnvSpec) -> float | None:
    from transformer_rl.envs import reward_threshold

    return reward_threshold(spec)


def _write_json(path: Path, obj: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1) + "\n")
    os.replace(tmp, path)


def _copy_dir(src: Path, dst: Path) -> None:
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    shutil.rmtree(dst, ignore_errors=True)
    os.replace(tmp, dst)


def plot_curve(run_dir: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return None
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    x = [r["env_steps"] for r in rows]
    y = np.array([r["eval/mean_return"] for r in rows])
    s = np.array([r["eval/std_return"] for r in rows])
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(x, y, marker="o")
    ax.fill_between(x, y - s, y + s, alpha=0.2)
    ax.set_xlabel("env steps")
    ax.set_ylabel("eval mean return")
    ax.set_title(run_dir.name)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out = run_dir / "curve.png"
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def train(
    data_dir: Path,
    out: Path,
    *,
    algo: str = "dqn",
    model_args: ModelArgs | None = None,
    dqn: DQNConfig | None = None,
    init: Path | None = None,
    seed: int = 0,
    progress=None,
) -> dict[str, Any]:
    """Train a new model (or continue ``init``) on a dataset; write the checkpoint to ``out``."""
    if algo != "dqn":
        raise UsageError(f"unknown --algo {algo!r}: use dqn")
    dqn = dqn or DQNConfig()
    if dqn.updates <= 0 or dqn.batch_size <= 0 or dqn.replay_rows <= 0:
        raise UsageError("--updates, --batch-size and --replay-rows must be positive")
    out = Path(out)
    if out.exists() and not (out / "config.json").is_file():
        raise UsageError(f"--out {out} exists and is not a checkpoint; choose another path")
    manifest = read_manifest(data_dir)
    spec = EnvSpec.from_json(manifest["env"])
    data = load(data_dir, newest_rows=dqn.replay_rows)
    if len(data) == 0:
        raise UsageError(f"{data_dir} holds no transitions; collect some first")
    counters: dict[str, Any] = {}
    if init is not None:
        ckpt = checkpoint.load(init, spec=spec)
        model, counters = ckpt.model, dict(ckpt.meta.get("counters", {}))
        state = new_state(model, dqn)
        if ckpt.optimizer_state is not None:
            state.optimizer.load_state_dict(ckpt.optimizer_state)
        state.updates = counters.get("updates", 0)
    else:
        model = new_model(spec, model_args or ModelArgs(), data, seed)
        state = new_state(model, dqn)
    metrics = train_dqn(model, data, dqn, state, seed=seed, progress=progress)
    counters["updates"] = state.updates
    checkpoint.save(out, model, spec, algo, optimizer=state.optimizer, counters=counters,
                    train_config={"dqn": dqn.to_json(), "data": str(data_dir), "seed": seed})
    return {"parameters": model.num_params(), **metrics, "checkpoint": str(out)}
