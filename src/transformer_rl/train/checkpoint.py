"""Checkpoints: a directory of safetensors + JSON. Nothing is ever unpickled.

<ckpt>/model.safetensors       weights and buffers (observation normalisation included)
<ckpt>/config.json             model config, env spec, algorithm, train config, step counters
<ckpt>/optimizer.safetensors   optimizer tensors; <ckpt>/optimizer.json its param groups
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from transformer_rl.envs import EnvSpec
from transformer_rl.errors import DamagedData, UsageError
from transformer_rl.files import atomic_write_dir, read_json
from transformer_rl.models import build_model, model_config_dict
from transformer_rl.schema import AnyJSON, Const, Float, Int, List, Map, Obj, Str
from transformer_rl.settings import Algo

CHECKPOINT_VERSION = 1


@dataclass
class Checkpoint:
    model: torch.nn.Module
    spec: EnvSpec
    algo: str
    meta: dict[str, Any]  # config.json as read
    learner_state: dict[str, Any]  # {"optimizer": state dict or None, "updates": int, ...counters}


def save(
    path: Path,
    model: torch.nn.Module,
    spec: EnvSpec,
    algo: str,
    *,
    learner_state: dict[str, Any] | None = None,
    counters: dict[str, Any] | None = None,
    train_config: dict[str, Any] | None = None,
) -> None:
    """Write atomically: into a temporary sibling directory, then swap it in for ``path``."""
    learner_state = learner_state or {}
    counters = {**(counters or {}), **{k: v for k, v in learner_state.items() if k != "optimizer"}}
    config = {
        "checkpoint_version": CHECKPOINT_VERSION,
        "algo": str(algo),
        "model": model_config_dict(model),
        "env": spec.to_json(),
        "counters": counters,
        "train_config": train_config or {},
    }

    def fill(tmp: Path) -> None:
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(state, tmp / "model.safetensors")
        (tmp / "config.json").write_text(json.dumps(config, indent=1, default=_jsonable) + "\n")
        if learner_state.get("optimizer") is not None:
            tensors, groups = _flatten_optimizer(learner_state["optimizer"])
            save_file(tensors, tmp / "optimizer.safetensors")
            (tmp / "optimizer.json").write_text(json.dumps(groups) + "\n")

    atomic_write_dir(Path(path), fill)


def _jsonable(obj: Any) -> Any:
    if is_dataclass(obj):
        return asdict(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def load(path: Path, *, spec: EnvSpec | None = None, optimizer: bool = True,
         device: torch.device | str = "cpu") -> Checkpoint:
    """Load a checkpoint (its model on ``device``); with ``spec``, refuse one made for another
    env or observation shape."""
    path = Path(path)
    if not (path / "config.json").is_file() or not (path / "model.safetensors").is_file():
        raise UsageError(f"{path} is not a trl checkpoint (needs config.json and model.safetensors)")
    meta = read_json(path / "config.json", CONFIG_SCHEMA, "checkpoint")
    try:
        ckpt_spec = EnvSpec.from_json(meta["env"])
        algo = Algo(meta["algo"])
        if (meta["model"].get("obs_dim"), meta["model"].get("num_actions")) != (ckpt_spec.obs_dim,
                                                                                ckpt_spec.num_actions):
            raise ValueError("the model's obs_dim or num_actions is not its env's")
        model = build_model(meta["model"])
        state = load_file(path / "model.safetensors")
    except (ValueError, KeyError, TypeError, AssertionError, RuntimeError, SafetensorError, UsageError) as e:
        reason = " ".join(str(e).split())[:200]
        raise DamagedData(f"{path} is a damaged checkpoint ({type(e).__name__}: {reason})") from None
    if spec is not None and (spec.env_id, spec.obs_shape) != (ckpt_spec.env_id, ckpt_spec.obs_shape):
        raise UsageError(
            f"{path} was trained on {ckpt_spec.env_id} (obs {list(ckpt_spec.obs_shape)}), "
            f"not {spec.env_id} (obs {list(spec.obs_shape)}); use a matching checkpoint"
        )
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shapes differ from what config.json describes
        raise DamagedData(f"{path}: model.safetensors does not match config.json "
                          f"({str(e).splitlines()[-1].strip()}); the checkpoint is damaged") from None
    if missing or unexpected:
        raise DamagedData(f"{path}: model.safetensors does not match config.json (missing {missing[:3]}, "
                          f"unexpected {unexpected[:3]}); the checkpoint is damaged")
    optimizer_state = None
    if optimizer and (path / "optimizer.safetensors").is_file() and (path / "optimizer.json").is_file():
        groups = read_json(path / "optimizer.json", OPTIMIZER_SCHEMA, "checkpoint")
        try:
            optimizer_state = _unflatten_optimizer(load_file(path / "optimizer.safetensors"), groups,
                                                   list(model.parameters()))
        except (ValueError, KeyError, TypeError, AttributeError, SafetensorError) as e:
            raise DamagedData(f"{path}: unreadable optimizer state ({type(e).__name__}: "
                              f"{' '.join(str(e).split())[:120]}); the checkpoint is damaged (its model still "
                              "loads with `trl eval`)") from None
    return Checkpoint(model.to(device), ckpt_spec, algo, meta, {"updates": 0, **meta.get("counters", {}),
                                                     "optimizer": optimizer_state})


def _flatten_optimizer(state_dict: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors, scalars = {}, {}
    for pid, per_param in state_dict["state"].items():
        for name, value in per_param.items():
            if torch.is_tensor(value):
                tensors[f"{pid}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{name}"] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any],
                         params: list[torch.nn.Parameter]) -> dict[str, Any]:
    """The optimizer's state dict, after checking that it is one for ``params`` (the model's,
    in order: every learner optimises ``model.parameters()``), so that loading it cannot fail."""
    ids = [i for group in meta["param_groups"] for i in group["params"]]
    if sorted(ids) != list(range(len(params))):
        raise ValueError(f"optimizer.json lists {len(ids)} parameters, the model has {len(params)}")
    state: dict[int, dict[str, Any]] = {}
    for key, value in [*tensors.items(), *meta["scalars"].items()]:
        pid, name = key.split(".", 1)
        pid = int(pid)
        if pid not in range(len(params)):
            raise ValueError(f"optimizer state for parameter {pid}, which the model does not have")
        if torch.is_tensor(value) and value.dim() and value.shape != params[pid].shape:
            raise ValueError(f"optimizer {name} of parameter {pid} has shape {list(value.shape)}, "
                             f"the parameter {list(params[pid].shape)}")
        state.setdefault(pid, {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}


CONFIG_SCHEMA = Obj({"algo": Str(tuple(a.value for a in Algo)), "model": Map(AnyJSON()), "env": AnyJSON()},
                    optional={"checkpoint_version": Const(CHECKPOINT_VERSION), "train_config": AnyJSON(),
                              "counters": Obj({}, optional={"updates": Int(ge=0), "iteration": Int(ge=0),
                                                            "env_steps": Int(ge=0), "best_return": Float()})})
OPTIMIZER_SCHEMA = Obj({"param_groups": List(Obj({"params": List(Int(ge=0))}), min_len=1),
                        "scalars": Map(AnyJSON())})
