"""The commands that need no model (collect, envs, datasets): `trl` runs these without importing
torch, which takes about a second of a short collection's start-up."""

from __future__ import annotations

from typing import Annotated

import typer

from transformer_rl import __version__
from transformer_rl.cli.collect import collect, list_envs
from transformer_rl.cli.common import OneLineErrors, console
from transformer_rl.cli.datasets import datasets_app

COMMANDS = ("collect", "envs", "datasets")


def _version(value: bool) -> None:
    if value:
        console.print(f"trl {__version__}")
        raise typer.Exit()


def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Teach GPT-style transformers to play games."""


def base_app() -> typer.Typer:
    app = typer.Typer(
        help="Teach GPT-style transformers to play games: collect, train, eval, run.\n\n"
             "Example: trl run --env CartPole-v1 --algo dqn --model gpt --name cartpole-s0",
        no_args_is_help=True,
        cls=OneLineErrors,
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    app.callback()(_main)
    app.add_typer(datasets_app, name="datasets")
    app.command()(collect)
    app.command("envs")(list_envs)
    return app
