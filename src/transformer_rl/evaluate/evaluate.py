"""Evaluation through EnvPool: report.json, the episodes as a dataset, a GIF.

Each of N envs plays exactly one episode (taking the first N episodes to finish would favour
short ones). The rollouts go through the same collector as `trl collect`, so a recording
validates and verifies like any dataset.
"""

from __future__ import annotations

import io
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from transformer_rl.collect.job import collect
from transformer_rl.collect.policies import ModelPolicy
from transformer_rl.collect.rollout import CollectConfig
from transformer_rl.datasets.ranks import DiscardingWriter
from transformer_rl.datasets.reader import load
from transformer_rl.datasets.writer import open_for_append
from transformer_rl.envs import EnvSpec, make_pool
from transformer_rl.errors import UsageError
from transformer_rl.files import atomic_write_bytes, output_path, removed_on_failure
from transformer_rl.settings import ENVS, EvalMode, Range, check_seed, check_value
from transformer_rl.train import algorithm, check_mode, check_target


def evaluate(
    model,
    spec: EnvSpec,
    algo: str,
    *,
    episodes: int = 100,
    seed: int = 1_000_000,
    record: Path | None = None,
    gif: Path | None = None,
    gif_frames: int = 600,
    producer: dict[str, Any] | None = None,
    mode: str = "greedy",
    target_return: float | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Play ``episodes`` episodes, greedy or sampled from the policy (not DQN); a Decision
    Transformer plays for ``target_return``. Returns the report (and writes the recording / GIF).
    ``progress`` is called with the number of episodes finished as they finish."""
    mode = EvalMode(mode)
    check_mode(algo, mode)
    check_target(algo, target_return)
    if target_return is not None:
        check_value("target_return", target_return, None)
    check_value("episodes", episodes, ENVS)
    check_seed(seed, episodes)
    out = output_path(record, "--record") if record is not None else None
    if out is not None and out.exists():
        raise UsageError(f"--record {record} already exists; choose a new directory")
    check_value("gif_frames", gif_frames, Range(ge=1, le=100_000))
    if gif is not None:
        gif = output_path(gif, "--gif")
        check_gif(gif, spec)
    policy = ModelPolicy(model, episodes, mode, algo=algo, acts_on=algorithm(algo).acts_on, seed=seed,
                         describe=producer, target_return=target_return or 0.0)
    cfg = CollectConfig(episodes_per_env=1, num_envs=episodes, seed=seed)
    counted = None if progress is None else lambda stats: progress(stats.episodes)
    start = time.perf_counter()
    if out is None and gif is None:  # nothing to keep: the episodes are counted, never written
        stats = collect(spec, out, policy, cfg, writer=DiscardingWriter(seed, episodes), progress=counted)
        wall = time.perf_counter() - start
    else:
        stats, wall = _recorded(spec, out, policy, cfg, counted, gif, gif_frames, start)
    returns, lengths = np.array(stats.returns), np.array(stats.lengths)
    return {
        "env_id": spec.env_id,
        "episodes": len(returns),
        "mean_return": float(returns.mean()),
        "std_return": float(returns.std()),
        "min_return": float(returns.min()),
        "max_return": float(returns.max()),
        "mean_length": float(lengths.mean()),
        "std_length": float(lengths.std()),
        "min_length": int(lengths.min()),
        "max_length": int(lengths.max()),
        "env_steps": stats.env_steps,
        "wall_s": round(wall, 3),
        "seed": seed,
        "mode": str(mode),
        "target_return": target_return,
        "recorded": str(record) if record is not None else None,
    }


def _recorded(spec: EnvSpec, out: Path | None, policy, cfg: CollectConfig, counted, gif: Path | None,
              gif_frames: int, start: float):
    """Play the evaluation into a recording at ``out`` (or, for a GIF only, a temporary one):
    (stats, wall seconds)."""
    tmp = None
    if out is None:  # the GIF replays the first episode from a recording
        tmp = Path(tempfile.mkdtemp(prefix="trl-eval-"))
        out = tmp / "episodes"
    try:
        writer = open_for_append(out, spec, seed=cfg.seed, num_envs=cfg.num_envs, batch_size=cfg.num_envs,
                                 producer=policy.describe(), shard_rows=cfg.shard_rows, append=False)
        # a recording is all the episodes or nothing: a failure or a signal removes it
        with removed_on_failure(out, writer.created):
            stats = collect(spec, out, policy, cfg, writer=writer, progress=counted)
            wall = time.perf_counter() - start
            if gif is not None:
                write_gif(out, spec, gif, max_frames=gif_frames)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return stats, wall


def write_gif(dataset: Path, spec: EnvSpec, path: Path, episode: int = 0, max_frames: int = 600) -> None:
    """Draw one recorded episode: CartPole from its state, Atari by replaying the actions in
    an EnvPool env that renders full-size colour frames (same seed, same stream)."""
    from PIL import Image

    data = load(dataset)
    a, b = int(data.episode_rows[episode]), int(data.episode_rows[episode + 1])
    b = min(b, a + max_frames)
    check_gif(path, spec)
    if spec.is_ram:
        frames = _atari_frames(data, spec, episode, a, b)
    else:
        frames = [_draw_cartpole(o) for o in data.obs[a:b]]
    images = [Image.fromarray(f) for f in frames]
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], duration=40, loop=0,
                   comment=GIF_MARK)
    atomic_write_bytes(path, buffer.getvalue())


GIF_MARK = b"trl episode"


def check_gif(path: Path, spec: EnvSpec) -> None:
    """A .gif path trl may write: a new file, or a GIF trl drew earlier; an env it can draw."""
    from PIL import Image, UnidentifiedImageError

    if not (spec.is_ram or spec.task.startswith("CartPole")):
        raise UsageError(f"--gif draws CartPole and Atari games, not {spec.env_id}; leave it out")
    if path.suffix.lower() != ".gif":
        raise UsageError(f"--gif {path}: give a file name ending in .gif")
    if path.is_dir() or not path.parent.is_dir():
        raise UsageError(f"--gif {path}: give a file in an existing directory")
    if path.exists():
        try:
            with Image.open(path) as old:
                ours = old.info.get("comment") == GIF_MARK
        except (OSError, UnidentifiedImageError):
            ours = False
        if not ours:
            raise UsageError(f"--gif {path} exists and was not drawn by trl; choose another path")


def _atari_frames(data, spec: EnvSpec, episode: int, a: int, b: int) -> list[np.ndarray]:
    env_index = int(data.env_index[a])
    segment = next(s for s in data.manifest["segments"]
                   if s["env_index_offset"] <= env_index < s["env_index_offset"] + s["num_envs"])
    # replay env_index's stream from its seed up to and through this episode
    stream_rows = np.flatnonzero(data.env_index == env_index)
    render = EnvSpec(**{**spec.__dict__, "config": {
        **spec.config, "img_height": 210, "img_width": 160, "gray_scale": False}})
    pool = make_pool(render, 1, segment["seed"] + env_index - segment["env_index_offset"])
    obs, _ = pool.reset()
    frames = []
    for r in stream_rows:
        if r >= a:
            frames.append(np.transpose(obs[0][-3:], (1, 2, 0)))
        if r >= b - 1:
            break
        obs, *_ , = pool.step(np.array([data.action[r]], np.int32))[:1]
        if data.terminated[r] or data.truncated[r]:  # autoreset step, its action is ignored
            obs, *_ = pool.step(np.zeros(1, np.int32))[:1]
    return frames


def _draw_cartpole(state: np.ndarray, width: int = 300, height: int = 200) -> np.ndarray:
    from PIL import Image, ImageDraw

    x, _, theta, _ = (float(v) for v in state[:4])
    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    scale = width / 9.6  # the track spans x in [-4.8, 4.8]
    cx, cy = width / 2 + x * scale, height * 0.7
    d.line([(0, cy + 15), (width, cy + 15)], fill="black")
    d.rectangle([cx - 20, cy - 10, cx + 20, cy + 10], fill=(60, 60, 60))
    pole = 1.0 * scale  # pole length 2 * 0.5
    tip = (cx + pole * np.sin(theta), cy - pole * np.cos(theta))
    d.line([(cx, cy), tip], fill=(200, 120, 60), width=6)
    return np.asarray(img)
