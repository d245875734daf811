"""The Python API: a trained policy to play with, datasets to read, and each `trl` command as a
function taking the same settings (option names with underscores: `--n-embd 16` is
``n_embd=16``). Nothing here prints.

    import transformer_rl as trl

    policy = trl.load_policy("docs/checkpoints/cartpole-dqn-gpt")
    policy.reset()
    action = policy.act(observation)            # then act(next_observation, reward) each step

Bad input raises ``UsageError`` (``DamagedData`` for a damaged file, ``Busy`` for a held lock),
worded for Python: ``error.parameter`` names the argument at fault. The command functions are
not called collect/train/evaluate because those names are the package's subpackages.
"""

from __future__ import annotations

import functools
import inspect
import re
from pathlib import Path
from typing import Any

import numpy as np

from transformer_rl.errors import UsageError

__all__ = ["Policy", "VectorPolicy", "collect_dataset", "evaluate_checkpoint", "load_dataset", "load_policy",
           "run_experiment", "train_model"]

_OPTION = re.compile(r"(?<![\w-])--([a-z][a-z0-9-]*)")


def _python_errors(fn):
    """Re-raise the CLI-worded UsageError of ``fn`` in its own terms: `--n-embd` -> `n_embd`,
    `pass --overwrite` -> `overwrite=True`; ``parameter`` is the first argument named."""
    params = inspect.signature(fn).parameters

    def python_name(match: re.Match) -> str:
        name = match.group(1).replace("-", "_")
        if name.startswith("no_") and name[3:] in params:
            return f"{name[3:]}=False"
        annotation = params[name].annotation if name in params else None
        return f"{name}=True" if annotation in (bool, "bool") else name

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UsageError as e:
            message = str(e)
            named = _OPTION.search(message)
            error = type(e)(_OPTION.sub(python_name, message))
            error.parameter = named.group(1).replace("-", "_") if named else None
            raise error.with_traceback(e.__traceback__) from None

    return wrapper


@_python_errors
def load_dataset(path: str | Path):
    """A dataset's transitions (`Transitions`: obs, action, reward, terminated, truncated,
    final_obs, episode_rows, ... as NumPy arrays), checked against its manifest as it is read."""
    from transformer_rl.datasets.reader import load

    return load(Path(path))


class VectorPolicy:
    """A trained policy acting in ``num_envs`` envs at once: history, previous actions and a
    Decision Transformer's return-to-go are kept per env inside.

    ``act(observations, rewards=None, starts=None)``: observations (N, *obs_shape); rewards (N,)
    the reward of the step that led to each observation (a DT plays for its return-to-go, the
    others ignore it); starts (N,) bool marks envs whose observation begins a new episode (after
    ``reset()`` every env starts one). Returns (N,) int actions."""

    def __init__(self, checkpoint, num_envs: int, mode: str, seed: int, target_return: float | None):
        from transformer_rl.collect.policies import ModelPolicy
        from transformer_rl.train import algorithm

        self.checkpoint, self.num_envs = checkpoint, num_envs
        self.env_id, self.num_actions = checkpoint.spec.env_id, checkpoint.spec.num_actions
        self.obs_shape = tuple(checkpoint.spec.obs_shape)
        self.target_return = target_return
        self._policy = ModelPolicy(checkpoint.model, num_envs, mode, algo=checkpoint.algo,
                                   acts_on=algorithm(checkpoint.algo).acts_on, seed=seed,
                                   target_return=target_return or 0.0)
        self._ids = np.arange(num_envs)
        self._starting = np.ones(num_envs, bool)

    def reset(self) -> None:
        """Every env begins a new episode at its next observation."""
        self._starting[:] = True

    def act(self, observations, rewards=None, starts=None) -> np.ndarray:
        obs = np.asarray(observations)
        if obs.shape != (self.num_envs, *self.obs_shape):
            raise UsageError(f"observations have shape {obs.shape}; this policy plays {self.num_envs} "
                             f"{self.env_id} envs: give shape {(self.num_envs, *self.obs_shape)}")
        first = self._starting.copy()
        if starts is not None:
            first |= np.asarray(starts, bool).reshape(self.num_envs)
        reward = np.zeros(self.num_envs, np.float32) if rewards is None else \
            np.asarray(rewards, np.float32).reshape(self.num_envs)
        action, _, _ = self._policy.act(obs.reshape(self.num_envs, -1), self._ids, first, reward)
        self._starting[:] = False
        return action


class Policy:
    """A trained policy for one env: ``reset()`` at the start of each episode, then
    ``act(observation, reward=None) -> int`` at every step (reward: that of the step that led to
    the observation; a Decision Transformer needs it, the others ignore it)."""

    def __init__(self, vector: VectorPolicy):
        self._vector = vector
        self.env_id, self.num_actions, self.obs_shape = vector.env_id, vector.num_actions, vector.obs_shape
        self.target_return = vector.target_return

    def reset(self) -> None:
        self._vector.reset()

    def act(self, observation, reward: float | None = None) -> int:
        obs = np.asarray(observation)
        if obs.shape != self.obs_shape:
            raise UsageError(f"observation has shape {obs.shape}; {self.env_id} gives {self.obs_shape}")
        return int(self._vector.act(obs[None], None if reward is None else [reward])[0])


