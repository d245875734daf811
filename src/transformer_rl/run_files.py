"""The files of a run directory that say where it is: state.json (`RunState`), config.json and
metrics.jsonl, each read against its declared structure here."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from transformer_rl.errors import DamagedData
from transformer_rl.schema import AnyJSON, Bool, Float, Int, Map, Obj, Opt, Str, problem
from transformer_rl.settings import option_name

_BEST = Obj({"iteration": Int(ge=1), "mean_return": Float()})
STATE_SCHEMA = Obj({"iteration": Int(ge=0), "env_steps": Int(ge=0), "best": Opt(_BEST), "wall_s": Float(ge=0),
                    "shards": Int(ge=0), "segments": Int(ge=0), "solved": Bool()},
                   optional={"eval_env_steps": Int(ge=0)})
CONFIG_SCHEMA = Obj({"env": Str(), "algo": Str(), "model": Map(AnyJSON())})
METRICS_ROW = Obj({"iteration": Int(ge=1)})


@dataclass
class RunState:
    """Where a run is (state.json): replaced after each evaluated iteration, last."""

    iteration: int = 0  # the last committed (evaluated) iteration
    env_steps: int = 0
    best: dict[str, Any] | None = None  # the best evaluation's report, with its iteration
    wall_s: float = 0.0
    shards: int = 0  # how far the dataset goes at ``iteration``
    segments: int = 0
    solved: bool = False
    eval_env_steps: int | None = None  # env steps played by evaluations (None before the first)

    def to_json(self) -> dict[str, Any]:
        state = asdict(self)
        if state["eval_env_steps"] is None:
            del state["eval_env_steps"]
        return state

    @classmethod
    def from_json(cls, state: dict[str, Any]) -> RunState:
        return cls(**state)


def differences(saved: dict[str, Any], mine: dict[str, Any], key: str) -> str:
    """How the saved config's ``key`` differs from this command's, in option names."""
    if not isinstance(saved[key], dict):
        return f"{key} {saved[key]}, not {mine[key]}"
    return ", ".join(f"{option_name(k)} {v}, not {mine[key].get(k)}"
                     for k, v in saved[key].items() if mine[key].get(k) != v)


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The rows of a run's metrics.jsonl; a cut-off last line (a crash while appending it) is
    dropped, any other line that is not a metrics row is named as damage."""
    text = path.read_text(errors="replace")
    lines = text.splitlines()
    if lines and not text.endswith("\n"):
        lines = lines[:-1]
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            row = None
        found = "not a JSON object" if row is None else problem(METRICS_ROW, row)
        if found:
            raise DamagedData(f"{path} line {number}: {found}; the run directory is damaged")
        rows.append(row)
    return rows
