"""`trl datasets ...`: list, info, validate, verify."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from transformer_rl.cli.common import console, err_console, user_errors
from transformer_rl.errors import DamagedData, UsageError

datasets_app = typer.Typer(help="Inspect, validate and verify datasets.", no_args_is_help=True)


@datasets_app.command("list")
@user_errors
def datasets_list(
    root: Annotated[Path, typer.Argument(help="Directory to search for datasets.")] = Path("."),
) -> None:
    """List the datasets under a directory (each checked: manifest, shard sizes and checksums)."""
    from transformer_rl.datasets.format import MANIFEST, check_shards, read_manifest, totals

    if not root.is_dir():
        raise UsageError(f"{root} is not a directory")
    found = sorted(p.parent for p in root.rglob(MANIFEST))
    table = Table("dataset", "env", "rows", "episodes", "shards", "MB", "status")
    for path in found:
        try:
            m = read_manifest(path)
            check_shards(path, m)
        except UsageError as e:  # damaged (or of another format version): say so, go on
            table.add_row(str(path), "?", "", "", "", "", f"[red]damaged[/]: {e}")
            continue
        rows, eps = totals(m)
        mb = sum(s["bytes"] for s in m["shards"]) / 1e6
        table.add_row(str(path), m["env_id"], f"{rows:,}", f"{eps:,}", str(len(m["shards"])), f"{mb:.1f}", "ok")
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


def _print_report(root: Path, check, what: str) -> None:
    """Run a check; a damaged dataset fails it (exit 1), a path that is no dataset is a usage error."""
    from transformer_rl.datasets.checks import Report

    try:
        report = check()
    except DamagedData as e:
        report = Report(problems=[str(e)])
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

    _print_report(root, lambda: validate(root), "structure valid")


@datasets_app.command("verify")
@user_errors
def datasets_verify(root: Annotated[Path, typer.Argument(help="Dataset directory.")]) -> None:
    """Re-simulate every episode with EnvPool; observations and rewards must match bit for bit."""
    from transformer_rl.datasets.checks import verify

    _print_report(root, lambda: verify(root), "every episode re-simulates bit for bit")
