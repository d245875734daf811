"""`trl datasets info`: what a dataset holds, read from its manifest and two columns."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from transformer_rl.datasets.format import read_manifest, totals
from transformer_rl.datasets.shards import read_shard


def summarize(root: Path) -> dict[str, Any]:
    root = Path(root)
    m = read_manifest(root)
    rows, episodes = totals(m)
    returns, lengths = [], []
    for shard in m["shards"]:
        t = read_shard(root, shard, m, columns=["episode_id", "reward"])
        ids = t["episode_id"].to_numpy()
        if not len(ids):
            continue
        starts = np.concatenate([[0], np.flatnonzero(np.diff(ids)) + 1])
        returns.append(np.add.reduceat(t["reward"].to_numpy(), starts))
        lengths.append(np.diff(np.concatenate([starts, [len(ids)]])))
    r = np.concatenate(returns) if returns else np.zeros(0)
    ln = np.concatenate(lengths) if lengths else np.zeros(0)

    def stat(a: np.ndarray) -> dict[str, float]:
        if not len(a):
            return {}
        return {"mean": round(float(a.mean()), 3), "std": round(float(a.std()), 3),
                "min": float(a.min()), "max": float(a.max())}

    return {
        "path": str(root),
        "env_id": m["env_id"],
        "envpool_task": m["env"]["task"],
        "envpool_config": m["env"]["config"],
        "observation": m["observation"],
        "action": m["action"],
        "seed": m["seed"],
        "rows": rows,
        "episodes": episodes,
        "shards": len(m["shards"]),
        "bytes": sum(s["bytes"] for s in m["shards"]),
        "segments": [
            {k: s.get(k) for k in ("num_envs", "batch_size", "seed", "env_steps", "producer")}
            for s in m["segments"]
        ],
        "episode_return": stat(r),
        "episode_length": stat(ln),
        "format_version": m["format_version"],
        "source": m.get("source"),  # where an imported dataset came from
        "envpool_version": m.get("envpool_version"),
        "created": m.get("created"),
        "updated": m.get("updated"),
    }
