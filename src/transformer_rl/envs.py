"""Env ids -> EnvPool configuration, and the adapter from EnvPool's output to our observations.

Ids are EnvPool tasks with a flat Box observation and Discrete actions (``CartPole-v1``,
``Acrobot-v1``, ...) and ``<Game>-ram`` for every Atari game: EnvPool task ``<Game>-v5`` whose
observation is the 128 RAM bytes in ``info["ram"]``.
"""

from __future__ import annotations

import difflib
import warnings
from dataclasses import asdict, dataclass, field
from functools import cache
from typing import Any

import numpy as np

from transformer_rl.errors import UsageError
from transformer_rl.schema import AnyJSON, Float, Int, List, Map, Obj, Str, problem

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import envpool
    from envpool.registration import registry

# EnvPool's Box spaces carry float64 bounds; gymnasium warns each time one is built.
warnings.filterwarnings("ignore", message=".*precision lowered by casting.*")

RAM_SUFFIX = "-ram"
RAM_SIZE = 128

# ALE v5 semantics (Machado et al. 2018): frame skip 4, sticky actions 0.25, minimal action set,
# no no-op starts, no fire reset, full episodes. The rendered frame is kept as small as EnvPool
# allows since only the RAM is used.
ATARI_V5 = dict(
    frame_skip=4,
    repeat_action_probability=0.25,
    full_action_space=False,
    noop_max=1,
    use_fire_reset=False,
    episodic_life=False,
    reward_clip=False,
    stack_num=1,
    img_height=1,
    img_width=1,
    gray_scale=True,
)


# an EnvSpec as files record it; ``config`` is checked against `resolve` (EnvSpec.from_json)
ENV_SCHEMA = Obj({"env_id": Str(), "task": Str(), "obs_shape": List(Int(ge=1), min_len=1),
                  "obs_dtype": Str(("float32", "uint8")), "num_actions": Int(ge=1), "max_episode_steps": Int(ge=1),
                  "config": Map(AnyJSON())}, closed=True)
_SETTINGS = Obj({}, optional={"repeat_action_probability": Float(ge=0, le=1), "frame_skip": Int(),
                              "max_episode_steps": Int()})


@dataclass(frozen=True)
class EnvSpec:
    """Everything needed to build, describe and re-simulate an environment."""

    env_id: str  # what the user typed, e.g. "Breakout-ram"
    task: str  # EnvPool task, e.g. "Breakout-v5"
    obs_shape: tuple[int, ...]
    obs_dtype: str  # "float32" or "uint8"
    num_actions: int
    max_episode_steps: int
    config: dict[str, Any] = field(default_factory=dict)  # extra envpool.make kwargs

    @property
    def is_ram(self) -> bool:
        return self.env_id.endswith(RAM_SUFFIX)

    @property
    def obs_dim(self) -> int:
        return int(np.prod(self.obs_shape))

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["obs_shape"] = list(self.obs_shape)
        return d

    @classmethod
    def from_json(cls, d: Any) -> EnvSpec:
        """The spec a file recorded, after checking it against ENV_SCHEMA and against what
        `resolve` builds for its id and settings today (UsageError naming the difference)."""
        found = problem(ENV_SCHEMA, d, "env") or problem(_SETTINGS, d["config"], "env.config")
        if found:
            raise UsageError(found)
        config = d["config"]
        ram = d["env_id"].endswith(RAM_SUFFIX)
        rebuilt = resolve(d["env_id"], sticky=config.get("repeat_action_probability") if ram else None,
                          frame_skip=config.get("frame_skip") if ram else None,
                          max_episode_steps=config.get("max_episode_steps")).to_json()
        differs = [k for k in rebuilt if rebuilt[k] != d[k]]
        if differs:
            key = differs[0]
            unknown = sorted(set(config) - set(rebuilt["config"]))
            if key == "config" and unknown:
                raise UsageError(f"env.config has a setting trl does not know ({unknown[0]})")
            raise UsageError(f"env.{key} is not what trl builds for {d['env_id']}")
        return cls(**{**d, "obs_shape": tuple(d["obs_shape"])})


@cache
def atari_games() -> tuple[str, ...]:
    """Atari game names EnvPool knows, e.g. ("Adventure", ..., "Breakout", ...)."""
    return tuple(
        task[: -len("-v5")]
        for task, entry in registry.specs.items()
        if task.endswith("-v5") and entry[0] == "envpool.atari"
    )


@cache
def accepted_ids() -> tuple[str, ...]:
    """The ids `resolve` accepts: every Atari game as <Game>-ram, and the other EnvPool tasks
    with a flat Box observation and Discrete actions (whose assets are installed)."""
    accepted = [game + RAM_SUFFIX for game in atari_games()]
    for task in envpool.list_all_envs():
        if registry.specs[task][0] == "envpool.atari":
            continue
        try:
            resolve(task)
        except Exception:  # noqa: BLE001 - refused, or its assets are missing: not listed
            continue
        accepted.append(task)
    return tuple(accepted)