def _load_policy(checkpoint: str | Path, *, device: str = "auto", num_envs: int | None = None,
                mode: str = "greedy", seed: int = 0, target_return: float | None = None) -> Policy | VectorPolicy:
    """A checkpoint's policy: for one env (`Policy`), or with ``num_envs`` for that many at once
    (`VectorPolicy`). mode greedy or sample (PPO, DT, BC); a Decision Transformer plays for
    ``target_return`` (default: the best return of its training data), as `trl eval` does."""
    from transformer_rl.models import resolve_device
    from transformer_rl.settings import ENVS, EvalMode, as_choice, check_value
    from transformer_rl.train import algorithm, check_mode, check_target
    from transformer_rl.train import checkpoint as checkpoints

    mode = as_choice(EvalMode, mode, "mode")
    if num_envs is not None:
        check_value("num_envs", num_envs, ENVS)
    loaded = checkpoints.load(Path(checkpoint), optimizer=False, device=resolve_device(device))
    check_mode(loaded.algo, mode)
    entry = algorithm(loaded.algo)
    if target_return is None:
        target_return = entry.learner.saved_target(loaded.learner_state)
    check_target(loaded.algo, target_return)
    loaded.model.eval()
    vector = VectorPolicy(loaded, num_envs or 1, mode, seed, target_return)
    return vector if num_envs is not None else Policy(vector)


load_policy = _python_errors(_load_policy)


@_python_errors
def collect_dataset(env: str, out: str | Path, *, steps: int | None = None, episodes: int | None = None,
                    num_envs: int = 8, batch_size: int | None = None, seed: int = 0, resume: bool = False,
                    shard_rows: int = 100_000, sticky: float | None = None, frame_skip: int | None = None):
    """`trl collect`: a random policy plays ``env`` in EnvPool; whole episodes go to a dataset at
    ``out``. Returns the collection's stats (rows, episodes, returns, steps_per_s, ...)."""
    from transformer_rl import envs
    from transformer_rl.collect.job import collect
    from transformer_rl.collect.policies import RandomPolicy
    from transformer_rl.collect.rollout import CollectConfig

    cfg = CollectConfig(steps=steps, episodes=episodes, num_envs=num_envs, batch_size=batch_size, seed=seed,
                        shard_rows=shard_rows)
    cfg.validate()
    spec = envs.resolve(env, sticky=sticky, frame_skip=frame_skip)
    return collect(spec, Path(out), RandomPolicy(spec.num_actions, seed), cfg, append=resume)


@_python_errors
def train_model(data: str | Path, out: str | Path, *, algo: str = "dqn", init: str | Path | None = None,
                seed: int = 0, overwrite: bool = False, device: str = "auto", track: str = "none",
                **settings: Any) -> dict[str, Any]:
    """`trl train`: train on a dataset and write a checkpoint at ``out``; ``settings`` are the
    model's and the algorithm's (n_embd=16, updates=2000, ...); ``track`` tensorboard or trackio
    also writes the training's curves into it. Returns the training's metrics."""
    from transformer_rl.models import ModelArgs
    from transformer_rl.settings import Algo, Track, as_choice, fill
    from transformer_rl.train import algorithm
    from transformer_rl.train.offline import train

    algo = as_choice(Algo, algo, "algo")
    built = fill({"model": ModelArgs, "learner": algorithm(algo).config}, settings, f"to --algo {algo}")
    if init is not None and any(k in built["model"].__dataclass_fields__ for k in settings):
        raise UsageError("model options do not apply with --init: the checkpoint's model is trained")
    return train(Path(data), Path(out), algo=algo, model_args=built["model"], config=built["learner"],
                 init=None if init is None else Path(init), seed=seed, overwrite=overwrite, device=device,
                 track=as_choice(Track, track, "track"))


@_python_errors
def evaluate_checkpoint(checkpoint: str | Path, *, episodes: int = 100, seed: int = 1_000_000,
                        record: str | Path | None = None, gif: str | Path | None = None, gif_frames: int = 600,
                        mode: str = "greedy",
                        target_return: float | None = None, device: str = "auto") -> dict[str, Any]:
    """`trl eval`: play ``episodes`` episodes, one per env, and return the report (what
    `trl eval --report` writes); ``record`` writes them as a dataset, ``gif`` the first (at most
    ``gif_frames`` frames)."""
    from transformer_rl.evaluate.evaluate import evaluate

    policy = _load_policy(checkpoint, device=device, num_envs=1, mode=mode, target_return=target_return)
    loaded = policy.checkpoint
    return evaluate(loaded.model, loaded.spec, loaded.algo, episodes=episodes, seed=seed,
                    record=None if record is None else Path(record), gif=None if gif is None else Path(gif),
                    gif_frames=gif_frames,
                    producer={"checkpoint": str(checkpoint)}, mode=mode, target_return=policy.target_return)


@_python_errors
def run_experiment(env: str = "CartPole-v1", algo: str = "dqn", **settings: Any) -> dict[str, Any]:
    """`trl run`: collect -> train -> eval for the preset's iterations under <root>/<name>
    (resumed if it is there); ``settings`` as the options (name="...", root="runs", seed=1,
    model="mlp", iterations=5, ...). Returns the run's report (report.json)."""
    from transformer_rl.config import RunConfig
    from transformer_rl.pipeline import run

    for key in ("root", "init", "seed_data"):
        if settings.get(key) is not None:
            settings[key] = Path(settings[key])
    return run(RunConfig.create(env, algo, **settings), log=lambda *a, **k: None)
