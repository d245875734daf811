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
from transformer_rl.collect.rollout import CollectConfig, Collector, collect
from transformer_rl.datasets.format import read_manifest, write_manifest
from transformer_rl.datasets.reader import Transitions, load
from transformer_rl.envs import EnvSpec, resolve
from transformer_rl.errors import UsageError
from transformer_rl.evaluate.evaluate import evaluate, write_report
from transformer_rl.models import build_model
from transformer_rl.train import checkpoint
from transformer_rl.train.dqn import DQNConfig, DQNState, new_state, train_dqn
from transformer_rl.train.ppo import PPOConfig, rollout_transitions, train_ppo


@dataclass
class ModelArgs:
    model: str = "gpt"  # gpt or mlp
    context: int = 8  # GPT window K (MLP: 1)
    n_layer: int = 2
    n_head: int = 2
    n_embd: int = 32
    hidden: int = 64  # MLP width
    ram_norm: str = "data"  # uint8 observations: "data" (per byte, from the first data) or "fixed" (/255)

    def validate(self) -> None:
        if self.model not in ("gpt", "mlp"):
            raise UsageError(f"unknown --model {self.model!r}: use gpt or mlp")
        for name in ("context", "n_layer", "n_head", "n_embd", "hidden"):
            if getattr(self, name) <= 0:
                raise UsageError(f"--{name.replace('_', '-')} must be positive")
        if self.ram_norm not in ("fixed", "data"):
            raise UsageError(f"unknown --ram-norm {self.ram_norm!r}: use fixed or data")
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
    obs = data.obs.astype(np.float64)
    if spec.obs_dtype == "uint8" and args.ram_norm == "fixed":  # a fixed scale: bytes never seen
        mean, std = np.zeros(spec.obs_dim), np.full(spec.obs_dim, 255.0)  # early stay sane
    else:  # early (random-policy) data understates how far later states range (CartPole's x):
        # scale so that the data's extremes land within +-5, not only by the std
        mean = obs.mean(0)
        std = np.maximum(obs.std(0), np.abs(obs - mean).max(0) / 5)
        # bytes: at least 8 (a byte constant in the first data may move later)
        std = np.maximum(std, 8.0) if spec.obs_dtype == "uint8" else std + 1e-3
    model.set_obs_normalization(torch.as_tensor(mean), torch.as_tensor(std))
    return model


