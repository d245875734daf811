"""`trl datasets ...`: list, info, validate, verify, and export to / import from Minari."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from transformer_rl.cli.common import console, err_console, progress_bar, stop, user_errors
from transformer_rl.errors import DamagedData, UsageError

datasets_app = typer.Typer(help="Inspect, validate and verify datasets. Example: trl datasets info data/cartpole",
                           no_args_is_help=True)


@datasets_app.command("list")
@user_errors
def datasets_list(
    root: Annotated[Path, typer.Argument(help="Directory to search for datasets.")] = Path("."),
) -> None:
    """List the datasets under a directory (each checked: manifest, shard sizes and checksums).

    Example: trl datasets list data
    """
    from transformer_rl.datasets.format import MANIFEST_NAMES, read_manifest, totals
    from transformer_rl.datasets.shards import check_shards

    if not root.is_dir():
        raise UsageError(f"{root} is not a directory")
    found = sorted({p.parent for name in MANIFEST_NAMES.values() for p in root.rglob(name)})
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
    """Summarise a dataset: env, config, seeds, size, returns.

    Example: trl datasets info data/cartpole --json
    """
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
    """Check structure: manifest vs shards, checksums, schema, episode contiguity and step order.

    Example: trl datasets validate data/cartpole
    """
    from transformer_rl.datasets.checks import validate

    _print_report(root, lambda: validate(root), "structure valid")


@datasets_app.command("verify")
@user_errors
def datasets_verify(root: Annotated[Path, typer.Argument(help="Dataset directory.")]) -> None:
    """Re-simulate every episode with EnvPool; observations and rewards must match bit for bit.

    Example: trl datasets verify data/cartpole
    """
    from transformer_rl.datasets.checks import verify

    progress, update = progress_bar("verify", "{task.completed:,}/{task.total:,} observations")

    def check():
        try:
            return verify(root, progress=lambda done, total: update(done, total=total))
        finally:
            stop(progress)  # before the verdict prints

    _print_report(root, check, "every episode re-simulates bit for bit")


MinariRootOpt = Annotated[
    Path | None,
    typer.Option("--minari-root", help="Minari's datasets root (default: MINARI_DATASETS_PATH, else "
                 "~/.minari/datasets).", show_default=False),
]


@datasets_app.command("export")
@user_errors
def datasets_export(
    root: Annotated[Path, typer.Argument(help="Dataset directory.")],
    minari: Annotated[str | None, typer.Option("--minari", help="Minari dataset id to write, e.g. "
                                               "trl/cartpole-random-v0 (it must not exist).",
                                               show_default=False)] = None,
    minari_root: MinariRootOpt = None,
) -> None:
    """Write a dataset as a local Minari dataset (its Parquet data format): spaces, every episode,
    rewards, terminations, truncations and final observations.

    Example: trl datasets export data/cartpole --minari trl/cartpole-random-v0
    """
    from transformer_rl.datasets.minari import export_minari
    from transformer_rl.datasets.minari import minari_root as default_root

    if minari is None:
        raise UsageError("give --minari NAME, the Minari dataset id to write (the one export format)")
    done = export_minari(root, minari, minari_root)
    hint = "" if minari_root is None or Path(minari_root) == default_root(None) else \
        f" with MINARI_DATASETS_PATH={done['root']}"
    console.print(f"{done['episodes']:,} episodes ({done['steps']:,} steps) -> Minari dataset {minari} at "
                  f"{done['path']}; read it with minari.load_dataset({minari!r}){hint}", highlight=False)


@datasets_app.command("import")
@user_errors
def datasets_import(
    minari: Annotated[str, typer.Argument(help="Local Minari dataset: its id (under --minari-root) or its path.")],
    out: Annotated[Path, typer.Option("--out", help="Dataset directory to create (it must not exist).")],
    minari_root: MinariRootOpt = None,
    env: Annotated[str | None, typer.Option("--env", help="EnvPool id it was played on, when its metadata "
                                            "names none trl knows.", show_default=False)] = None,
) -> None:
    """Turn a local Minari dataset (Arrow or Parquet data format) of an env trl knows into a dataset.

    Example: trl datasets import trl/cartpole-random-v0 --out data/from-minari
    """
    from transformer_rl.datasets.minari_import import import_minari

    done = import_minari(minari, out, root=minari_root, env=env)
    replay = "`trl datasets verify` re-simulates it" if done["resimulable"] else \
        "its episodes were not played from trl's env streams, so verify cannot re-simulate them"
    console.print(f"{done['episodes']:,} episodes ({done['steps']:,} steps) of {done['env_id']} from Minari "
                  f"dataset {done['dataset_id']} -> {done['path']} ({replay})", highlight=False)