@cache
def known_ids() -> tuple[str, ...]:
    ram = [game + RAM_SUFFIX for game in atari_games()]
    others = [t for t in envpool.list_all_envs() if registry.specs[t][0] != "envpool.atari"]
    return tuple(ram + others)


def _unknown(env_id: str) -> UsageError:
    close = difflib.get_close_matches(env_id, known_ids(), n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else "see `trl envs` for valid ids"
    return UsageError(f"unknown env id {env_id!r}: {hint}")


def resolve(
    env_id: str,
    *,
    sticky: float | None = None,
    frame_skip: int | None = None,
    max_episode_steps: int | None = None,
) -> EnvSpec:
    """Turn a user id into an EnvSpec, or raise UsageError naming the closest valid ids."""
    overrides: dict[str, Any] = {}
    if max_episode_steps is not None:
        if max_episode_steps <= 0:
            raise UsageError("--max-episode-steps must be positive")
        overrides["max_episode_steps"] = max_episode_steps
    if env_id.endswith(RAM_SUFFIX):
        game = env_id[: -len(RAM_SUFFIX)]
        if game not in atari_games():
            raise _unknown(env_id)
        config = dict(ATARI_V5, **overrides)
        if sticky is not None:
            if not 0.0 <= sticky < 1.0:  # NaN fails too
                raise UsageError(f"--sticky {sticky} is out of range: give a probability in [0, 1)")
            config["repeat_action_probability"] = sticky
        if frame_skip is not None:
            if not 1 <= frame_skip <= 64:
                raise UsageError(f"--frame-skip {frame_skip} is out of range: give 1 to 64 (ALE v5: 4)")
            config["frame_skip"] = frame_skip
        task = game + "-v5"
        spec = _make_spec(task, config)
        return EnvSpec(
            env_id=env_id,
            task=task,
            obs_shape=(RAM_SIZE,),
            obs_dtype="uint8",
            num_actions=int(spec.action_space.n),
            max_episode_steps=int(spec.config.max_episode_steps),
            config=config,
        )
    if sticky is not None or frame_skip is not None:
        raise UsageError(f"--sticky and --frame-skip apply to Atari '-ram' ids, not {env_id!r}")
    if env_id not in registry.specs:
        raise _unknown(env_id)
    if registry.specs[env_id][0] == "envpool.atari":
        raise UsageError(f"{env_id!r} has image observations: use '{env_id[:-3]}-ram' for its RAM")
    spec = _make_spec(env_id, overrides)
    if getattr(spec.config, "max_num_players", 1) > 1:
        raise UsageError(f"{env_id!r} is a multi-player game; trl plays single-agent envs (see `trl envs`)")
    obs_space, act_space = spec.observation_space, spec.action_space
    if not hasattr(act_space, "n"):
        raise UsageError(f"{env_id!r} has continuous actions; trl needs Discrete actions")
    if not hasattr(obs_space, "shape") or obs_space.shape is None or len(obs_space.shape) != 1:
        raise UsageError(f"{env_id!r} has a structured observation; trl needs a flat Box")
    return EnvSpec(
        env_id=env_id,
        task=env_id,
        obs_shape=tuple(int(s) for s in obs_space.shape),
        obs_dtype="uint8" if obs_space.dtype == np.uint8 else "float32",
        num_actions=int(act_space.n),
        max_episode_steps=int(spec.config.max_episode_steps),
        config=overrides,
    )


def _make_spec(task: str, config: dict[str, Any]):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return envpool.make_spec(task, **config)


def make_pool(spec: EnvSpec, num_envs: int, seed: int, batch_size: int | None = None,
              num_threads: int | None = None):
    """An EnvPool pool: sync when batch_size == num_envs, async (send/recv) when smaller.

    Env i of the pool plays exactly the stream of a single env seeded ``seed + i``.
    ``num_threads``: EnvPool's worker threads (None: EnvPool's default).
    """
    threads = {} if num_threads is None else {"num_threads": min(num_threads, num_envs)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return envpool.make(
            spec.task,
            env_type="gymnasium",
            num_envs=num_envs,
            batch_size=batch_size or num_envs,
            seed=seed,
            **threads,
            **spec.config,
        )


def observe(spec: EnvSpec, obs: np.ndarray, info: dict[str, Any]) -> np.ndarray:
    """Our observation for a batch: the RAM bytes for Atari ids, EnvPool's obs otherwise."""
    if spec.is_ram:
        return info["ram"]
    return obs.astype(np.float32, copy=False) if spec.obs_dtype == "float32" else obs


def reward_threshold(spec: EnvSpec) -> float | None:
    """The score at which the env counts as solved (CartPole-v1: 475), if EnvPool knows one."""
    value = getattr(_make_spec(spec.task, spec.config).config, "reward_threshold", None)
    return float(value) if value is not None else None


def envpool_version() -> str:
    return envpool.__version__