@dataclass
class RunConfig:
    env: str = "CartPole-v1"
    algo: str = "dqn"
    name: str = "default"
    root: Path = Path("runs")
    seed: int = 0
    # None below: the preset for this env family and algorithm (see PRESETS)
    iterations: int | None = None  # collect -> train cycles (at most; stops once solved)
    steps_per_iteration: int | None = None  # env steps collected per iteration
    num_envs: int | None = None
    eval_every: int | None = None  # evaluate (and checkpoint) every this many iterations
    eval_episodes: int | None = None
    eval_mode: str | None = None  # greedy or sample (from the policy; PPO only)
    eps_start: float = 1.0  # DQN: epsilon-greedy schedule over total env steps
    eps_end: float = 0.02
    eps_decay_steps: int = 40_000
    stop_at: float | None = None  # stop once eval mean reaches this (default: env threshold)
    model: ModelArgs = field(default_factory=ModelArgs)
    dqn: DQNConfig = field(default_factory=DQNConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)

    def resolve_presets(self, spec: EnvSpec) -> None:
        preset = PRESETS[(self.algo, "atari" if spec.is_ram else "classic")]
        for target, values in ((self, preset), (self.ppo, preset.get("ppo", {}))):
            for key, value in values.items():
                if key != "ppo" and getattr(target, key) is None:
                    setattr(target, key, value)

    def validate(self) -> None:
        self.model.validate()
        if self.algo not in ("dqn", "ppo"):
            raise UsageError(f"unknown --algo {self.algo!r}: use dqn or ppo")
        for name in ("iterations", "steps_per_iteration", "num_envs", "eval_episodes", "eval_every"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise UsageError(f"--{name.replace('_', '-')} must be positive")
        if self.eval_mode not in (None, "greedy", "sample"):
            raise UsageError(f"unknown --eval-mode {self.eval_mode!r}: use greedy or sample")
        if self.eval_mode == "sample" and self.algo != "ppo":
            raise UsageError("--eval-mode sample needs a policy: use it with --algo ppo")
        if self.dqn.updates <= 0 or self.dqn.batch_size <= 0:
            raise UsageError("--updates and --batch-size must be positive")

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["root"] = str(self.root)
        return d


# Defaults per (algorithm, env family); any option given on the command line wins.
PRESETS: dict[tuple[str, str], dict[str, Any]] = {
    # DQN: 10k steps of epsilon-greedy play, then 1000 updates on the newest 100k rows
    ("dqn", "classic"): dict(iterations=20, steps_per_iteration=10_000, num_envs=8, eval_every=1,
                             eval_episodes=100, eval_mode="greedy"),
    ("dqn", "atari"): dict(iterations=100, steps_per_iteration=20_000, num_envs=16, eval_every=5,
                           eval_episodes=16, eval_mode="greedy"),
    # PPO: rollouts of 128 steps per env; episodes carry on across iterations
    ("ppo", "classic"): dict(iterations=146, steps_per_iteration=1024, num_envs=8, eval_every=5,
                             eval_episodes=100, eval_mode="greedy", ppo=dict(lr=PPOConfig.lr)),
    # Breakout & co: 32 envs, sampled evaluation (a greedy policy can stall, never pressing FIRE
    # to serve); in training only, clipped rewards and a lost life ends the return; ~2M env steps
    ("ppo", "atari"): dict(iterations=488, steps_per_iteration=4096, num_envs=32, eval_every=25,
                           eval_episodes=16, eval_mode="sample",
                           ppo=dict(lr=1e-3, reward_clip=True, episodic_life=True)),
}


def new_learner(model: torch.nn.Module, cfg: RunConfig) -> DQNState:
    """Optimizer (and, for DQN, the target network) that persist across iterations."""
    if cfg.algo == "dqn":
        return new_state(model, cfg.dqn)
    return DQNState(torch.optim.Adam(model.parameters(), lr=cfg.ppo.lr, eps=1e-5), target=None)


def epsilon_at(cfg: RunConfig, env_steps: int) -> float:
    frac = min(1.0, env_steps / max(1, cfg.eps_decay_steps))
    return cfg.eps_start + frac * (cfg.eps_end - cfg.eps_start)


def _rollback(run_dir: Path, state: dict[str, Any]) -> None:
    """Drop what a crashed iteration appended after the last complete one."""
    data_dir = run_dir / "data"
    manifest = read_manifest(data_dir)
    extra = manifest["shards"][state["shards"]:]
    manifest["shards"] = manifest["shards"][: state["shards"]]
    manifest["segments"] = manifest["segments"][: state["segments"]]
    write_manifest(data_dir, manifest)
    for shard in extra:
        (data_dir / shard["file"]).unlink(missing_ok=True)
    metrics = run_dir / "metrics.jsonl"
    if metrics.exists():
        rows = [line for line in metrics.read_text().splitlines()
                if line.strip() and json.loads(line)["iteration"] <= state["iteration"]]
        metrics.write_text("".join(line + "\n" for line in rows))


def run(cfg: RunConfig, *, log=print) -> dict[str, Any]:
    """The whole loop; resumes runs/<name> from its last complete iteration."""
    cfg.validate()
    spec = resolve(cfg.env)
    cfg.resolve_presets(spec)
    cfg.validate()
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
        _rollback(run_dir, state)
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
    ppo_stream = None  # PPO: the collector and policy that carry on across iterations
    t_last = time.perf_counter()
    try:
        while state["iteration"] < cfg.iterations and not state.get("solved"):
            it = state["iteration"] + 1
            t0 = time.perf_counter()
            if cfg.algo == "dqn":
                model, learner, stats, metrics, eps = _dqn_iteration(cfg, spec, data_dir, it, state,
                                                                     model, learner, log)
            else:
                if ppo_stream is None:
                    ppo_stream = _PPOStream(cfg, spec, data_dir, it, model)
                model, learner, stats, metrics = ppo_stream.iteration(it, learner, log)
                eps = None
            state["env_steps"] += stats["env_steps"]
            row = {"iteration": it, "env_steps": state["env_steps"],
                   "charts/collect_s": round(stats["collect_s"], 2),
                   "charts/collect_return": stats["mean_return"], **metrics}
            if eps is not None:
                row["charts/epsilon"] = round(eps, 4)
            evaluate_now = it % cfg.eval_every == 0 or it == cfg.iterations
            if evaluate_now:
                if ppo_stream is not None:
                    ppo_stream.collector.flush()  # finished episodes are listed before the state
                report = _evaluate_and_save(cfg, spec, run_dir, it, state, model, learner)
                row.update({"eval/mean_return": report["mean_return"],
                            "eval/std_return": report["std_return"], "eval/episodes": report["episodes"]})
            now = time.perf_counter()
            state["wall_s"] += now - t_last
            t_last = now
            row["wall_s"] = round(state["wall_s"], 2)
            with open(run_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")
            if evaluate_now:
                manifest = read_manifest(data_dir)
                state.update(iteration=it, shards=len(manifest["shards"]),
                             segments=len(manifest["segments"]),
                             solved=bool(stop_at is not None and report["mean_return"] >= stop_at))
                _write_json(state_path, state)
                loss = metrics.get("losses/td_loss", metrics.get("losses/policy_loss", float("nan")))
                explore = f"eps {eps:.2f}" if eps is not None else f"kl {metrics['losses/approx_kl']:.4f}"
                log(f"iter {it}: env steps {state['env_steps']:,}  {explore}  loss {loss:.3f}  "
                    f"eval {report['mean_return']:.1f} ± {report['std_return']:.1f}  "
                    f"({now - t0:.1f}s)")
                if state["solved"]:
                    log(f"eval mean {report['mean_return']:.1f} >= {stop_at}: solved")
            else:
                state["iteration"] = it  # in memory only: a crash resumes from the last evaluation
    finally:
        if ppo_stream is not None:
            ppo_stream.collector.close()
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


def _dqn_iteration(cfg: RunConfig, spec: EnvSpec, data_dir: Path, it: int, state: dict[str, Any],
                   model, learner, log):
    """Collect a fresh batch of episodes epsilon-greedily, then train on the newest replay rows."""
    t0 = time.perf_counter()
    seed = _pool_seed(cfg, it)
    eps = 1.0 if model is None else epsilon_at(cfg, state["env_steps"])
    if model is None:
        policy = RandomPolicy(spec.num_actions, seed)
    else:
        policy = ModelPolicy(model, cfg.num_envs, "epsilon", algo="dqn", epsilon=eps, seed=seed,
                             describe={"iteration": it - 1, "checkpoint": f"iter-{it - 1:03d}"})
    rows_before = _rows(data_dir) if data_dir.exists() else 0
    collect_cfg = CollectConfig(steps=rows_before + cfg.steps_per_iteration, num_envs=cfg.num_envs, seed=seed)
    stats = collect(spec, data_dir, policy, collect_cfg, append=data_dir.exists())
    data = load(data_dir, newest_rows=cfg.dqn.replay_rows)
    if model is None:
        model = new_model(spec, cfg.model, data, cfg.seed)
        learner = new_learner(model, cfg)
        log(f"{cfg.model.model}: {model.num_params():,} parameters")
    collect_s = time.perf_counter() - t0
    metrics = train_dqn(model, data, cfg.dqn, learner, seed=cfg.seed * 1000 + it)
    summary = {"env_steps": stats.env_steps, "collect_s": collect_s,
               "mean_return": float(np.mean(stats.returns)) if stats.returns else None}
    return model, learner, summary, metrics, eps


class _PPOStream:
    """PPO's side of `run`: one pool whose episodes carry on across iterations; each iteration
    plays ``steps_per_iteration`` env steps with the current policy and trains on them."""

    def __init__(self, cfg: RunConfig, spec: EnvSpec, data_dir: Path, it: int, model):
        self.cfg, self.spec = cfg, spec
        seed = _pool_seed(cfg, it)  # a resumed run starts new streams
        # the K steps before a rollout's first row, and one more so that the first of them
        # has its previous action: every learned row then sees the window it acted on
        context = (cfg.model.context if cfg.model.model == "gpt" else 1) + 1
        producer = {"policy": "ppo-sample", "first_iteration": it,
                    "note": "uniform random in iteration 1, then the policy as it trains"}
        self.collector = Collector(spec, data_dir, CollectConfig(num_envs=cfg.num_envs, seed=seed),
                                   producer=producer, append=data_dir.exists(), trace_context=context)
        self.seed = seed
        self.policy = None if model is None else self._policy(model)

    def _policy(self, model) -> ModelPolicy:
        return ModelPolicy(model, self.cfg.num_envs, "sample", algo="ppo", seed=self.seed)

    def iteration(self, it: int, learner, log):
        cfg, t0 = self.cfg, time.perf_counter()
        returns_before = len(self.collector.finished_returns)
        steps_before = self.collector.stats.env_steps
        policy = self.policy or RandomPolicy(self.spec.num_actions, self.seed, record_logp=True)
        trace = self.collector.play(policy, env_steps=cfg.steps_per_iteration)
        data, learn, life_lost = rollout_transitions(trace)
        model = self.policy.model if self.policy is not None else None
        if model is None:
            model = new_model(self.spec, cfg.model, data, cfg.seed)
            learner = new_learner(model, cfg)
            self.policy = self._policy(model)
            log(f"{cfg.model.model}: {model.num_params():,} parameters")
        collect_s = time.perf_counter() - t0
        metrics = train_ppo(model, data, cfg.ppo, learner.optimizer, seed=cfg.seed * 1000 + it,
                            learn=learn, life_lost=life_lost)
        learner.updates += metrics["charts/updates"]
        returns = self.collector.finished_returns[returns_before:]
        summary = {"env_steps": self.collector.stats.env_steps - steps_before, "collect_s": collect_s,
                   "mean_return": float(np.mean(returns)) if returns else None}
        return model, learner, summary, metrics


def _evaluate_and_save(cfg: RunConfig, spec: EnvSpec, run_dir: Path, it: int, state: dict[str, Any],
                       model, learner) -> dict[str, Any]:
    record = run_dir / "evals" / f"iter-{it:03d}"
    shutil.rmtree(record, ignore_errors=True)  # left by a crash inside this iteration
    record.parent.mkdir(exist_ok=True)
    report = evaluate(model, spec, cfg.algo, episodes=cfg.eval_episodes, mode=cfg.eval_mode,
                      seed=10_000_000 + cfg.seed * 1000 + it, record=record)
    write_report(report, run_dir / "reports" / f"iter-{it:03d}.json")
    ckpt_dir = run_dir / "checkpoints" / f"iter-{it:03d}"
    checkpoint.save(ckpt_dir, model, spec, cfg.algo, optimizer=learner.optimizer,
                    counters={"iteration": it, "env_steps": state["env_steps"], "updates": learner.updates},
                    train_config=cfg.to_json())
    if state["best"] is None or report["mean_return"] > state["best"]["mean_return"]:
        state["best"] = {"iteration": it, **report, "run_env_steps": state["env_steps"]}
        _copy_dir(ckpt_dir, run_dir / "checkpoints" / "best")
    return report


def _pool_seed(cfg: RunConfig, it: int) -> int:
    """The pool seed of iteration ``it``: env i plays seed + i, so iterations' streams never
    overlap within a run."""
    return cfg.seed * 1000 + it * max(10, cfg.num_envs)


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
    rows = [r for r in rows if r.get("eval/mean_return") is not None]
    if not rows:
        return None
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
    ppo: PPOConfig | None = None,
    init: Path | None = None,
    seed: int = 0,
    progress=None,
) -> dict[str, Any]:
    """Train a new model (or continue ``init``) on a dataset's newest rows; write the checkpoint
    to ``out``. PPO learns from the rows that recorded their behaviour policy's logp."""
    if algo not in ("dqn", "ppo"):
        raise UsageError(f"unknown --algo {algo!r}: use dqn or ppo")
    dqn, ppo = dqn or DQNConfig(), ppo or PPOConfig()
    if dqn.updates <= 0 or dqn.batch_size <= 0 or dqn.replay_rows <= 0 or ppo.epochs <= 0:
        raise UsageError("--updates, --batch, --replay-rows and --epochs must be positive")
    out = Path(out)
    if out.exists() and not (out / "config.json").is_file():
        raise UsageError(f"--out {out} exists and is not a checkpoint; choose another path")
    manifest = read_manifest(data_dir)
    spec = EnvSpec.from_json(manifest["env"])
    data = load(data_dir, newest_rows=dqn.replay_rows)
    if len(data) == 0:
        raise UsageError(f"{data_dir} holds no transitions; collect some first")
    learn = np.isfinite(data.logp)
    if algo == "ppo" and not learn.any():
        raise UsageError(f"{data_dir} records no behaviour logp, which PPO needs; train PPO on a "
                         "`trl run --algo ppo` dataset, or use --algo dqn")
    counters: dict[str, Any] = {}
    if init is not None:
        ckpt = checkpoint.load(init, spec=spec)
        model, counters = ckpt.model, dict(ckpt.meta.get("counters", {}))
    else:
        model = new_model(spec, model_args or ModelArgs(), data, seed)
    cfg = RunConfig(algo=algo, dqn=dqn, ppo=ppo)
    learner = new_learner(model, cfg)
    if init is not None and ckpt.optimizer_state is not None and ckpt.algo == algo:
        learner.optimizer.load_state_dict(ckpt.optimizer_state)
        learner.updates = counters.get("updates", 0)
    if algo == "dqn":
        metrics = train_dqn(model, data, dqn, learner, seed=seed, progress=progress)
    else:
        metrics = train_ppo(model, data, ppo, learner.optimizer, seed=seed, learn=learn)
        learner.updates += metrics["charts/updates"]
    counters["updates"] = learner.updates
    checkpoint.save(out, model, spec, algo, optimizer=learner.optimizer, counters=counters,
                    train_config={algo: (dqn if algo == "dqn" else ppo).to_json(), "data": str(data_dir),
                                  "seed": seed})
    return {"parameters": model.num_params(), **metrics, "checkpoint": str(out)}
