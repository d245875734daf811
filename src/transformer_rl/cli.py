"""`trl`: the command line. Thin: each command parses, then calls one plain function."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from transformer_rl import __version__
from transformer_rl.errors import UsageError

app = typer.Typer(
    help="Teach GPT-style transformers to play games: collect, train, eval, run.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
datasets_app = typer.Typer(help="Inspect, validate and verify datasets.", no_args_is_help=True)
app.add_typer(datasets_app, name="datasets")

console = Console()
err_console = Console(stderr=True)

ENV_PANEL = "Environment"
DATA_PANEL = "Data"


def user_errors(fn):
    """A UsageError becomes one line on stderr and exit code 2, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UsageError as e:
            err_console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper


def _version(value: bool) -> None:
    if value:
        console.print(f"trl {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Teach GPT-style transformers to play games."""


EnvOpt = Annotated[
    str,
    typer.Option(
        "--env", help="EnvPool id (CartPole-v1, Acrobot-v1, ...) or <Game>-ram for Atari RAM.",
        rich_help_panel=ENV_PANEL,
    ),
]
StickyOpt = Annotated[
    float | None,
    typer.Option(help="Atari sticky-action probability (ALE v5 default 0.25).", rich_help_panel=ENV_PANEL),
]
FrameSkipOpt = Annotated[
    int | None, typer.Option(help="Atari frame skip (ALE v5 default 4).", rich_help_panel=ENV_PANEL)
]


def _collect_progress(total: int, unit: str):
    progress = Progress(
        TextColumn("[bold]collect"),
        BarColumn(),
        TextColumn("{task.completed:,}/{task.total:,} " + unit),
        TextColumn("{task.fields[sps]:,.0f} steps/s"),
        TextColumn("{task.fields[episodes]:,} episodes"),
        TextColumn("return {task.fields[mean_return]:.1f}"),
        TimeElapsedColumn(),
        console=err_console,
        transient=False,
    )
    task = progress.add_task("collect", total=total, sps=0.0, episodes=0, mean_return=0.0)

    def update(stats, already: int = 0) -> None:
        if not progress.live.is_started:  # started on first news, so errors print alone
            progress.start()
        recent = stats.returns[-100:]
        done = stats.rows if unit == "steps" else stats.episodes
        progress.update(
            task,
            completed=min(total, already + done),
            sps=stats.steps_per_s,
            episodes=stats.episodes,
            mean_return=sum(recent) / len(recent) if recent else 0.0,
        )

    return progress, update


@app.command()
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
    policy: Annotated[str, typer.Option(help="Behaviour policy: random.")] = "random",
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
    from transformer_rl import envs
    from transformer_rl.collect.policies import RandomPolicy
    from transformer_rl.collect.rollout import CollectConfig
    from transformer_rl.collect.rollout import collect as run_collect

    cfg = CollectConfig(steps=steps, episodes=episodes, num_envs=num_envs, batch_size=batch_size,
                        seed=seed, shard_rows=shard_rows)
    cfg.validate()
    spec = envs.resolve(env, sticky=sticky, frame_skip=frame_skip)
    if policy != "random":
        raise UsageError(f"unknown --policy {policy!r}: use random (trained policies: `trl eval --record`)")
    behaviour = RandomPolicy(spec.num_actions, seed)
    progress, update = _collect_progress(steps or episodes, "steps" if steps else "episodes")
    try:
        stats = run_collect(spec, out, behaviour, cfg, append=resume, progress=update)
    finally:
        progress.stop()
    console.print(
        f"{stats.rows:,} transitions in {stats.episodes:,} episodes -> {out} "
        f"(dataset: {stats.dataset_rows:,} rows, {stats.dataset_episodes:,} episodes; "
        f"{stats.steps_per_s:,.0f} env steps/s)"
    )


@app.command("envs")
def list_envs(
    match: Annotated[str, typer.Argument(help="Only ids containing this text.")] = "",
) -> None:
    """List the env ids trl accepts (Atari games as <Game>-ram)."""
    from transformer_rl import envs

    ids = [i for i in envs.known_ids() if match.lower() in i.lower()]
    console.print("\n".join(ids))


@datasets_app.command("list")
@user_errors
def datasets_list(
    root: Annotated[Path, typer.Argument(help="Directory to search for datasets.")] = Path("."),
) -> None:
    """List the datasets under a directory."""
    from transformer_rl.datasets.format import MANIFEST, read_manifest, totals

    if not root.is_dir():
        raise UsageError(f"{root} is not a directory")
    found = sorted(p.parent for p in root.rglob(MANIFEST))
    table = Table("dataset", "env", "rows", "episodes", "shards", "MB")
    for path in found:
        try:
            m = read_manifest(path)
        except UsageError:
            continue
        rows, eps = totals(m)
        mb = sum(s["bytes"] for s in m["shards"]) / 1e6
        table.add_row(str(path), m["env_id"], f"{rows:,}", f"{eps:,}", str(len(m["shards"])), f"{mb:.1f}")
    console.print(table if found else f"no datasets under {root}")


@datasets_app.command("info")
@user_errors
def datasets_info(
    root: Annotated[Path, typer.Argument(help="Dataset directory.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Summarise a dataset: env, config, seeds, size, returns."""
    from transformer_rl.datasets.summary import summarize

    info = summarize(root)
    if as_json:
        console.print_json(json.dumps(info))
        return
    table = Table(show_header=False, box=None)
    for key, value in info.items():
        table.add_row(f"[bold]{key}", json.dumps(value) if isinstance(value, dict | list) else str(value))
    console.print(table)


def _print_report(root: Path, report, what: str) -> None:
    if report.ok:
        console.print(f"[green]OK[/] {root}: {what} ({report.rows:,} rows, {report.episodes:,} episodes)")
        return
    for problem in report.problems:
        err_console.print(f"[red]FAIL[/] {problem}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


@datasets_app.command("validate")
@user_errors
def datasets_validate(root: Annotated[Path, typer.Argument(help="Dataset directory.")]) -> None:
    """Check structure: manifest vs shards, checksums, schema, episode contiguity and step order."""
    from transformer_rl.datasets.checks import validate

    _print_report(root, validate(root), "structure valid")


@datasets_app.command("verify")
@user_errors
def datasets_verify(root: Annotated[Path, typer.Argument(help="Dataset directory.")]) -> None:
    """Re-simulate every episode with EnvPool; observations and rewards must match bit for bit."""
    from transformer_rl.datasets.checks import verify

    _print_report(root, verify(root), "every episode re-simulates bit for bit")


def main() -> None:
    app()
