"""The reproducibility record: a run's config.json and report.json, and `trl eval --report`, say
which command made them, with which versions, from which commit; no machine's paths inside."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from conftest import cli
from transformer_rl import provenance

ROOT = Path(__file__).resolve().parents[1]


def check_record(record: dict, command: list[str]) -> None:
    assert record["command"] == command
    assert all(record["versions"][name] for name in ("transformer-rl", "torch", "envpool", "numpy"))
    assert re.fullmatch(r"[0-9a-f]{40}", record["git"]["commit"])  # the suite runs from a checkout
    assert isinstance(record["git"]["modified"], bool)


def test_run_and_eval_record_what_made_them(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["run", "--env", "CartPole-v1", "--algo", "ppo", "--iterations", "2", "--eval-episodes", "4",
            "--root", str(tmp_path / "runs"), "--name", "p"]  # an absolute path inside the working directory
    monkeypatch.setattr(sys, "argv", ["/some/venv/bin/trl", *args])
    assert cli(*args).exit_code == 0
    typed = ["trl", *args[:-3], "runs", "--name", "p"]
    run = tmp_path / "runs" / "p"
    check_record(json.loads((run / "config.json").read_text())["provenance"], typed)
    check_record(json.loads((run / "report.json").read_text())["provenance"], typed)
    assert str(tmp_path) not in (run / "config.json").read_text()

    args = ["eval", "runs/p/checkpoints/best", "--episodes", "3", "--report", "eval.json"]
    monkeypatch.setattr(sys, "argv", ["trl", *args])
    assert cli(*args).exit_code == 0
    check_record(json.loads((tmp_path / "eval.json").read_text())["provenance"], ["trl", *args])


def test_no_absolute_path_is_recorded(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert provenance.command_line(["trl", "--out", str(tmp_path / "a"), "--data", "/elsewhere/d", "rel"]) == [
        "trl", "--out", "a", "--data", ".../d", "rel"]
