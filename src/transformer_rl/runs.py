"""A run directory, runs/<name>/: what `trl run` writes, and how it resumes.

config.json and state.json are written (together, atomically) before the first step; state.json
is replaced after each evaluated iteration, last. A rerun of the same command therefore resumes
from any instant: what a killed iteration appended after the last committed state (dataset
shards, metrics rows, a checkpoint) is rolled back first, then the iteration is redone.

Under torchrun every rank holds a RunDir and rank 0's alone writes (``writes``): the others
learn its state, its evaluations' reports and its first model through collectives.

  config.json  data/  checkpoints/iter-NNN, best  evals/iter-NNN  reports/iter-NNN.json
  metrics.jsonl  state.json  report.json  curve.png  tensorboard/ or trackio/ (--track)
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from transformer_rl import distributed, provenance, tracking
from transformer_rl.config import RunConfig
from transformer_rl.datasets.format import is_dataset, read_manifest
from transformer_rl.datasets.writer import truncate
from transformer_rl.envs import EnvSpec
from transformer_rl.errors import DamagedData, UsageError
from transformer_rl.evaluate.evaluate import evaluate
from transformer_rl.evaluate.plots import plot_runs
from transformer_rl.files import (
    LOCK,
    WriterLock,
    atomic_write_bytes,
    atomic_write_json,
    check_creatable,
    copy_dir,
    lock_dir,
    output_path,
    read_json,
    removed_on_failure,
)
from transformer_rl.models import new_model
from transformer_rl.run_files import CONFIG_SCHEMA, STATE_SCHEMA, RunState, differences, read_metrics
from transformer_rl.settings import KeepCheckpoints, KeepData
from transformer_rl.train import algorithm, checkpoint, new_learner
from transformer_rl.train.learner import Learner

# what a run directory holds while it is being created (a crash there leaves no run yet)
_CREATING = {LOCK, "config.json", "config.json.tmp", "state.json.tmp"}


class RunDir:
    """This process's side of runs/<name>/; ``device``: where its learner lives (joining the
    torchrun job, if any, with the backend for it)."""

    def __init__(self, cfg: RunConfig, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        distributed.init(self.device.type)
        self.writes = distributed.is_main()
        self.cfg, self.path = cfg, output_path(cfg.root / cfg.name, "--root/--name")
        self.data = self.path / "data"
        self.state = RunState()
        self.lock: WriterLock | None = None
        self.tracker = None  # --track: the tracker metrics rows are mirrored to (tracking.py)

    def open(self, spec: EnvSpec, log) -> RunState:
        """Create the run directory, or resume the one there (refusing another env, algorithm
        or model) after rolling back what followed its last committed state; its state, on
        every rank. The directory is held (one writer) until ``close``."""
        self.state = RunState.from_json(distributed.on_main(self._open, spec, log))
        return self.state

    def _open(self, spec: EnvSpec, log) -> dict[str, Any]:
        tracking.check(self.cfg.track, self.path)
        state_path = self.path / "state.json"
        if state_path.is_file():
            self._check_resumable()
            self.lock = lock_dir(self.path, "a run directory")
            self.state = self._check_resumable()  # again, now that no other writer can change it
            self._rollback()
            if self.state.iteration:
                log(f"resuming {self.path} after iteration {self.state.iteration}")
            self._start_tracking(log)
            return self.state.to_json()
        if self.path.exists() and (not self.path.is_dir() or set(p.name for p in self.path.iterdir()) - _CREATING):
            raise UsageError(f"{self.path} exists but holds no run state; choose another --name")
        check_creatable(self.path, "--root/--name")
        if self.cfg.init is not None:  # a bad --init is refused before anything is written
            self._init_checkpoint(spec)
        created = not self.path.exists()
        self.path.mkdir(parents=True, exist_ok=True)
        self.lock = lock_dir(self.path, "a run directory")
        with removed_on_failure(self.path, created):
            atomic_write_json(self.path / "config.json", {**self.cfg.to_json(), "provenance": provenance.record()})
            atomic_write_json(state_path, self.state.to_json())  # last: from now on this is a run
            self._start_tracking(log)
        return self.state.to_json()

    def _check_resumable(self) -> RunState:
        """The run's state, after checking its files (read only) and that this command is its."""
        saved = read_json(self.path / "config.json", CONFIG_SCHEMA, "run directory")
        mine = self.cfg.to_json()
        saved["model"] = {**mine["model"], **saved["model"]}  # settings added since the run began keep defaults
        for key in ("keep_data", "keep_checkpoints"):  # runs from before these settings kept everything
            saved.setdefault(key, "all")
        for key in ("env", "algo", "model", "keep_data", "keep_checkpoints"):
            if saved[key] != mine[key]:
                raise UsageError(f"{self.path} is a run with {differences(saved, mine, key)}; rerun it "
                                 "with its options or choose another --name")
        state_path = self.path / "state.json"
        state = RunState.from_json(read_json(state_path, STATE_SCHEMA, "run directory"))
        best = state.best
        if best is not None and (best["iteration"] > state.iteration or not (
                self.checkpoint(best["iteration"]).is_dir()
                or (self._compact() and (self.path / "checkpoints" / "best").is_dir()))):
            raise DamagedData(f"{state_path} names best iteration {best['iteration']}, whose checkpoint is "
                              "not there; the run directory is damaged")
        if (self.path / "metrics.jsonl").exists():
            read_metrics(self.path / "metrics.jsonl")
        return state

    def close(self) -> None:
        try:
            if self.tracker is not None:
                self.tracker.close()
                self.tracker = None
        finally:
            if self.lock is not None:
                self.lock.release()
                self.lock = None

    def _start_tracking(self, log) -> None:
        """--track: the tracker, rewritten from metrics.jsonl (after the rollback)."""
        metrics = self.path / "metrics.jsonl"
        rows = read_metrics(metrics) if metrics.exists() else []
        self.tracker = tracking.resume(self.cfg.track, self.path, name=self.cfg.name, config=self.cfg.to_json(),
                                       rows=rows, log=log)

    def _rollback(self) -> None:
        state = self.state
        if is_dataset(self.data):
            truncate(self.data, state.shards, state.segments)
        elif self.data.exists():  # killed while creating the dataset: nothing in it counts yet
            shutil.rmtree(self.data)
        metrics = self.path / "metrics.jsonl"
        if metrics.exists():
            rows = [line for line in read_metrics(metrics) if line["iteration"] <= state.iteration]
            atomic_write_bytes(metrics, "".join(json.dumps(row) + "\n" for row in rows).encode())
        best = self.path / "checkpoints" / "best"
        if self.cfg.keep_checkpoints == KeepCheckpoints.last:
            self._tidy_compact()
        elif state.best is not None:  # `best` may hold a rolled-back iteration's checkpoint
            copy_dir(self.checkpoint(state.best["iteration"]), best)
        elif best.exists():
            shutil.rmtree(best)

    def _tidy_compact(self) -> None:
        """--keep-checkpoints last: finish what a crash interrupted after the last commit (best
        and last from the committed iteration's checkpoint), and drop every other checkpoint."""
        state, folder = self.state, self.path / "checkpoints"
        committed = self.checkpoint(state.iteration)
        if state.iteration and committed.is_dir():
            self._promote(state.iteration)
        for path in folder.glob("*") if folder.is_dir() else []:
            if path.name not in ("last", "best"):
                shutil.rmtree(path)
        best = folder / "best"
        if state.best is None:
            shutil.rmtree(best, ignore_errors=True)

    def _promote(self, it: int) -> None:
        """``it`` is committed: its checkpoint becomes ``last`` (and ``best`` if it is the best)."""
        folder, new = self.path / "checkpoints", self.checkpoint(it)
        if self.state.best is not None and self.state.best["iteration"] == it:
            copy_dir(new, folder / "best")
        old = folder / "last.old"
        shutil.rmtree(old, ignore_errors=True)
        if (folder / "last").exists():
            os.replace(folder / "last", old)
        os.replace(new, folder / "last")
        shutil.rmtree(old, ignore_errors=True)

    def checkpoint(self, iteration: int) -> Path:
        return self.path / "checkpoints" / f"iter-{iteration:03d}"

    def committed_checkpoint(self) -> Path:
        """The checkpoint of the last committed iteration (with --keep-checkpoints last: ``last``)."""
        path = self.checkpoint(self.state.iteration)
        return self.path / "checkpoints" / "last" if not path.exists() and self._compact() else path

    def _compact(self) -> bool:
        return self.cfg.keep_checkpoints == KeepCheckpoints.last

    def resume_learner(self, spec: EnvSpec, config: Any = None) -> Learner | None:
        """The learner (with ``config``, by default the run's) of the last committed iteration;
        before the first, the one of --init, or None (the model is then built from the first
        data: `new_learner`). Every rank takes rank 0's weights."""
        if self.state.iteration:
            path = self.committed_checkpoint()
            if not path.exists():  # under torchrun, on a machine that does not see rank 0's files
                raise UsageError(f"{path} is not here: resuming a run under torchrun needs its --root "
                                 "on a file system that every machine sees")
            ckpt = checkpoint.load(path, spec=spec, device=self.device)
        elif self.cfg.init is not None:
            ckpt = self._init_checkpoint(spec, self.device)
        else:
            return None
        learner = new_learner(self.cfg.algo, ckpt.model, config if config is not None else self.cfg.learner)
        learner.load_state_dict(ckpt.learner_state)
        distributed.broadcast_model(learner.model)
        return learner

    def new_learner(self, spec: EnvSpec, config: Any, data) -> Learner:
        """A new model and learner, the model's observation scaling (and a DT's embeddings) from
        the first iteration's ``data``; every rank starts from rank 0's weights and scaling."""
        cfg = self.cfg
        extras = distributed.on_main(algorithm(cfg.algo).learner.model_extras, cfg.learner, spec, data)
        model = new_model(spec, cfg.model, data, cfg.seed, extras, self.device)
        distributed.broadcast_model(model)
        return new_learner(cfg.algo, model, config)

    def _init_checkpoint(self, spec: EnvSpec, device: torch.device | str = "cpu") -> checkpoint.Checkpoint:
        ckpt = checkpoint.load(self.cfg.init, spec=spec, device=device)
        if ckpt.algo != self.cfg.algo:
            raise UsageError(f"--init {self.cfg.init} is a {ckpt.algo} checkpoint; use --algo {ckpt.algo}")
        return ckpt

    def evaluate(self, it: int, spec: EnvSpec, learner: Learner) -> dict[str, Any]:
        """Rank 0 evaluates, records and checkpoints (`_evaluate_and_save`); every rank learns
        the report and counts the evaluation's env steps."""
        report = distributed.on_main(self._evaluate_and_save, it, spec, learner)
        self.state.eval_env_steps = (self.state.eval_env_steps or 0) + report["env_steps"]
        return report

    def _evaluate_and_save(self, it: int, spec: EnvSpec, learner: Learner) -> dict[str, Any]:
        """Evaluate (recording the episodes), checkpoint, and keep the best checkpoint."""
        cfg, state = self.cfg, self.state
        record = None
        if cfg.keep_data == KeepData.all:
            record = self.path / "evals" / f"iter-{it:03d}"
            shutil.rmtree(record, ignore_errors=True)  # left by a crash inside this iteration
            record.parent.mkdir(exist_ok=True)
        report = evaluate(learner.model, spec, cfg.algo, episodes=cfg.eval_episodes, mode=cfg.eval_mode,
                          seed=10_000_000 + cfg.seed * 1000 + it, record=record,
                          target_return=learner.eval_target)
        if record is not None:  # inside the run directory, so that it moves with it
            report["recorded"] = str(record.relative_to(self.path))
        (self.path / "reports").mkdir(exist_ok=True)
        atomic_write_json(self.path / "reports" / f"iter-{it:03d}.json", report)
        checkpoint.save(self.checkpoint(it), learner.model, spec, cfg.algo,
                        learner_state=learner.state_dict(),
                        counters={"iteration": it, "env_steps": state.env_steps},
                        train_config=cfg.to_json())
        if state.best is None or report["mean_return"] > state.best["mean_return"]:
            state.best = {"iteration": it, **report, "run_env_steps": state.env_steps}
            if not self._compact():  # compact: copied once the iteration is committed
                copy_dir(self.checkpoint(it), self.path / "checkpoints" / "best")
        return report

    def append_metrics(self, row: dict[str, Any]) -> None:
        if not self.writes:
            return
        with open(self.path / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        if self.tracker is not None:
            self.tracker.log(*tracking.scalars(row))

    def commit(self, it: int, solved: bool) -> None:
        """Iteration ``it`` is complete: record how far the dataset goes, then the state."""
        self.state.iteration, self.state.solved = it, solved
        if not self.writes:
            return
        manifest = read_manifest(self.data) if self.cfg.keep_data == KeepData.all else {"shards": [], "segments": []}
        self.state.shards, self.state.segments = len(manifest["shards"]), len(manifest["segments"])
        atomic_write_json(self.path / "state.json", self.state.to_json())
        if self._compact():
            self._promote(it)

    def finish(self, parameters: int | None, stop_at: float | None) -> dict[str, Any]:
        cfg, state = self.cfg, self.state
        best = state.best
        final = {"env": cfg.env, "algo": str(cfg.algo), "model": str(cfg.model.model), "seed": cfg.seed,
                 "parameters": parameters, "iterations": state.iteration,
                 "env_steps": state.env_steps, "wall_s": round(state.wall_s, 2), "best": best,
                 "solved": bool(stop_at is not None and best and best["mean_return"] >= stop_at),
                 "stop_at": stop_at, "provenance": provenance.record()}
        if self.writes:
            atomic_write_json(self.path / "report.json", final)
            plot_runs(self.path / "curve.png", [self.path], title=cfg.name, threshold=stop_at)
        return final
