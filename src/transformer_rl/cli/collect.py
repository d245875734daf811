"""`trl collect` and `trl envs`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from transformer_rl.cli.common import ENV_PANEL, EnvOpt, console, print_error, progress_bar, stop, user_errors
from transformer_rl.settings import Choice


class CollectPolicy(Choice):
    random = "random"


DATA_PANEL = "Data"


StickyOpt = Annotated[
    float | None,
    typer.Option(help="Atari sticky-action probability (ALE v5 default 0.25).", rich_help_panel=ENV_PANEL),
]
FrameSkipOpt = Annotated[
    int | None, typer.Option(help="Atari frame skip (ALE v5 default 4).", rich_help_panel=ENV_PANEL)
]


def _collect_progress(total: int, unit: str):
    progress, bar = progress_bar("collect", "{task.completed:,}/{task.total:,} " + unit,
                                 "{task.fields[sps]:,.0f} steps/s", "{task.fields[episodes]:,} episodes",
                                 "return {task.fields[mean_return]:.1f}", total=total, sps=0.0, episodes=0,
                                 mean_return=0.0)

    def update(stats, already: int = 0) -> None:
        recent = stats.returns[-100:]
        done = stats.rows if unit == "steps" else stats.episodes
        bar(min(total, already + done), sps=stats.steps_per_s, episodes=stats.episodes,
            mean_return=sum(recent) / len(recent) if recent else 0.0)

    return progress, update


@user_errors
def collect(
    env: EnvOpt,
    out: Annotated[Path, typer.Option(help="Dataset directory to create (or continue with --resume).")],
    steps: Annotated[int | None, typer.Option(help="Stop after this many recorded transitions.")] = None,
    episodes: Annotated[int | None, typer.Option(help="Stop after this many recorded episodes.")] = None,
    num_envs: Annotated[int, typer.Option(help="Envs in the EnvPool pool.")] = 8,
    batch_size: Annotated[
        int | None, typer.Option(help="Async EnvPool: envs per batch, < --num-envs.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Base seed: env stream i is seeded seed + i.")] = 0,
    policy: Annotated[CollectPolicy, typer.Option(help="Behaviour policy (trained policies: `trl eval "
                                                "--record`).")] = CollectPolicy.random,
    resume: Annotated[
        bool, typer.Option(help="Continue the dataset at --out until the target is reached.")
    ] = False,
    shard_rows: Annotated[int, typer.Option(help="Rows per Parquet shard.", rich_help_panel=DATA_PANEL)] = 100_000,
    sticky: StickyOpt = None,
    frame_skip: FrameSkipOpt = None,
) -> None:
    """Play an environment with EnvPool and write whole episodes to a Parquet dataset.

    Example: trl collect --env CartPole-v1 --steps 100000 --num-envs 8 --out data/cartpole
    """
    from transformer_rl import distributed, envs
    from transformer_rl.collect.job import collect as run_collect
    from transformer_rl.collect.policies import RandomPolicy
    from transformer_rl.collect.rollout import CollectConfig

    cfg = CollectConfig(steps=steps, episodes=episodes, num_envs=num_envs, batch_size=batch_size,
                        seed=seed, shard_rows=shard_rows)
    cfg.validate()
    spec = envs.resolve(env, sticky=sticky, frame_skip=frame_skip)
    progress, update = _collect_progress(steps or episodes, "steps" if steps else "episodes")
    distributed.init()  # under torchrun: the ranks build one dataset together
    try:
        stats = run_collect(spec, out, RandomPolicy(spec.num_actions, distributed.rank_seed(seed)), cfg,
                            append=resume, progress=update)
    finally:
        stop(progress)
    console.print(  # rank 0's console alone prints
        f"{stats.rows:,} transitions in {stats.episodes:,} episodes -> {out} "
        f"(dataset: {stats.dataset_rows:,} rows, {stats.dataset_episodes:,} episodes; "
        f"{stats.steps_per_s:,.0f} env steps/s)"
    )


def list_envs(
    match: Annotated[str, typer.Argument(help="Only ids containing this text.")] = "",
) -> None:
    """List the env ids trl accepts (Atari games as <Game>-ram); no match is an error (exit 1).

    Example: trl envs ram
    """
    from transformer_rl import envs

    ids = [i for i in envs.accepted_ids() if match.lower() in i.lower()]
    if not ids:
        print_error(f"no env id contains {match!r}; `trl envs` lists them all")
        raise typer.Exit(1)
    console.print("\n".join(ids))
