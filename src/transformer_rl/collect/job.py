"""One collection to a target (rows, episodes, or episodes per env), by one process or by the
ranks of a torchrun job together: `trl collect`, an evaluation, an iteration's replay.

Under torchrun each rank plays ``num_envs / N`` envs (its own segment) towards its equal part
of the target, and every ``exchange_every_s`` the ranks send their finished episodes to rank 0's
writer (datasets/ranks.py); in one process the same steps exchange nothing.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from transformer_rl import distributed
from transformer_rl.collect.policies import Policy
from transformer_rl.collect.rollout import CollectConfig, Collector, CollectStats, ProgressFn
from transformer_rl.datasets.ranks import open_writer
from transformer_rl.envs import EnvSpec
from transformer_rl.errors import UsageError


def collect(
    spec: EnvSpec,
    out: Path,
    policy: Policy,
    cfg: CollectConfig,
    *,
    append: bool = False,
    progress: ProgressFn | None = None,
    cut_entries: int = 1 << 16,
    cut_every_s: float = 0.5,
    writer=None,
    exchange_every_s: float = 0.5,
) -> CollectStats:
    """Play ``policy`` in EnvPool and append whole episodes to the dataset at ``out``; the
    job's totals (on ranks other than 0: the rank's own).

    With ``append`` the targets count what the dataset already holds (that is ``--resume``);
    new streams continue after the dataset's last env index. ``writer``: this rank's, opened
    already; ``cfg`` is then this rank's part, played to its end before the episodes go to
    rank 0 (when the writer closes)."""
    if cfg.steps is None and cfg.episodes is None and cfg.episodes_per_env is None:
        raise UsageError("give one of --steps or --episodes")
    cfg.validate()
    if writer is not None:
        collector = Collector(spec, cfg, writer, progress=progress, cut_entries=cut_entries,
                              cut_every_s=cut_every_s)
        with _closed(collector, keep_on_interrupt=True):
            collector.play(policy)
        return collector.stats
    local = replace(cfg, num_envs=distributed.share(cfg.num_envs, "--num-envs"),
                    batch_size=None if cfg.batch_size is None else distributed.share(cfg.batch_size, "--batch-size"))
    writer = open_writer(out, spec, seed=cfg.seed, num_envs=local.num_envs,
                         batch_size=local.batch_size or local.num_envs, producer=policy.describe(),
                         shard_rows=cfg.shard_rows, append=append)
    before = distributed.on_main(lambda: [writer.dataset_rows, writer.dataset_episodes])
    part = 1  # episodes per env: every env plays them
    if cfg.episodes_per_env is None:  # the target less what the dataset holds, this rank's part
        by_rows = cfg.steps is not None
        part = distributed.part(max((cfg.steps if by_rows else cfg.episodes) - before[0 if by_rows else 1], 0))
        mine = part + (writer.rows if by_rows else writer.episodes)  # counted as the collector counts
        local = replace(local, steps=mine if by_rows else None, episodes=None if by_rows else mine)

    def job_progress(stats: CollectStats) -> None:  # rank 0 shows the dataset's growth
        progress(replace(stats, rows=writer.dataset_rows - before[0], episodes=writer.dataset_episodes - before[1]))

    collector = Collector(spec, local, writer, cut_entries=cut_entries, cut_every_s=cut_every_s,
                          progress=job_progress if progress and writer.writes else None)
    with _closed(collector, keep_on_interrupt=writer.solo):
        while True:
            if part and not collector.done:
                collector.play(policy, until=time.perf_counter() + exchange_every_s)
            writer.exchange()
            if distributed.all_done(collector.done or not part):
                break
    stats = collector.stats
    env_steps, wall = distributed.all_sum([stats.env_steps, stats.wall_s - stats.startup_s])
    if not writer.writes:
        return stats
    return replace(stats, rows=writer.dataset_rows - before[0], episodes=writer.dataset_episodes - before[1],
                   env_steps=int(env_steps), dataset_rows=writer.dataset_rows, dataset_episodes=writer.dataset_episodes,
                   wall_s=wall / distributed.world_size() + stats.startup_s)


class _closed:
    """Close the collector when its play ends (and on Ctrl-C with ``keep_on_interrupt``: the
    finished episodes stay); after any other error, abandon its writer (the dataset stays as
    listed)."""

    def __init__(self, collector: Collector, keep_on_interrupt: bool):
        self.collector, self.keep_on_interrupt = collector, keep_on_interrupt

    def __enter__(self) -> Collector:
        return self.collector

    def __exit__(self, exc_type, *_) -> None:
        if exc_type is None or (exc_type is KeyboardInterrupt and self.keep_on_interrupt):
            self.collector.close()
        else:
            self.collector.writer.abandon()
