"""Settings: one dataclass field per setting, with its default, help and valid range.

`setting(...)` declares a field once; the CLI turns every such field into an option (help text
and defaults from here), and `check` validates any config built from them, from the CLI or from
Python, before anything is written.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, Field, dataclass, field, fields, is_dataclass
from enum import Enum
from typing import Any, get_type_hints

from transformer_rl.errors import UsageError


class Choice(str, Enum):
    """A string choice that prints and formats as its value (json writes it as a string)."""

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


class Algo(Choice):
    dqn = "dqn"
    ppo = "ppo"
    dt = "dt"  # Decision Transformer
    bc = "bc"  # behaviour cloning


class ModelKind(Choice):
    gpt = "gpt"
    mlp = "mlp"


class EvalMode(Choice):
    greedy = "greedy"
    sample = "sample"


class FeatureEmbed(Choice):
    """--feature-embed: how a feature's value becomes a vector (feature tokens)."""

    linear = "linear"
    table = "table"


class KeepData(Choice):
    all = "all"  # every rollout in data/, every evaluation's episodes in evals/
    none = "none"  # neither: a compact run (on-policy learners only)


class KeepCheckpoints(Choice):
    all = "all"  # checkpoints/iter-NNN for every evaluation, and best
    last = "last"  # only checkpoints/last and checkpoints/best


class Track(Choice):
    none = "none"
    tensorboard = "tensorboard"  # event files in <run>/tensorboard/
    trackio = "trackio"  # trackio's local store in <run>/trackio/


class Device(Choice):
    auto = "auto"  # cuda when torch sees a GPU, else cpu
    cpu = "cpu"
    cuda = "cuda"


class Tokens(Choice):
    """--tokens: what one token of the GPT stands for."""

    step = "step"  # one token per timestep, attention across time
    feature = "feature"  # one token per observation feature, attention across a state's features
    seed = "seed"  # the original Transformer-RL's layout (models/features.py)


class Readout(Choice):
    """--readout: how a step's feature tokens become the one token its heads read."""

    summary = "summary"
    mean = "mean"
    flat = "flat"


@dataclass(frozen=True)
class Range:
    """Valid values: ge <= x <= le, gt < x < lt (any of them may be None)."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def __contains__(self, x: float) -> bool:
        return ((self.ge is None or x >= self.ge) and (self.gt is None or x > self.gt)
                and (self.le is None or x <= self.le) and (self.lt is None or x < self.lt))

    def __str__(self) -> str:
        lo = f"[{self.ge:g}" if self.ge is not None else f"({self.gt:g}" if self.gt is not None else "(-inf"
        hi = f"{self.le:g}]" if self.le is not None else f"{self.lt:g})" if self.lt is not None else "inf)"
        return f"{lo}, {hi}"


MAX_SEED = 2**31 - 1  # EnvPool seeds are int32; env i of a pool seeded S plays seed S + i
MAX_ENVS = 4096  # envs in one pool (evaluation: one per episode); more exhausts memory on Atari
POSITIVE = Range(gt=0)
ENVS = Range(ge=1, le=MAX_ENVS)
NON_NEGATIVE = Range(ge=0)
UNIT = Range(ge=0, le=1)


def setting(default: Any, help: str, valid: Range | None = None, *, factory: Any = None) -> Any:
    """A config field that is also a command-line option (``--field-name``)."""
    meta = {"help": help, "valid": valid}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def option_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def is_setting(f: Field) -> bool:
    return "help" in f.metadata


def default_of(f: Field) -> Any:
    return f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]


def check_value(name: str, value: Any, valid: Range | None) -> None:
    """One setting's value: a finite number within its range, or UsageError naming both."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise UsageError(f"{option_name(name)} {value} is not a finite number; give a number in "
                         f"{valid or '(-inf, inf)'}")
    if valid is not None and value not in valid:
        raise UsageError(f"{option_name(name)} {value:g} is out of range: give a number in {valid}")


def choice_type(hint: Any) -> type[Choice] | None:
    """The Choice enum of a type hint (``Algo`` or ``Algo | None``), else None."""
    for t in (hint, *getattr(hint, "__args__", ())):
        if isinstance(t, type) and issubclass(t, Choice):
            return t
    return None


def as_choice(kind: type[Choice], value: Any, name: str) -> Choice:
    """``value`` as a member of ``kind``, or UsageError naming the setting and its choices."""
    if value not in kind._value2member_map_:
        raise UsageError(f"{option_name(name)} {value!r} is not a choice: use one of "
                         f"{', '.join(kind._value2member_map_)}")
    return kind(value)


def check(config: Any) -> None:
    """Validate every setting of a config dataclass (and of the configs it holds); strings
    given for a choice become its enum member."""
    hints = get_type_hints(type(config))
    for f in fields(config):
        value = getattr(config, f.name)
        if is_dataclass(value):
            check(value)
            continue
        kind = choice_type(hints[f.name])
        if kind is not None and value is not None and not isinstance(value, kind):
            setattr(config, f.name, as_choice(kind, value, f.name))
        elif value is not None:
            check_value(f.name, value, f.metadata.get("valid"))


def fill(config_classes: dict[str, type], values: dict[str, Any], why: str) -> dict[str, Any]:
    """Build one config per class from flat ``values`` (setting name -> value); every value must
    belong to at least one of them, else UsageError naming the option and ``why`` it is unused."""
    built, used = {}, set()
    for key, cls in config_classes.items():
        names = {f.name for f in fields(cls) if is_setting(f)}
        built[key] = cls(**{k: v for k, v in values.items() if k in names})
        used |= names & values.keys()
    unused = [option_name(k) for k in values if k not in used]
    if unused:
        raise UsageError(f"{', '.join(unused)} {'does' if len(unused) == 1 else 'do'} not apply {why}")
    return built


def check_seed(seed: int, streams: int, option: str = "--seed") -> None:
    """Env streams seed .. seed + streams - 1 must all be valid EnvPool seeds."""
    top = MAX_SEED - streams + 1
    if not 0 <= seed <= top:
        raise UsageError(f"{option} {seed} is out of range: with {streams:,} env streams seeded {option[2:]} + i, "
                         f"give a seed in [0, {top:,}]")
