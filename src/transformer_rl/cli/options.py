"""Command-line options generated once from the settings of the config dataclasses.

Every `setting(...)` field becomes ``--field-name`` with the field's help; shared names (``--lr``
for DQN and PPO) become one option whose shown default lists each algorithm's. Options default
to None, meaning "not given", so a command learns exactly what the user typed: the dataclass
default (or, for `trl run`, the preset) fills the rest.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import fields
from typing import Annotated, Any, get_type_hints

import typer

from transformer_rl.settings import default_of, is_setting


def with_settings(panels: dict[str, dict[str, type]], presets: dict[Any, dict[str, Any]] | None = None):
    """Decorate a command with options for the settings of ``panels`` ({help panel: {label:
    config class}}); the command receives what was given as ``given={name: value}``."""

    def decorate(command: Callable) -> Callable:
        signature = inspect.signature(command)
        hints = get_type_hints(command, include_extras=True)
        own = [p.replace(annotation=hints[p.name]) for p in signature.parameters.values()
               if p.name != "given"]
        added = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=hint)
                 for name, hint in _options(panels, presets or {}).items()]

        @functools.wraps(command)
        def wrapper(**kwargs: Any) -> Any:
            given = {p.name: kwargs.pop(p.name) for p in added}
            return command(**kwargs, given={k: v for k, v in given.items() if v is not None})

        params = own + added
        wrapper.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        return wrapper

    return decorate


def _options(panels: dict[str, dict[str, type]], presets: dict[Any, dict[str, Any]]) -> dict[str, Any]:
    found: dict[str, dict[str, Any]] = {}  # name -> type, panel, {label: (help, default)}
    for panel, classes in panels.items():
        for label, cls in classes.items():
            types = get_type_hints(cls)
            for f in fields(cls):
                if is_setting(f):
                    entry = found.setdefault(f.name, {"type": types[f.name], "panel": panel, "by": {},
                                                      "of": len(classes)})
                    entry["by"][label] = (f.metadata["help"], default_of(f))
    options = {}
    for name, entry in found.items():
        by = entry["by"]
        helps = {h for h, _ in by.values()}
        text = helps.pop() if len(helps) == 1 else " ".join(f"{k.upper()}: {h}" for k, (h, _) in by.items())
        if entry["of"] > 1 and len(helps) == 0:  # a panel of algorithms: say which this option is for
            text = f"({', '.join(by)}) {text}"
        defaults = {_show(d) for _, d in by.values()}
        shown = defaults.pop() if len(defaults) == 1 else ", ".join(f"{k} {_show(d)}" for k, (_, d) in by.items())
        overrides = [f"{' '.join(map(str, key))} {_show(p[name])}" for key, p in presets.items() if name in p]
        if overrides:
            shown += "; preset: " + ", ".join(overrides)
        base = entry["type"]
        optional = base if type(None) in getattr(base, "__args__", ()) else base | None
        options[name] = Annotated[optional, typer.Option(help=text, rich_help_panel=entry["panel"],
                                                          show_default=shown)]
    return options


def _show(value: Any) -> str:
    if value is None:
        return "none"
    return f"{value:g}" if isinstance(value, float) else f"{value:,}" if type(value) is int else str(value)
