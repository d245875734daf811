"""`trl train`: train a new model (or continue a checkpoint) on a dataset; write a checkpoint."""

from __future__ import annotations

import shutil
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from transformer_rl import distributed, tracking
from transformer_rl.datasets.format import read_manifest
from transformer_rl.datasets.reader import load
from transformer_rl.envs import EnvSpec
from transformer_rl.errors import UsageError
from transformer_rl.files import LOCK, WriterLock, check_creatable, lock_dir, output_path
from transformer_rl.models import ModelArgs, check_size, new_model, resolve_device
from transformer_rl.settings import Algo, Track, check
from transformer_rl.train import algorithm, checkpoint, new_learner
from transformer_rl.train.learner import Progress


def train(data_dir: Path, out: Path, *, algo: Algo = Algo.dqn, model_args: ModelArgs | None = None,
          config: Any = None, init: Path | None = None, seed: int = 0, overwrite: bool = False,
          progress: Progress | None = None, device: str = "auto", track: Track = Track.none) -> dict[str, Any]:
    """Train on the dataset's newest ``config.replay_rows`` rows; PPO learns from the rows that
    recorded their behaviour policy's logp. Returns the metrics and the parameter count.

    Under torchrun the ranks train one model data-parallel: each reads the dataset, samples its
    own windows (PPO: takes every N-th row) in minibatches of ``batch / N``, gradients are
    averaged, and rank 0 writes the checkpoint.

    ``track``: the training's curves (losses/loss as it trains, then the learner's metrics; step =
    updates) go to the checkpoint's tensorboard/ or trackio/ folder (tracking.py); with
    ``overwrite`` the old checkpoint's curves go when training starts."""
    algo = Algo(algo)
    config = config if config is not None else algorithm(algo).config()
    check(config)
    model_args = model_args or ModelArgs()
    model_args.validate()
    out = output_path(out, "--out")
    track = Track(track)
    tracking.check(track, out)
    where = resolve_device(device)
    distributed.init(where.type)
    writes = distributed.is_main()  # rank 0 alone writes the checkpoint and its curves
    distributed.on_main(_check_out, out, overwrite)
    spec = EnvSpec.from_json(read_manifest(data_dir)["env"])
    model_args.validate(spec)
    if init is None:
        check_size(model_args.config(spec))
    data = load(data_dir, newest_rows=config.replay_rows)
    if len(data) == 0:
        raise UsageError(f"{data_dir} holds no transitions; collect some first")
    if algo == Algo.ppo:
        data.learn = np.isfinite(data.logp)
        if not data.learn.any():
            raise UsageError(f"{data_dir} records no behaviour logp, which PPO needs; train PPO on a "
                             "`trl run --algo ppo` dataset, or use --algo dqn")
        data.learn &= distributed.mine(len(data))
    counters: dict[str, Any] = {}
    if init is not None:
        ckpt = checkpoint.load(init, spec=spec, device=where)
        model, counters = ckpt.model, dict(ckpt.meta.get("counters", {}))
    claim = distributed.on_main(_claim_out, out, overwrite)  # held while training, then written
    hyperparameters = {"algo": str(algo), "data": str(data_dir), "init": str(init) if init else None, "seed": seed,
                       "model": asdict(model_args), str(algo): asdict(config)}
    points: list[tracking.Point] = []
    tracker, tracked = None, False
    try:
        if writes and track != Track.none:
            tracked = True  # from here on, the old checkpoint's curves are being replaced
            tracker = tracking.open_tracker(track, out, name=out.name, config=hyperparameters, points=[])
            progress = _tracked(progress, tracker, points)
        if init is None:
            extras = algorithm(algo).learner.model_extras(config, spec, data)
            model = new_model(spec, model_args, data, seed, extras, where)
        distributed.broadcast_model(model)
        learner = new_learner(algo, model, replace(config, batch=distributed.share_minibatch(config.batch)))
        if init is not None and ckpt.algo == algo:
            learner.load_state_dict(ckpt.learner_state)
        updates_before = learner.updates
        metrics = learner.update(data, seed=distributed.rank_seed(seed), progress=progress)
        if tracker is not None:
            points.append((learner.updates - updates_before, metrics, None))
            tracker.log(*points[-1])
            tracker.close()
            tracker = None
        distributed.on_main(lambda: checkpoint.save(
            out, model, spec, algo, learner_state=learner.state_dict(), counters=counters,
            train_config={str(algo): config, "data": str(data_dir), "seed": seed}))
        if writes:  # the checkpoint replaced the folder: its curves again, in the new one
            tracking.rewrite(track, out, name=out.name, config=hyperparameters, points=points)
    except BaseException:
        if tracker is not None:
            tracker.close()
        if claim is not None and claim[1]:  # this command made --out: nothing of it stays
            shutil.rmtree(out, ignore_errors=True)
        elif tracked:  # the old checkpoint stays; the curves of this training go
            shutil.rmtree(out / tracking.FOLDERS[track], ignore_errors=True)
        raise
    finally:
        if claim is not None:
            claim[0].release()
    return {"parameters": model.num_params(), **metrics, "checkpoint": str(out)}


def _tracked(progress: Progress | None, tracker, points: list[tracking.Point]) -> Progress | None:
    """``progress``, and each report of it also a point of ``tracker`` (losses/loss at step = updates)."""
    if tracker is None:
        return progress

    def report(done: int, total: int, metrics: dict[str, float]) -> None:
        points.append((done, {"losses/loss": metrics["loss"]}, None))
        tracker.log(*points[-1])
        if progress is not None:
            progress(done, total, metrics)

    return report


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not (out / "config.json").is_file() and not _only_lock(out):
        raise UsageError(f"--out {out} exists and is not a checkpoint; choose another path")
    if out.exists() and not overwrite and not _only_lock(out):
        raise UsageError(f"--out {out} already holds a checkpoint; pass --overwrite to replace it, "
                         "or choose another path")
    check_creatable(out, "--out")


def _only_lock(out: Path) -> bool:
    """``out`` is a directory a `trl train` made for its checkpoint and has not filled yet."""
    return out.is_dir() and {p.name for p in out.iterdir()} <= {LOCK}


def _claim_out(out: Path, overwrite: bool) -> tuple[WriterLock, bool]:
    """Hold ``out`` (creating it if need be) for this command: (the lock, whether it created it)."""
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    lock = lock_dir(out, "a checkpoint")
    try:
        _check_out(out, overwrite)  # again, now that no other writer can change it
    except BaseException:
        lock.release()
        raise
    return lock, created
