"""Compare the metrics.jsonl rows of two sets of run directories (the same runs made by two
versions of the code): every row's env steps, evaluation and losses must be equal.

    python benchmarks/same_metrics.py BEFORE_ROOT AFTER_ROOT [NAME ...]

Prints one line per run (iterations, env steps, last eval, the first field that differs) and
exits 1 if any differs. Timings (wall_s, *_s, *_per_s) are not compared.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def compared(row: dict) -> dict:
    """The fields that must not change: everything but timings."""
    return {k: v for k, v in row.items() if not (k == "wall_s" or k.endswith("_s") or k.endswith("_per_s"))}


def rows(run: Path) -> list[dict]:
    return [compared(json.loads(line)) for line in (run / "metrics.jsonl").read_text().splitlines() if line]


def difference(before: list[dict], after: list[dict]) -> str | None:
    if len(before) != len(after):
        return f"{len(before)} rows before, {len(after)} after"
    for a, b in zip(before, after, strict=True):
        if a != b:
            key = next(k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k))
            return f"iteration {a['iteration']}: {key} {a.get(key)} before, {b.get(key)} after"
    return None


def main(argv: list[str]) -> int:
    before_root, after_root = Path(argv[0]), Path(argv[1])
    names = argv[2:] or sorted(p.name for p in before_root.iterdir() if (p / "metrics.jsonl").is_file())
    print("| run | iterations | env steps | last eval | same |\n| --- | --- | --- | --- | --- |")
    failed = 0
    for name in names:
        before, after = rows(before_root / name), rows(after_root / name)
        evals = [r["eval/mean_return"] for r in after if "eval/mean_return" in r]
        found = difference(before, after)
        failed += found is not None
        print(f"| {name} | {len(after)} | {after[-1]['env_steps']:,} | {evals[-1] if evals else '-'} | "
              f"{'yes' if found is None else 'NO: ' + found} |")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
