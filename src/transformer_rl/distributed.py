"""Many processes, one job: `torchrun ... -m transformer_rl <command>` (torch.distributed).

Every rank plays its own EnvPool pool, recorded as its own segment of the one dataset (env
streams follow one another, so env i of the whole job is seeded seed + i as in one process).
Rank 0 is the only writer: at each exchange the other ranks send it their finished episodes,
which it appends to the dataset; it alone writes manifests, checkpoints, metrics and reports.
Learners average their gradients across ranks after every backward pass, from rank 0's weights.

Two process groups keep the collectives of the two threads of an overlapping run apart: "data"
(episodes, counters, broadcasts; the main thread) and "grads" (the learner, which may update in
a thread while the main thread plays). Without torchrun (no WORLD_SIZE > 1) nothing here talks
to anyone and every function is a no-op; this module imports torch only when it has to, so
`trl collect` in one process starts without it.
"""

from __future__ import annotations

import atexit
import io
import json
import os
from collections.abc import Callable
from dataclasses import fields
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import numpy as np

from transformer_rl.errors import UsageError

if TYPE_CHECKING:
    from transformer_rl.datasets.writer import DatasetWriter, EpisodeBatch

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


# -- one dataset from many ranks ----------------------------------------------------------------


def pack(batch: EpisodeBatch | None, **numbers: float) -> bytes:
    """Episodes and a few numbers as .npz bytes (read back with allow_pickle=False)."""
    arrays = {f"n_{k}": np.asarray(v) for k, v in numbers.items()}
    if batch is not None:
        arrays.update({f.name: getattr(batch, f.name) for f in fields(batch)
                       if getattr(batch, f.name) is not None})
    out = io.BytesIO()
    np.savez(out, **arrays)
    return out.getvalue()


def unpack(payload: bytes) -> tuple[EpisodeBatch | None, dict[str, float]]:
    from transformer_rl.datasets.writer import EpisodeBatch

    with np.load(io.BytesIO(payload), allow_pickle=False) as z:
        numbers = {k[2:]: z[k].item() for k in z.files if k.startswith("n_")}
        if "lengths" not in z.files:
            return None, numbers
        batch = EpisodeBatch(**{f.name: (z[f.name] if f.name in z.files else None) for f in fields(EpisodeBatch)})
    return batch, numbers


class RankWriter:
    """One rank's side of the dataset of a torchrun job, with a DatasetWriter's interface.

    Rank 0 holds the real writer: its own episodes go straight in, and at each ``sync`` it
    appends what the other ranks send, in rank order (each env's episodes stay in their order,
    which `trl datasets verify` relies on). ``rows``/``episodes`` count this rank's own.
    """

    def __init__(self, writer: DatasetWriter | None, segments: list[dict[str, Any]]):
        self.writer = writer  # rank 0 only
        # this rank's segment (``segments``: the ones just opened, one per rank)
        self.segment = writer.manifest["segments"][-world_size()] if writer else segments[rank()]
        self.outbox: list[EpisodeBatch] = []
        self.rows = self.episodes = 0

    @property
    def buffered_rows(self) -> int:
        """Rows waiting for rank 0's next shard (the other ranks buffer none: they send)."""
        return self.writer.buffered_rows if self.writer is not None else 0

    def add(self, batch: EpisodeBatch) -> None:
        self.rows += batch.rows
        self.episodes += batch.episodes
        if self.writer is not None:
            self.writer.add(batch)
        elif batch.episodes:
            self.outbox.append(batch)

    def sync(self) -> None:
        """The other ranks' episodes (and env step counts) to rank 0's writer; collective."""
        from transformer_rl.datasets.writer import EpisodeBatch

        batch = EpisodeBatch.concat(self.outbox) if self.outbox else None
        self.outbox = []
        received = gather_to_main(pack(batch, env_steps=self.segment["env_steps"]))
        if received is None:
            return
        mine = self.writer.manifest["segments"][-world_size():]
        for segment, payload in zip(mine[1:], received[1:], strict=True):
            batch, numbers = unpack(payload)
            segment["env_steps"] = int(numbers["env_steps"])
            if batch is not None:
                self.writer.add(batch)

    def flush(self, wait: bool = True) -> None:
        if self.writer is not None:
            self.writer.flush(wait)

    def close(self) -> None:
        """Last exchange, then rank 0 writes the rest; every rank returns once it is written."""
        self.sync()
        if self.writer is not None:
            self.writer.close()
        barrier()

    def abandon(self) -> None:
        if self.writer is not None:
            self.writer.abandon()


def open_writer(root, spec, *, seed: int, num_envs: int, batch_size: int, producer: dict[str, Any],
                shard_rows: int, append: bool):
    """The dataset writer of this process: a DatasetWriter alone, a RankWriter under torchrun
    (rank 0 opens the dataset with one new segment of ``num_envs`` envs per rank)."""
    from transformer_rl.datasets.writer import open_for_append

    def open_dataset(ranks: int):
        return open_for_append(root, spec, seed=seed, num_envs=num_envs, batch_size=batch_size,
                               producer=producer, shard_rows=shard_rows, append=append, ranks=ranks)

    if not active():
        return open_dataset(1)
    writer = None

    def open_on_main() -> list[dict[str, Any]]:
        nonlocal writer
        writer = open_dataset(world_size())
        return writer.manifest["segments"][-world_size():]

    segments = on_main(open_on_main)
    return RankWriter(writer, segments)
