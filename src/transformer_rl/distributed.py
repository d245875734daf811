"""Many processes, one job: `torchrun ... -m transformer_rl <command>` (torch.distributed).

Process groups and collectives, and what each rank is: its share of envs, steps and minibatch,
its seeds, and whether it is the one that writes (rank 0: datasets/ranks.py gathers the other
ranks' episodes to it; it alone writes manifests, checkpoints, metrics and reports). Learners
average their gradients across ranks after every backward pass, from rank 0's weights.

Two process groups keep the collectives of the two threads of an overlapping run apart: "data"
(episodes, counters, broadcasts; the main thread) and "grads" (the learner, which may update in
a thread while the main thread plays). Without torchrun (no WORLD_SIZE > 1) nothing here talks
to anyone and every function is a no-op; this module imports torch only when it has to, so
`trl collect` in one process starts without it.
"""

from __future__ import annotations

import atexit
import json
import os
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import numpy as np

from transformer_rl.errors import UsageError

_groups: dict[str, Any] = {}


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def active() -> bool:
    return world_size() > 1


def init(device_type: str = "cpu") -> None:
    """Join the torchrun job once per process (gloo on CPU; NCCL for the gradients on GPU)."""
    if not active() or _groups:
        return
    import torch
    import torch.distributed as dist

    grads = "nccl" if device_type == "cuda" else "gloo"
    if grads == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    # a rank waits at most this long for the others (rank 0 evaluating, a slow shard write)
    dist.init_process_group("cpu:gloo,cuda:nccl" if grads == "nccl" else "gloo", timeout=timedelta(hours=2))
    _groups["data"] = dist.new_group(backend="gloo")
    _groups["grads"] = dist.new_group(backend=grads)
    _groups["grads_device"] = "cuda" if grads == "nccl" else "cpu"  # NCCL reduces GPU tensors only
    # leaving with the groups alive can abort the process at exit ("terminate called without an
    # active exception", from the backends' threads); no barrier: a rank that fails must not wait
    atexit.register(dist.destroy_process_group)


def pool_threads() -> int | None:
    """EnvPool threads per rank: the cores shared among the ranks on this machine (None: one
    process, EnvPool's own choice)."""
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if local <= 1:
        return None
    return max(1, len(os.sched_getaffinity(0)) // local)


def share(total: int, what: str) -> int:
    """This rank's equal part of ``total`` (envs, steps): UsageError if it does not split."""
    n = world_size()
    if total % n:
        raise UsageError(f"{what} {total:,} does not split over {n} ranks; give a multiple of {n}")
    return total // n


def share_minibatch(batch: int) -> int:
    """This rank's part of a minibatch of ``batch`` rows (the rest of a split is dropped; the
    averaged gradients stand for the whole minibatch): UsageError below one row per rank."""
    n = world_size()
    if batch < n:
        raise UsageError(f"--batch {batch} is less than one row per rank; give at least {n}")
    return batch // n


def part(total: int) -> int:
    """This rank's part of a count that need not split evenly: rank r takes one more if r < the rest."""
    return total // world_size() + (rank() < total % world_size())


def mine(n: int) -> np.ndarray:
    """(n,) bool: the items this rank takes of n dealt round the ranks (every one in one process)."""
    return np.arange(n) % world_size() == rank()


def rank_seed(seed: int) -> int:
    """A seed of this rank's own (rank 0 keeps the one-process seed)."""
    return seed + rank() * 1_000_003


# -- collectives (all ranks call them in the same order) ----------------------------------------


def _dist():
    import torch.distributed as dist

    return dist


def barrier() -> None:
    if active():
        _dist().barrier(group=_groups["data"])


def all_sum(values: list[float]) -> list[float]:
    """Element-wise sums over the ranks."""
    if not active():
        return list(values)
    import torch

    t = torch.tensor(values, dtype=torch.float64)
    _dist().all_reduce(t, group=_groups["data"])
    return t.tolist()


def all_done(done: bool) -> bool:
    return all_sum([float(done)])[0] == world_size()


def agree_min(value: int) -> int:
    """The smallest of the ranks' values (the learner's group: e.g. how many gradient steps)."""
    if not active():
        return value
    import torch

    t = torch.tensor([value], dtype=torch.int64, device=_groups["grads_device"])
    _dist().all_reduce(t, op=_dist().ReduceOp.MIN, group=_groups["grads"])
    return int(t.item())


def average_gradients(params) -> None:
    """Replace each gradient by its mean over the ranks (one flat all-reduce per step)."""
    if not active():
        return
    import torch

    grads = [p.grad for p in params if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])
    _dist().all_reduce(flat, group=_groups["grads"])
    flat /= world_size()
    at = 0
    for g in grads:
        g.copy_(flat[at:at + g.numel()].view_as(g))
        at += g.numel()


def broadcast_model(model) -> None:
    """Every rank takes rank 0's weights and buffers (its observation scaling included)."""
    if not active():
        return
    for t in model.state_dict().values():
        cpu = t.detach().cpu().contiguous()
        _dist().broadcast(cpu, 0, group=_groups["data"])
        t.copy_(cpu)


def _broadcast_bytes(data: bytes | None) -> bytes:
    import torch

    size = torch.tensor([len(data) if data is not None else 0], dtype=torch.int64)
    _dist().broadcast(size, 0, group=_groups["data"])
    buf = (torch.frombuffer(bytearray(data), dtype=torch.uint8) if is_main() and size.item()
           else torch.empty(int(size.item()), dtype=torch.uint8))
    if size.item():
        _dist().broadcast(buf, 0, group=_groups["data"])
    return buf.numpy().tobytes()


def on_main(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` on rank 0 only, its (JSON) result on every rank; a UsageError there is
    raised on every rank, so all of them stop with the same one-line error."""
    if not active():
        return fn(*args)
    message = None
    if is_main():
        try:
            message = {"result": fn(*args)}
        except UsageError as e:
            message = {"error": str(e)}
    message = json.loads(_broadcast_bytes(json.dumps(message).encode() if is_main() else None))
    if "error" in message:
        raise UsageError(message["error"])
    return message["result"]


def gather_to_main(payload: bytes) -> list[bytes] | None:
    """Every rank's bytes, in rank order, on rank 0 (None elsewhere)."""
    import torch

    dist, group, n = _dist(), _groups["data"], world_size()
    size = torch.tensor([len(payload)], dtype=torch.int64)
    sizes = [torch.zeros(1, dtype=torch.int64) for _ in range(n)]
    dist.all_gather(sizes, size, group=group)
    top = max(int(s.item()) for s in sizes)
    buf = torch.zeros(top, dtype=torch.uint8)
    if payload:
        buf[:len(payload)] = torch.frombuffer(bytearray(payload), dtype=torch.uint8)
    received = [torch.empty(top, dtype=torch.uint8) for _ in range(n)] if is_main() else None
    dist.gather(buf, received, dst=0, group=group)
    if received is None:
        return None
    return [r[:int(s.item())].numpy().tobytes() for r, s in zip(received, sizes, strict=True)]
