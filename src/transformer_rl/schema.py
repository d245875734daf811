"""Declared structures for the JSON files trl reads, and one function that checks a value
against one.

Each file kind declares its structure once, beside its reader (a manifest in datasets/format.py,
a checkpoint's config.json in train/checkpoint.py, a run's state.json in runs.py), and reads
nothing from it before ``problem`` has passed it. A problem is one line naming where it is
(``segments[0].seed``) and what was expected there.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

Spec = Any  # one of the classes below


@dataclass(frozen=True)
class Int:
    ge: int | None = None
    le: int | None = None


@dataclass(frozen=True)
class Float:
    """A finite number (ints are numbers too)."""

    ge: float | None = None
    le: float | None = None


@dataclass(frozen=True)
class Str:
    choices: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Bool:
    pass


@dataclass(frozen=True)
class Const:
    value: Any


@dataclass(frozen=True)
class Opt:
    """``spec``, or null."""

    spec: Spec


@dataclass(frozen=True)
class List:
    item: Spec
    min_len: int = 0
    max_len: int | None = None


@dataclass(frozen=True)
class Obj:
    """A JSON object with these keys (each checked against its spec); ``optional`` keys may be
    absent; other keys are allowed unless ``closed``."""

    keys: dict[str, Spec]
    optional: dict[str, Spec] = field(default_factory=dict)
    closed: bool = False


@dataclass(frozen=True)
class Map:
    """An object of any keys whose values all follow ``value``."""

    value: Spec


@dataclass(frozen=True)
class AnyJSON:
    pass


def _first(problems: Iterable[str | None]) -> str | None:
    """The first problem found (the rest are not looked for), or None."""
    return next((found for found in problems if found), None)


def problem(spec: Spec, value: Any, where: str = "") -> str | None:
    """What is wrong with ``value`` against ``spec`` (one line naming the place), or None."""
    at = where or "the file"
    if isinstance(spec, Opt):
        return None if value is None else problem(spec.spec, value, where)
    if isinstance(spec, AnyJSON):
        return None
    if isinstance(spec, Const):
        return None if type(value) is type(spec.value) and value == spec.value else \
            f"{at} is {_short(value)}, expected {spec.value!r}"
    if isinstance(spec, Bool):
        return None if isinstance(value, bool) else f"{at} is {_short(value)}, expected true or false"
    if isinstance(spec, Int):
        if not isinstance(value, int) or isinstance(value, bool):
            return f"{at} is {_short(value)}, expected an integer"
        return _range(at, value, spec.ge, spec.le)
    if isinstance(spec, Float):
        if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
            return f"{at} is {_short(value)}, expected a finite number"
        return _range(at, value, spec.ge, spec.le)
    if isinstance(spec, Str):
        if not isinstance(value, str):
            return f"{at} is {_short(value)}, expected a string"
        if spec.choices is not None and value not in spec.choices:
            return f"{at} is {value!r}, expected one of {', '.join(spec.choices)}"
        return None
    if isinstance(spec, List):
        if not isinstance(value, list):
            return f"{at} is {_short(value)}, expected a list"
        if len(value) < spec.min_len or (spec.max_len is not None and len(value) > spec.max_len):
            most = "" if spec.max_len is None else f" and at most {spec.max_len}"
            return f"{at} has {len(value)} items, expected at least {spec.min_len}{most}"
        return _first(problem(spec.item, item, f"{where}[{i}]") for i, item in enumerate(value))
    if isinstance(spec, Map):
        if not isinstance(value, dict):
            return f"{at} is {_short(value)}, expected an object"
        return _first(problem(spec.value, item, f"{where}.{key}" if where else key) for key, item in value.items())
    if isinstance(spec, Obj):
        if not isinstance(value, dict):
            return f"{at} is {_short(value)}, expected an object"
        for key, item_spec in {**spec.keys, **spec.optional}.items():
            name = f"{where}.{key}" if where else key
            if key not in value:
                if key in spec.keys:
                    return f"missing key {name}"
                continue
            found = problem(item_spec, value[key], name)
            if found:
                return found
        if spec.closed:
            extra = sorted(set(value) - set(spec.keys) - set(spec.optional))
            if extra:
                return f"unknown key {(where + '.') if where else ''}{extra[0]}"
        return None
    raise TypeError(f"not a spec: {spec!r}")


def _range(at: str, value: float, ge: float | None, le: float | None) -> str | None:
    if (ge is not None and value < ge) or (le is not None and value > le):
        return f"{at} is {value:g}, expected a number in [{'-inf' if ge is None else f'{ge:g}'}, " \
               f"{'inf' if le is None else f'{le:g}'}]"
    return None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
