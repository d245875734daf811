"""The README stays true: its generated blocks match what they are generated from, and every
command's --help carries an example."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from transformer_rl.cli.app import app

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import experiment  # noqa: E402
import sweep_report  # noqa: E402


def marked_blocks(path: Path) -> dict[str, str]:
    text = path.read_text()
    found = re.findall(r"<!-- report: (\S+) -->\n(.*?)<!-- /report: \1 -->", text, re.S)
    names = [name for name, _ in found]
    assert len(names) == len(set(names)), f"a block appears twice in {path.name}"
    return {name: body for name, body in found}


@pytest.mark.parametrize("path", ["README.md", "benchmarks/RESULTS.md"])
def test_generated_tables_match_the_committed_results(path):
    """`experiment.py report` wrote them from benchmarks/sweep/; nothing was typed by hand."""
    blocks = marked_blocks(ROOT / path)
    results = experiment.load_results()
    assert set(results) <= set(blocks), "a workload with results has no block: run experiment.py report"
    prefix = "../" if path.startswith("benchmarks/") else ""
    for workload, body in blocks.items():
        if workload == "presets":
            assert body.strip() == sweep_report.preset_table()
            continue
        if workload not in results:  # planned, nothing finished yet
            assert body.strip() == sweep_report.waiting(workload), f"{path}: run experiment.py report"
            continue
        rows = experiment.summary(results[workload])
        pngs = experiment.plot_paths(workload, rows, Path("docs"))
        expected = sweep_report.block(workload, rows, {kind: f"{prefix}{png}" for kind, png in pngs.items()})
        assert body.strip() == expected.strip(), f"{path}: the {workload} block is stale: run experiment.py report"
        assert all((ROOT / png).is_file() for png in pngs.values())


def test_each_table_appears_once():
    tables = re.findall(r"((?:^\|.*\|\n)+)", (ROOT / "README.md").read_text(), re.M)
    assert len(tables) == len(set(tables))
    assert "presets" in marked_blocks(ROOT / "README.md")


def command_paths(command, path=()):
    yield path
    for name, sub in getattr(command, "commands", {}).items():
        yield from command_paths(sub, (*path, name))


def test_every_help_has_an_example():
    runner = CliRunner()
    paths = list(command_paths(typer.main.get_command(app)))
    assert ("datasets", "verify") in paths and ("run",) in paths
    for path in paths:
        result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0, (path, result.output)
        assert "Example" in result.output, f"`trl {' '.join(path)} --help` has no example"


def test_training_options_name_their_algorithms():
    result = CliRunner().invoke(app, ["run", "--help"], env={"COLUMNS": "200"})
    for option, algos in (("--n-step", "(dqn)"), ("--epochs", "(ppo)"), ("--gamma", "(dqn, ppo)"),
                          ("--weight-decay", "(dt, bc)")):
        line = next(x for x in result.output.splitlines() if f" {option} " in x)
        assert algos in line, line
