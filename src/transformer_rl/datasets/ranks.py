"""One dataset from many ranks: the writer a process appends its episodes to.

In one process that is a `DatasetWriter`. Under torchrun every rank plays its own pool, recorded
as its own segment of the one dataset (env streams follow one another, so env i of the whole
job is seeded seed + i as in one process); rank 0 alone writes: at each ``exchange`` the other
ranks send it their finished episodes (and env step counts), which it appends in rank order.
"""

from __future__ import annotations

import io
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np

from transformer_rl import distributed
from transformer_rl.datasets.batch import EpisodeBatch
from transformer_rl.datasets.writer import DatasetWriter, open_for_append
from transformer_rl.envs import EnvSpec


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
    with np.load(io.BytesIO(payload), allow_pickle=False) as z:
        numbers = {k[2:]: z[k].item() for k in z.files if k.startswith("n_")}
        if "lengths" not in z.files:
            return None, numbers
        batch = EpisodeBatch(**{f.name: (z[f.name] if f.name in z.files else None) for f in fields(EpisodeBatch)})
    return batch, numbers


class RankWriter:
    """One rank's side of the dataset of a torchrun job, with a DatasetWriter's interface.

    Rank 0 holds the real writer: its own episodes go straight in, and at each ``exchange`` it
    appends what the other ranks send, in rank order (each env's episodes stay in their order,
    which `trl datasets verify` relies on). ``rows``/``episodes`` count this rank's own.
    """

    solo = False  # closing it is collective

    def __init__(self, writer: DatasetWriter | None, segments: list[dict[str, Any]]):
        self.writer = writer  # rank 0 only
        self.writes = writer is not None
        # this rank's segment (``segments``: the ones just opened, one per rank)
        n = distributed.world_size()
        self.segment = writer.manifest["segments"][-n] if writer else segments[distributed.rank()]
        self.outbox: list[EpisodeBatch] = []
        self.rows = self.episodes = 0

    @property
    def dataset_rows(self) -> int | None:
        """The dataset's rows (on rank 0; None elsewhere), buffered ones included."""
        return self.writer.rows if self.writer is not None else None

    @property
    def dataset_episodes(self) -> int | None:
        return self.writer.episodes if self.writer is not None else None

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

    def exchange(self) -> None:
        """The other ranks' episodes (and env step counts) to rank 0's writer; collective."""
        batch = EpisodeBatch.concat(self.outbox) if self.outbox else None
        self.outbox = []
        received = distributed.gather_to_main(pack(batch, env_steps=self.segment["env_steps"]))
        if received is None:
            return
        ours = self.writer.manifest["segments"][-distributed.world_size():]
        for segment, payload in zip(ours[1:], received[1:], strict=True):
            batch, numbers = unpack(payload)
            segment["env_steps"] = int(numbers["env_steps"])
            if batch is not None:
                self.writer.add(batch)

    def flush(self, wait: bool = True) -> None:
        if self.writer is not None:
            self.writer.flush(wait)

    def close(self) -> None:
        """Last exchange, then rank 0 writes the rest; every rank returns once it is written."""
        self.exchange()
        if self.writer is not None:
            self.writer.close()
        distributed.barrier()

    def abandon(self) -> None:
        if self.writer is not None:
            self.writer.abandon()


class DiscardingWriter:
    """A writer's interface that keeps no episode (``--keep-data none``): this rank's pool plays
    the env streams it would play in a dataset (seed + this rank's offset)."""

    solo = True
    writes = False

    def __init__(self, seed: int, num_envs: int):
        offset = distributed.rank() * num_envs
        self.segment = {"env_index_offset": offset, "seed": seed + offset, "num_envs": num_envs, "env_steps": 0}
        self.rows = self.episodes = self.buffered_rows = 0

    def add(self, batch: EpisodeBatch) -> None:
        self.rows += batch.rows
        self.episodes += batch.episodes

    def exchange(self) -> None:
        pass

    def flush(self, wait: bool = True) -> None:
        pass

    def close(self) -> None:
        pass

    def abandon(self) -> None:
        pass


def open_writer(root: Path, spec: EnvSpec, *, seed: int, num_envs: int, batch_size: int,
                producer: dict[str, Any], shard_rows: int, append: bool) -> DatasetWriter | RankWriter:
    """The dataset writer of this process: a DatasetWriter alone, a RankWriter under torchrun
    (rank 0 opens the dataset with one new segment of ``num_envs`` envs per rank)."""
    ranks = distributed.world_size()

    def open_dataset() -> DatasetWriter:
        return open_for_append(root, spec, seed=seed, num_envs=num_envs, batch_size=batch_size,
                               producer=producer, shard_rows=shard_rows, append=append, ranks=ranks)

    if not distributed.active():
        return open_dataset()
    writer = None

    def open_on_main() -> list[dict[str, Any]]:
        nonlocal writer
        writer = open_dataset()
        return writer.manifest["segments"][-ranks:]

    segments = distributed.on_main(open_on_main)
    return RankWriter(writer, segments)
