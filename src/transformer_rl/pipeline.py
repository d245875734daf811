"""`trl run`: collect -> learn -> evaluate -> checkpoint, N iterations, under runs/<name>/.

The same loop serves every algorithm: its learner (train/) says whether it learns on-policy
from the newest rollout or off-policy from the replay (collect/experience.py), and the run
directory (runs.py) makes the loop resumable from any instant.
"""

from __future__ import annotations

import copy
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

from transformer_rl import distributed
from transformer_rl.collect.experience import ReplayExperience, RolloutExperience
from transformer_rl.config import RunConfig
from transformer_rl.envs import resolve, reward_threshold
from transformer_rl.errors import UsageError
from transformer_rl.models import new_model, resolve_device
from transformer_rl.runs import RunDir
from transformer_rl.train import LEARNERS, model_extras, new_learner
from transformer_rl.train.learner import Snapshot


def run(cfg: RunConfig, *, log=print, progress=None) -> dict[str, Any]:
    """The whole loop; resumes runs/<name> after its last complete iteration. ``progress``
    (rank 0 only) is called with each iteration's metrics row as it is written."""
    cfg.validate()
    spec = resolve(cfg.env)
    stop_at = cfg.stop_at if cfg.stop_at is not None else reward_threshold(spec)
    device = resolve_device(cfg.device)
    distributed.init(device.type)
    local = rank_share(cfg)  # under torchrun: this rank's envs, steps and minibatch
    if not distributed.is_main():
        log = progress = _quiet
    run_dir = RunDir(cfg)
    run_dir.state = distributed.on_main(run_dir.open, spec, log)
    try:
        return _loop(cfg, spec, run_dir, local, device, stop_at, log, progress or _quiet)
    finally:
        run_dir.close()


def _loop(cfg: RunConfig, spec, run_dir: RunDir, local: RunConfig, device: torch.device, stop_at, log, progress):
    state = run_dir.state
    learner = run_dir.resume_learner(spec, device, local.learner)
    if learner is not None:
        distributed.broadcast_model(learner.model)
    torch.manual_seed(cfg.seed)
    on_policy = LEARNERS[cfg.algo][1].on_policy
    experience = (RolloutExperience if on_policy else ReplayExperience)(spec, run_dir.data, local,
                                                                         state["iteration"] + 1)
    # --overlap: the learner updates on iteration k in a thread while the envs play iteration
    # k+1 with a snapshot of the weights from before that update (one iteration of policy lag)
    updater = ThreadPoolExecutor(1, thread_name_prefix="learner") if cfg.overlap else None
    actor = ahead = None  # the snapshot, and the next iteration's experience played meanwhile
    t_last = time.perf_counter()
    try:
        while state["iteration"] < cfg.iterations and not state["solved"]:
            it, t0 = state["iteration"] + 1, time.perf_counter()
            data, played = ahead or experience.play(it, actor or learner, state["env_steps"])
            if learner is None:
                extras = distributed.on_main(model_extras, cfg.algo, cfg.learner, spec, data)
                model = new_model(spec, cfg.model, data, cfg.seed, extras, device)
                distributed.broadcast_model(model)  # every rank starts from rank 0's weights and scaling
                learner = new_learner(cfg.algo, model, local.learner)
                log(f"{cfg.model.model}: {learner.model.num_params():,} parameters")
            seed = distributed.rank_seed(cfg.seed * 1000 + it)
            if updater is not None and it < cfg.iterations:
                actor = actor or Snapshot(learner, it - 1)
                update = updater.submit(learner.update, data, seed=seed)
                ahead = experience.play(it + 1, actor, state["env_steps"] + played["env_steps"])
                metrics = update.result()
                actor.sync(it)
            else:
                metrics, ahead = learner.update(data, seed=seed), None
            state["env_steps"] += played["env_steps"]
            row = {"iteration": it, "env_steps": state["env_steps"],
                   "charts/collect_s": round(played["collect_s"], 2),
                   "charts/collect_return": played["mean_return"],
                   **({"charts/epsilon": round(played["epsilon"], 4)} if "epsilon" in played else {}), **metrics}
            evaluate_now = (it % cfg.eval_every == 0 and _affordable(cfg, state)) or it == cfg.iterations
            if evaluate_now:  # rank 0 evaluates and writes; every rank learns the report
                experience.flush()
                report = distributed.on_main(run_dir.evaluate_and_save, it, spec, learner)
                state["eval_env_steps"] = state.get("eval_env_steps", 0) + report["env_steps"]  # every rank's
                row.update({"eval/mean_return": report["mean_return"],
                            "eval/std_return": report["std_return"], "eval/episodes": report["episodes"]})
            now = time.perf_counter()
            state["wall_s"] += now - t_last
            t_last = now
            row["wall_s"] = round(state["wall_s"], 2)
            if distributed.is_main():
                run_dir.append_metrics(row)
                progress(row)
            if not evaluate_now:
                state["iteration"] = it  # in memory only: a crash resumes from the last evaluation
                continue
            solved = stop_at is not None and report["mean_return"] >= stop_at
            if distributed.is_main():
                run_dir.commit(it, solved)
            else:
                state.update(iteration=it, solved=solved)
            shown = "  ".join(f"{key.split('/')[-1]} {row[key]:.4g}" for key in learner.log_keys if key in row)
            log(f"iter {it}: env steps {state['env_steps']:,}  {shown}  "
                f"eval {report['mean_return']:.1f} ± {report['std_return']:.1f}  ({now - t0:.1f}s)")
            if solved:
                log(f"eval mean {report['mean_return']:.1f} >= {stop_at}: solved")
    finally:
        if updater is not None:
            updater.shutdown(cancel_futures=True)
        experience.close()
    return run_dir.finish(learner.model.num_params() if learner else None, stop_at, write=distributed.is_main())


def _affordable(cfg: RunConfig, state: dict[str, Any]) -> bool:
    """--eval-budget: evaluation has so far played at most that fraction of the run's env steps."""
    return cfg.eval_budget is None or state.get("eval_env_steps", 0) <= cfg.eval_budget * state["env_steps"]


def rank_share(cfg: RunConfig) -> RunConfig:
    """This rank's part of the run under torchrun: ``num_envs``, ``steps_per_iteration`` and
    the minibatch split equally over the ranks (so the job plays and learns per iteration what
    one process would, and averaged gradients stand for the whole minibatch); alone, ``cfg``."""
    if not distributed.active():
        return cfg
    n = distributed.world_size()
    local = copy.deepcopy(cfg)
    local.num_envs = distributed.share(cfg.num_envs, "--num-envs")
    local.steps_per_iteration = cfg.steps_per_iteration // n
    if local.steps_per_iteration < local.num_envs:
        raise UsageError(f"--steps-per-iteration {cfg.steps_per_iteration:,} is too few for {n} ranks of "
                         f"{local.num_envs} envs; give at least {cfg.num_envs:,}")
    local.learner.batch = distributed.share_minibatch(cfg.learner.batch)
    return local


def _quiet(*args, **kwargs) -> None:
    """The log of ranks other than 0."""
