"""`trl run`: collect -> learn -> evaluate -> checkpoint, N iterations, under runs/<name>/.

The same loop serves every algorithm: its learner (train/) says whether it learns on-policy
from the newest rollout or off-policy from the replay (collect/experience.py), and the run
directory (runs.py) makes the loop resumable from any instant and decides, under torchrun,
which rank writes.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import torch

from transformer_rl.collect.experience import ReplayExperience, RolloutExperience
from transformer_rl.config import RunConfig
from transformer_rl.envs import resolve, reward_threshold
from transformer_rl.models import resolve_device
from transformer_rl.run_files import RunState
from transformer_rl.runs import RunDir
from transformer_rl.train import algorithm
from transformer_rl.train.learner import Learner, Snapshot


def run(cfg: RunConfig, *, log=print, progress=None) -> dict[str, Any]:
    """The whole loop; resumes runs/<name> after its last complete iteration. ``progress``
    (the writing rank only) is called with each iteration's metrics row as it is written."""
    cfg.validate()
    spec = resolve(cfg.env)
    stop_at = cfg.stop_at if cfg.stop_at is not None else reward_threshold(spec)
    device = resolve_device(cfg.device)
    run_dir = RunDir(cfg, device)
    local = cfg.this_rank()  # under torchrun: this rank's envs, steps and minibatch
    if not run_dir.writes:
        log = progress = _quiet
    progress = progress or _quiet
    state = run_dir.open(spec, log)
    try:
        learner = run_dir.resume_learner(spec, config=local.learner)
        torch.manual_seed(cfg.seed)
        experience = (RolloutExperience if algorithm(cfg.algo).on_policy else ReplayExperience)(
            spec, run_dir.data, local, state.iteration + 1)
        overlap = Overlap() if cfg.overlap else None
        try:
            learner = _iterate(cfg, local, spec, run_dir, experience, learner, overlap, stop_at, log, progress)
        finally:
            if overlap is not None:
                overlap.close()
            experience.close()
        return run_dir.finish(learner.model.num_params(), stop_at)
    finally:
        run_dir.close()


def _iterate(cfg: RunConfig, local: RunConfig, spec, run_dir: RunDir, experience, learner: Learner | None,
             overlap: Overlap | None, stop_at: float | None, log, progress) -> Learner:
    """The iterations still to run; the learner they leave."""
    state = run_dir.state
    t_last = t0 = time.perf_counter()
    ahead = None  # the next iteration's experience, played already
    if learner is None:  # a new run: the model is built from its first data
        ahead = experience.play(1, None, 0, weights=0)
        learner = run_dir.new_learner(spec, local.learner, ahead[0])
        log(f"{cfg.model.model}: {learner.model.num_params():,} parameters")
    while state.iteration < cfg.iterations and not state.solved:
        it, t0 = state.iteration + 1, t0 or time.perf_counter()
        # with --overlap every rollout plays the snapshot (a resumed run's first one too: the
        # stream keeps the policy it starts with, and the learner updates in a thread meanwhile)
        actor = learner if overlap is None else overlap.snapshot(learner)
        data, played = ahead or experience.play(it, actor, state.env_steps, weights=it - 1)
        seed = local.update_seed(it)
        if overlap is not None and it < cfg.iterations:
            play_next = partial(experience.play, it + 1, env_steps=state.env_steps + played["env_steps"],
                                weights=it - 1)
            metrics, ahead = overlap.learn(learner, data, seed, play_next)
        else:
            metrics, ahead = learner.update(data, seed=seed), None
        state.env_steps += played["env_steps"]
        row = {"iteration": it, "env_steps": state.env_steps,
               "charts/collect_s": round(played["collect_s"], 2),
               "charts/collect_return": played["mean_return"],
               **({"charts/epsilon": round(played["epsilon"], 4)} if "epsilon" in played else {}), **metrics}
        evaluate_now = (it % cfg.eval_every == 0 and _affordable(cfg, state)) or it == cfg.iterations
        if evaluate_now:
            experience.flush()  # its finished episodes are listed before the state is
            report = run_dir.evaluate(it, spec, learner)
            row.update({"eval/mean_return": report["mean_return"],
                        "eval/std_return": report["std_return"], "eval/episodes": report["episodes"]})
        now = time.perf_counter()
        state.wall_s += now - t_last
        took, t_last, t0 = now - t0, now, None
        row["wall_s"] = round(state.wall_s, 2)
        run_dir.append_metrics(row)
        progress(row)
        if not evaluate_now:
            state.iteration = it  # in memory only: a crash resumes from the last evaluation
            continue
        solved = stop_at is not None and report["mean_return"] >= stop_at
        run_dir.commit(it, solved)
        shown = "  ".join(f"{key.split('/')[-1]} {row[key]:.4g}" for key in learner.log_keys if key in row)
        log(f"iter {it}: env steps {state.env_steps:,}  {shown}  "
            f"eval {report['mean_return']:.1f} ± {report['std_return']:.1f}  ({took:.1f}s)")
        if solved:
            log(f"eval mean {report['mean_return']:.1f} >= {stop_at}: solved")
    return learner


class Overlap:
    """--overlap: the learner updates on iteration k in a thread while the envs play k+1 with a
    snapshot of the weights from before that update (one iteration of policy lag). The snapshot
    is refreshed only between iterations, so runs stay deterministic."""

    def __init__(self):
        self.updater = ThreadPoolExecutor(1, thread_name_prefix="learner")
        self.actor: Snapshot | None = None

    def snapshot(self, learner: Learner) -> Snapshot:
        """The actor: the learner's weights as they were before the update in flight."""
        self.actor = self.actor or Snapshot(learner)
        return self.actor

    def learn(self, learner: Learner, data, seed: int, play_next):
        """One update on ``data`` while ``play_next(actor)`` plays the next iteration: (metrics, its play)."""
        self.snapshot(learner)
        update = self.updater.submit(learner.update, data, seed=seed)
        ahead = play_next(self.actor)
        metrics = update.result()
        self.actor.refresh()
        return metrics, ahead

    def close(self) -> None:
        self.updater.shutdown(cancel_futures=True)


def _affordable(cfg: RunConfig, state: RunState) -> bool:
    """--eval-budget: evaluation has so far played at most that fraction of the run's env steps."""
    return cfg.eval_budget is None or (state.eval_env_steps or 0) <= cfg.eval_budget * state.env_steps


def _quiet(*args, **kwargs) -> None:
    """The log of ranks that do not write."""
