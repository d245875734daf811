"""End-to-end env steps/s of `trl run` next to raw EnvPool with the same envs, in one process.

Each round runs raw EnvPool (sync pool, uniform random actions, nothing recorded) for as many env
steps as one run takes, then each variant of `trl run` in a fresh run directory; rounds
interleave, so machine noise hits every mode alike, and medians are reported.

A run's steady state is its iterations 2..N-1 (iteration 1 builds the pool and the model; the
last one evaluates). Core time per env step (CPU µs of all threads per env step):
  simulation  raw EnvPool's process CPU time per step (its worker threads included)
  acting      CPU time of the thread running the policy, inside `ModelPolicy.act`
  learning    CPU time of the thread running `learner.update` (torch runs one intra-op thread)
  rest        the run's process CPU time less the three (bookkeeping, Parquet, the GIL's handoffs)

  .venv/bin/python benchmarks/pipeline.py --env Breakout-ram --algo ppo --iterations 12 --rounds 3 \
      --variant preset --variant sync:overlap=false,batch=128
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from transformer_rl.collect.policies import ModelPolicy
from transformer_rl.config import RunConfig
from transformer_rl.envs import make_pool, resolve
from transformer_rl.pipeline import run
from transformer_rl.runs import RunDir


def raw_envpool(env: str, num_envs: int, steps: int) -> dict[str, float]:
    spec = resolve(env)
    pool = make_pool(spec, num_envs, 0)
    pool.reset()
    rng = np.random.default_rng(0)
    done, wall, cpu = 0, time.perf_counter(), time.process_time()
    while done < steps:
        pool.step(rng.integers(0, spec.num_actions, num_envs, dtype=np.int32))
        done += num_envs
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    pool.close()
    return {"steps_per_s": done / wall, "sim_core_us": 1e6 * cpu / done}


class Meter:
    """Thread CPU time inside the policy and the learner, and wall / process CPU per iteration."""

    def __init__(self):
        self.act = self.learn = 0.0
        self.marks: list[tuple[int, float, float, float, float]] = []  # env steps, wall, cpu, act, learn

    def install(self):
        meter, act, append = self, ModelPolicy.act, RunDir.append_metrics

        def timed_act(policy, *args):
            t = time.thread_time()
            try:
                return act(policy, *args)
            finally:
                meter.act += time.thread_time() - t

        def marked_append(run_dir, row):
            meter.marks.append((row["env_steps"], time.perf_counter(), time.process_time(), meter.act, meter.learn))
            return append(run_dir, row)

        ModelPolicy.act, RunDir.append_metrics = timed_act, marked_append
        return lambda: (setattr(ModelPolicy, "act", act), setattr(RunDir, "append_metrics", append))

    def wrap_update(self, learner_cls):
        meter, update = self, learner_cls.update

        def timed_update(learner, *args, **kwargs):
            t = time.thread_time()
            try:
                return update(learner, *args, **kwargs)
            finally:
                meter.learn += time.thread_time() - t

        learner_cls.update = timed_update
        return lambda: setattr(learner_cls, "update", update)


def trl_run(env: str, algo: str, settings: dict, iterations: int) -> dict[str, float]:
    from transformer_rl.train import algorithm

    root = Path(tempfile.mkdtemp(prefix="trl-pipeline-"))
    meter = Meter()
    undo = [meter.install(), meter.wrap_update(algorithm(algo).learner)]
    try:
        cfg = RunConfig.create(env, algo, name="bench", root=root, iterations=iterations, eval_every=iterations,
                               eval_episodes=2, stop_at=1e9, **settings)  # one short evaluation, at the end
        run(cfg, log=lambda *_: None)
    finally:
        for fn in undo:
            fn()
        shutil.rmtree(root, ignore_errors=True)
    (s0, w0, c0, a0, l0), (s1, w1, c1, a1, l1) = meter.marks[0], meter.marks[-2]  # iterations 1 and N-1
    steps = s1 - s0
    act, learn, cpu = (1e6 * (x1 - x0) / steps for x0, x1 in ((a0, a1), (l0, l1), (c0, c1)))
    return {"steps_per_s": steps / (w1 - w0), "act_core_us": act, "learn_core_us": learn,
            "run_core_us": cpu, "steps": meter.marks[-1][0]}


def parse_variant(text: str) -> tuple[str, dict]:
    name, _, rest = text.partition(":")
    settings = {}
    for item in filter(None, rest.split(",")):
        key, value = item.split("=")
        try:  # a number or true/false; anything else is a string (model=mlp, tokens=feature)
            settings[key] = json.loads(value)
        except json.JSONDecodeError:
            settings[key] = value
    return name, settings


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default="Breakout-ram")
    p.add_argument("--algo", default="ppo")
    p.add_argument("--model", default="gpt")
    p.add_argument("--iterations", type=int, default=12)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--variant", action="append", default=None,
                   help="NAME[:setting=value,...] over the preset; repeat for several (default: preset)")
    p.add_argument("--json", type=Path, help="also write the rows here")
    args = p.parse_args()
    variants = [parse_variant(v) for v in args.variant or ["preset"]]
    num_envs = RunConfig.create(args.env, args.algo).num_envs
    results: dict[str, list[dict]] = defaultdict(list)
    for r in range(args.rounds):
        for name, settings in variants:
            results[name].append(trl_run(args.env, args.algo, {"model": args.model, **settings}, args.iterations))
            print(f"round {r + 1} {name}: {results[name][-1]['steps_per_s']:,.0f} env steps/s", flush=True)
        steps = results[variants[0][0]][-1]["steps"]
        results["raw envpool"].append(raw_envpool(args.env, num_envs, steps))
        print(f"round {r + 1} raw envpool: {results['raw envpool'][-1]['steps_per_s']:,.0f} env steps/s", flush=True)
    med = {name: {k: float(np.median([x[k] for x in rows])) for k in rows[0]} for name, rows in results.items()}
    raw = med["raw envpool"]
    print(f"\n{args.env} {args.algo} {args.model}, {num_envs} envs, {args.iterations} iterations, "
          f"medians of {args.rounds} rounds; core µs per env step")
    print("| mode | env steps/s | x raw | sim | act | learn | rest | run total |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    print(f"| raw EnvPool | {raw['steps_per_s']:,.0f} | 1.00 | {raw['sim_core_us']:.0f} | - | - | - | "
          f"{raw['sim_core_us']:.0f} |")
    rows = []
    for name, _ in variants:
        m = med[name]
        rest = m["run_core_us"] - raw["sim_core_us"] - m["act_core_us"] - m["learn_core_us"]
        print(f"| trl run {name} | {m['steps_per_s']:,.0f} | {m['steps_per_s'] / raw['steps_per_s']:.2f} | "
              f"{raw['sim_core_us']:.0f} | {m['act_core_us']:.0f} | {m['learn_core_us']:.0f} | {rest:.0f} | "
              f"{m['run_core_us']:.0f} |")
        rows.append({"variant": name, **m, "ratio": m["steps_per_s"] / raw["steps_per_s"]})
    if args.json:
        args.json.write_text(json.dumps({"raw": raw, "runs": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
