"""A run directory, runs/<name>/: what `trl run` writes, and how it resumes.

config.json and state.json are written (together, atomically) before the first step; state.json
is replaced after each evaluated iteration, last. A rerun of the same command therefore resumes
from any instant: what a killed iteration appended after the last committed state (dataset
shards, metrics rows, a checkpoint) is rolled back first, then the iteration is redone.

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

from transformer_rl import provenance, tracking
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
from transformer_rl.schema import AnyJSON, Bool, Float, Int, Map, Obj, Opt, Str, problem
from transformer_rl.settings import KeepCheckpoints, KeepData
from transformer_rl.train import checkpoint, new_learner
from transformer_rl.train.learner import Learner

_BEST = Obj({"iteration": Int(ge=1), "mean_return": Float()})
STATE_SCHEMA = Obj({"iteration": Int(ge=0), "env_steps": Int(ge=0), "best": Opt(_BEST), "wall_s": Float(ge=0),
                    "shards": Int(ge=0), "segments": Int(ge=0), "solved": Bool()},
                   optional={"eval_env_steps": Int(ge=0)})
CONFIG_SCHEMA = Obj({"env": Str(), "algo": Str(), "model": Map(AnyJSON())})
METRICS_ROW = Obj({"iteration": Int(ge=1)})
# what a run directory holds while it is being created (a crash there leaves no run yet)
_CREATING = {LOCK, "config.json", "config.json.tmp", "state.json.tmp"}


class RunDir:
    def __init__(self, cfg: RunConfig):
        self.cfg, self.path = cfg, output_path(cfg.root / cfg.name, "--root/--name")
        self.data = self.path / "data"
        self.state: dict[str, Any] = {"iteration": 0, "env_steps": 0, "best": None, "wall_s": 0.0,
                                      "shards": 0, "segments": 0, "solved": False}
        self.lock: WriterLock | None = None
        self.tracker = None  # --track: the tracker metrics rows are mirrored to (tracking.py)

    def open(self, spec: EnvSpec, log) -> dict[str, Any]:
        """Create the run directory, or resume the one there (refusing another env, algorithm
        or model) after rolling back what followed its last committed state; its state. The
        directory is held (one writer) until ``close``."""
        tracking.check(self.cfg.track, self.path)
        state_path = self.path / "state.json"
        if state_path.is_file():
            self._check_resumable()
            self.lock = lock_dir(self.path, "a run directory")
            self.state = self._check_resumable()  # again, now that no other writer can change it
            self._rollback()
            if self.state["iteration"]:
                log(f"resuming {self.path} after iteration {self.state['iteration']}")
            self._start_tracking(log)
            return self.state
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
            atomic_write_json(state_path, self.state)  # last: from now on this is a run
            self._start_tracking(log)
        return self.state

    def _check_resumable(self) -> dict[str, Any]:
        """The run's state, after checking its files (read only) and that this command is its."""
        saved = read_json(self.path / "config.json", CONFIG_SCHEMA, "run directory")
        mine = self.cfg.to_json()
        saved["model"] = {**mine["model"], **saved["model"]}  # settings added since the run began keep defaults
        for key in ("keep_data", "keep_checkpoints"):  # runs from before these settings kept everything
            saved.setdefault(key, "all")
        for key in ("env", "algo", "model", "keep_data", "keep_checkpoints"):
            if saved[key] != mine[key]:
                raise UsageError(f"{self.path} is a run with {_differences(saved, mine, key)}; rerun it "
                                 "with its options or choose another --name")
        state_path = self.path / "state.json"
        state = read_json(state_path, STATE_SCHEMA, "run directory")
        best = state["best"]
        if best is not None and (best["iteration"] > state["iteration"] or not (
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
        """--track: the tracker, rewritten from metrics.jsonl (after the rollback). The folder of
        a tracker this run used before and does not use now is rewritten too, so that no tracker
        of the run shows a rolled-back row; it then stops growing."""
        metrics = self.path / "metrics.jsonl"
        points = [tracking.scalars(row) for row in read_metrics(metrics)] if metrics.exists() else []
        config, name = self.cfg.to_json(), self.cfg.name
        for kind, folder in tracking.FOLDERS.items():
            if kind == self.cfg.track or not (self.path / folder).is_dir():
                continue
            try:
                tracking.check(kind, self.path)
            except UsageError:
                log(f"{self.path / folder} left as it was (it may show rolled-back rows): resume with "
                    f"--track {kind} to rewrite it")
                continue
            tracking.rewrite(kind, self.path, name=name, config=config, points=points)
        self.tracker = tracking.open_tracker(self.cfg.track, self.path, name=name, config=config, points=points)

    def _rollback(self) -> None:
        state = self.state
        if is_dataset(self.data):
            truncate(self.data, state["shards"], state["segments"])
        elif self.data.exists():  # killed while creating the dataset: nothing in it counts yet
            shutil.rmtree(self.data)
        metrics = self.path / "metrics.jsonl"
        if metrics.exists():
            rows = [line for line in read_metrics(metrics) if line["iteration"] <= state["iteration"]]
            atomic_write_bytes(metrics, "".join(json.dumps(row) + "\n" for row in rows).encode())
        best = self.path / "checkpoints" / "best"
        if self.cfg.keep_checkpoints == KeepCheckpoints.last:
            self._tidy_compact()
        elif state["best"] is not None:  # `best` may hold a rolled-back iteration's checkpoint
            copy_dir(self.checkpoint(state["best"]["iteration"]), best)
        elif best.exists():
            shutil.rmtree(best)

    def _tidy_compact(self) -> None:
        """--keep-checkpoints last: finish what a crash interrupted after the last commit (best
        and last from the committed iteration's checkpoint), and drop every other checkpoint."""
        state, folder = self.state, self.path / "checkpoints"
        committed = self.checkpoint(state["iteration"])
        if state["iteration"] and committed.is_dir():
            self._promote(state["iteration"])
        for path in folder.glob("*") if folder.is_dir() else []:
            if path.name not in ("last", "best"):
                shutil.rmtree(path)
        best = folder / "best"
        if state["best"] is None:
            shutil.rmtree(best, ignore_errors=True)

    def _promote(self, it: int) -> None:
        """``it`` is committed: its checkpoint becomes ``last`` (and ``best`` if it is the best)."""
        folder, new = self.path / "checkpoints", self.checkpoint(it)
        if self.state["best"] is not None and self.state["best"]["iteration"] == it:
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
        path = self.checkpoint(self.state["iteration"])
        return self.path / "checkpoints" / "last" if not path.exists() and self._compact() else path

    def _compact(self) -> bool:
        return self.cfg.keep_checkpoints == KeepCheckpoints.last

    def resume_learner(self, spec: EnvSpec, device: torch.device | str = "cpu", config: Any = None) -> Learner | None:
        """The learner (with ``config``, by default the run's) of the last committed iteration;
        before the first, the one of --init, or None (the model is then built from the first data)."""
        if self.state["iteration"]:
            path = self.committed_checkpoint()
            if not path.exists():  # under torchrun, on a machine that does not see rank 0's files
                raise UsageError(f"{path} is not here: resuming a run under torchrun needs its --root "
                                 "on a file system that every machine sees")
            ckpt = checkpoint.load(path, spec=spec, device=device)
        elif self.cfg.init is not None:
            ckpt = self._init_checkpoint(spec, device)
        else:
            return None
        learner = new_learner(self.cfg.algo, ckpt.model, config if config is not None else self.cfg.learner)
        learner.load_state_dict(ckpt.learner_state)
        return learner

    def _init_checkpoint(self, spec: EnvSpec, device: torch.device | str = "cpu") -> checkpoint.Checkpoint:
        ckpt = checkpoint.load(self.cfg.init, spec=spec, device=device)
        if ckpt.algo != self.cfg.algo:
            raise UsageError(f"--init {self.cfg.init} is a {ckpt.algo} checkpoint; use --algo {ckpt.algo}")
        return ckpt

    def evaluate_and_save(self, it: int, spec: EnvSpec, learner: Learner) -> dict[str, Any]:
        """Evaluate (recording the episodes), checkpoint, and keep the best checkpoint."""
        cfg, state = self.cfg, self.state
        record = None
        if cfg.keep_data == KeepData.all:
            record = self.path / "evals" / f"iter-{it:03d}"
            shutil.rmtree(record, ignore_errors=True)  # left by a crash inside this iteration
            record.parent.mkdir(exist_ok=True)
        report = evaluate(learner.model, spec, cfg.algo, episodes=cfg.eval_episodes, mode=cfg.eval_mode,
                          seed=10_000_000 + cfg.seed * 1000 + it, record=record,
                          target_return=getattr(learner, "eval_target", None))
        if record is not None:  # inside the run directory, so that it moves with it
            report["recorded"] = str(record.relative_to(self.path))
        (self.path / "reports").mkdir(exist_ok=True)
        atomic_write_json(self.path / "reports" / f"iter-{it:03d}.json", report)
        checkpoint.save(self.checkpoint(it), learner.model, spec, cfg.algo,
                        learner_state=learner.state_dict(),
                        counters={"iteration": it, "env_steps": state["env_steps"]},
                        train_config=cfg.to_json())
        if state["best"] is None or report["mean_return"] > state["best"]["mean_return"]:
            state["best"] = {"iteration": it, **report, "run_env_steps": state["env_steps"]}
            if not self._compact():  # compact: copied once the iteration is committed
                copy_dir(self.checkpoint(it), self.path / "checkpoints" / "best")
        return report

    def append_metrics(self, row: dict[str, Any]) -> None:
        with open(self.path / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        if self.tracker is not None:
            self.tracker.log(*tracking.scalars(row))

    def commit(self, it: int, solved: bool) -> None:
        """Iteration ``it`` is complete: record how far the dataset goes, then the state."""
        manifest = read_manifest(self.data) if self.cfg.keep_data == KeepData.all else {"shards": [], "segments": []}
        self.state.update(iteration=it, shards=len(manifest["shards"]),
                          segments=len(manifest["segments"]), solved=solved)
        atomic_write_json(self.path / "state.json", self.state)
        if self._compact():
            self._promote(it)

    def finish(self, parameters: int | None, stop_at: float | None, write: bool = True) -> dict[str, Any]:
        cfg, state = self.cfg, self.state
        best = state["best"]
        final = {"env": cfg.env, "algo": str(cfg.algo), "model": str(cfg.model.model), "seed": cfg.seed,
                 "parameters": parameters, "iterations": state["iteration"],
                 "env_steps": state["env_steps"], "wall_s": round(state["wall_s"], 2), "best": best,
                 "solved": bool(stop_at is not None and best and best["mean_return"] >= stop_at),
                 "stop_at": stop_at, "provenance": provenance.record()}
        if write:
            atomic_write_json(self.path / "report.json", final)
            plot_runs(self.path / "curve.png", [self.path], title=cfg.name, threshold=stop_at)
        return final


def _differences(saved: dict[str, Any], mine: dict[str, Any], key: str) -> str:
    if not isinstance(saved[key], dict):
        return f"{key} {saved[key]}, not {mine[key]}"
    return ", ".join(f"--{k.replace('_', '-')} {v}, not {mine[key].get(k)}"
                     for k, v in saved[key].items() if mine[key].get(k) != v)


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The rows of a run's metrics.jsonl; a cut-off last line (a crash while appending it) is
    dropped, any other line that is not a metrics row is named as damage."""
    text = path.read_text(errors="replace")
    lines = text.splitlines()
    if lines and not text.endswith("\n"):
        lines = lines[:-1]
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            row = None
        found = "not a JSON object" if row is None else problem(METRICS_ROW, row)
        if found:
            raise DamagedData(f"{path} line {number}: {found}; the run directory is damaged")
        rows.append(row)
    return rows
