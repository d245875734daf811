"""The whole `trl` app: the commands without a model (cli/base.py) plus train, eval, run and bench."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from transformer_rl.cli.base import base_app
from transformer_rl.cli.common import EnvOpt, console, progress_bar, stop, user_errors
from transformer_rl.cli.options import with_settings
from transformer_rl.config import PRESETS, RunConfig
from transformer_rl.errors import UsageError
from transformer_rl.models import ModelArgs
from transformer_rl.settings import Algo, Device, EvalMode, Range, Track, check_value, fill
from transformer_rl.train import LEARNERS, algorithm

app = base_app()


MODEL_PANEL, TRAIN_PANEL, RUN_PANEL = "Model", "Training", "Run"
LEARNER_SETTINGS = {str(algo): entry.config for algo, entry in LEARNERS.items()}
AlgoOpt = Annotated[Algo, typer.Option(help="The learning algorithm (see Training options).")]
DeviceOpt = Annotated[Device, typer.Option(help="Where the model runs: auto (cuda when torch sees a GPU), "
                                                "cpu or cuda.")]


# what the training bar counts and what its loss is: a DQN/DT/BC update is one minibatch of
# windows; a PPO update is every minibatch of every epoch over the rollout
BAR_UNITS = {Algo.ppo: ("minibatch steps", "policy loss (last minibatch)")}
BAR_DEFAULT = ("updates", "loss (mean of the last 50 updates)")


def _train_progress(algo: Algo):
    unit, loss = BAR_UNITS.get(algo, BAR_DEFAULT)
    progress, bar = progress_bar(f"train {algo}", "{task.completed}/{task.total} " + unit,
                                 loss + " {task.fields[loss]:.4f}", loss=0.0)

    def update(done: int, total: int, metrics: dict) -> None:
        bar(done, total=total, loss=metrics["loss"])

    return progress, update


def _run_progress(cfg: RunConfig):
    """env steps of the budget, the iteration, the last evaluation, the time left."""
    progress, bar = progress_bar(f"run {cfg.name}", "{task.completed:,}/{task.total:,} env steps",
                                 "iteration {task.fields[iteration]}/" + str(cfg.iterations),
                                 "last eval {task.fields[last_eval]}", eta=True,
                                 total=cfg.iterations * cfg.steps_per_iteration, iteration=0, last_eval="-")

    def update(row: dict) -> None:
        shown = {"last_eval": f"{row['eval/mean_return']:.1f}"} if "eval/mean_return" in row else {}
        bar(row["env_steps"], iteration=row["iteration"], **shown)

    return progress, update


@app.command()
@user_errors
@with_settings({MODEL_PANEL: {"model": ModelArgs}, TRAIN_PANEL: LEARNER_SETTINGS})
def train(
    data: Annotated[Path, typer.Option(help="Dataset directory to train on.")],
    out: Annotated[Path, typer.Option(help="Checkpoint directory to write.")],
    algo: AlgoOpt = Algo.dqn,
    init: Annotated[Path | None, typer.Option(help="Continue from this checkpoint.")] = None,
    seed: Annotated[int, typer.Option(help="Seed for init and sampling.")] = 0,
    overwrite: Annotated[bool, typer.Option(help="Replace the checkpoint at --out (its report.json goes "
                                            "too: it described the old model).")] = False,
    device: DeviceOpt = Device.auto,
    track: Annotated[Track, typer.Option(help="Also write the training's curves (losses/loss as it trains, step = "
                                         "updates) into the checkpoint: <out>/tensorboard/ or <out>/trackio/; "
                                         "pip install 'transformer-rl\\[track]'.")] = Track.none,
    given: dict | None = None,
) -> None:
    """Train a model on a dataset (its newest --replay-rows rows) and write a checkpoint.

    PPO learns from rows that recorded the behaviour policy's logp (a `trl run --algo ppo` dataset).

    Example: trl train --algo dqn --data data/cartpole --out ckpt/cartpole
    """
    from transformer_rl.train.offline import train as run_train

    built = fill({"model": ModelArgs, "learner": algorithm(algo).config}, given or {}, f"to --algo {algo}")
    if init is not None and any(k in {f.name for f in fields(ModelArgs)} for k in given or {}):
        raise UsageError("model options do not apply with --init: the checkpoint's model is trained")
    progress, update = _train_progress(algo)
    try:
        result = run_train(data, out, algo=algo, model_args=built["model"], config=built["learner"],
                           init=init, seed=seed, overwrite=overwrite, progress=update, device=device,
                           track=track)
    finally:
        stop(progress)
    shown = "  ".join(f"{k.split('/')[-1]} {result[k]:.4g}" for k in algorithm(algo).log_keys if k in result)
    console.print(f"{result['parameters']:,} parameters; mean over the training: {shown}; checkpoint -> {out}")


@app.command("eval")
@user_errors
def eval_command(
    ckpt: Annotated[Path, typer.Argument(help="Checkpoint directory.")],
    episodes: Annotated[int, typer.Option(help="Episodes, one per env.")] = 100,
    seed: Annotated[int, typer.Option(help="Evaluation seed.")] = 1_000_000,
    record: Annotated[Path | None, typer.Option(help="Write the episodes as a dataset here.")] = None,
    gif: Annotated[Path | None, typer.Option(help="Write a GIF of the first episode here (its first "
                                             "--gif-frames steps).")] = None,
    gif_frames: Annotated[int, typer.Option(help="Most frames in the --gif (25 per second).")] = 600,
    report: Annotated[Path | None, typer.Option(help="Also write the report as JSON here (without it: printed, "
                                                "nothing written, the checkpoint left as it is).")] = None,
    mode: Annotated[EvalMode, typer.Option(help="greedy, or sample from the policy (not DQN).")]
    = EvalMode.greedy,
    target_return: Annotated[float | None, typer.Option(
        help="Decision Transformer: the return to play for (default: the best in its training data).")] = None,
    device: DeviceOpt = Device.auto,
) -> None:
    """Play a checkpoint (greedily by default) and print its report (--report: also as JSON).

    Example: trl eval runs/default/checkpoints/best --episodes 100 --gif cartpole.gif
    """
    from transformer_rl import provenance
    from transformer_rl.evaluate.evaluate import evaluate
    from transformer_rl.files import check_output_json, write_output_json
    from transformer_rl.models import resolve_device
    from transformer_rl.train import checkpoint

    loaded = checkpoint.load(ckpt, optimizer=False, device=resolve_device(device))
    if target_return is None:
        target_return = algorithm(loaded.algo).learner.saved_target(loaded.learner_state)
    if report is not None:
        check_output_json(report, "eval-report", "--report")
    progress, update = progress_bar("eval", "{task.completed}/{task.total} episodes", total=episodes)
    try:
        result = evaluate(loaded.model, loaded.spec, loaded.algo, episodes=episodes, seed=seed,
                          record=record, gif=gif, gif_frames=gif_frames, producer={"checkpoint": str(ckpt)}, mode=mode,
                          target_return=target_return, progress=update)
    finally:
        stop(progress)
    result["provenance"] = provenance.record()
    if report is not None:
        write_output_json(report, result, "eval-report", "--report")
    else:
        console.print_json(json.dumps(result))
    aim = f" (target {target_return:g})" if target_return is not None else ""
    console.print(f"{result['episodes']} episodes{aim}: return {result['mean_return']:.1f} ± "
                  f"{result['std_return']:.1f} (min {result['min_return']:.0f}, max "
                  f"{result['max_return']:.0f})" + (f"; report -> {report}" if report is not None else ""))


@app.command("run")
@user_errors
@with_settings({RUN_PANEL: {"run": RunConfig}, MODEL_PANEL: {"model": ModelArgs}, TRAIN_PANEL: LEARNER_SETTINGS},
               presets=PRESETS)
def run_command(
    env: EnvOpt = "CartPole-v1",
    algo: AlgoOpt = Algo.dqn,
    name: Annotated[str, typer.Option(help="Run name: everything goes to <root>/<name>.",
                                      rich_help_panel=RUN_PANEL)] = "default",
    root: Annotated[Path, typer.Option(help="Directory of runs.", rich_help_panel=RUN_PANEL)] = Path("runs"),
    seed: Annotated[int, typer.Option(help="Seed.", rich_help_panel=RUN_PANEL)] = 0,
    init: Annotated[Path | None, typer.Option(help="Start from this checkpoint (Online DT: a DT trained "
                                              "offline, with --algo dt).", rich_help_panel=RUN_PANEL)] = None,
    seed_data: Annotated[Path | None, typer.Option(help="A dataset whose best episodes stay in the replay "
                                                   "(Online DT).", rich_help_panel=RUN_PANEL)] = None,
    given: dict | None = None,
) -> None:
    """Collect -> train -> eval, N iterations, under runs/<name>/ (resumable).

    A default that lists a "preset" varies per algorithm and env family; what you give wins.

    Example: trl run --env CartPole-v1 --algo dqn --model gpt --seed 1 --name cartpole-s1
    """
    from transformer_rl.pipeline import run

    cfg = RunConfig.create(env, algo, name=name, root=root, seed=seed, init=init, seed_data=seed_data,
                           **(given or {}))
    progress, update = _run_progress(cfg)
    try:
        report = run(cfg, log=console.print, progress=update)  # in a terminal, log lines print above the bar
    finally:
        stop(progress)
    best = report["best"] or {}
    console.print_json(json.dumps({k: report[k] for k in ("env", "algo", "model", "parameters",
                                                           "iterations", "env_steps", "wall_s",
                                                           "solved")}
                                  | {"best_iteration": best.get("iteration"),
                                     "best_eval_mean": best.get("mean_return")}))
    console.print(f"run directory: {root / name} (report.json, metrics.jsonl, curve.png)")


@app.command()
@user_errors
def bench(
    env: EnvOpt = "CartPole-v1",
    num_envs: Annotated[str, typer.Option(help="Comma-separated pool sizes.")] = "1,8,32,128",
    async_: Annotated[bool, typer.Option("--async/--no-async", help="Also async EnvPool (batch = n/2).")] = True,
    seconds: Annotated[float, typer.Option(help="Seconds per measurement.")] = 2.0,
    rounds: Annotated[int, typer.Option(help="Interleaved rounds; the median is reported.")] = 3,
    json_path: Annotated[Path | None, typer.Option("--json", help="Also write the rows as JSON.")] = None,
) -> None:
    """Env steps/s: raw EnvPool (sync/async), gymnasium's vector env, and trl collect to Parquet.

    Example: trl bench --env Breakout-ram --num-envs 8,32 --json bench.json
    """
    from transformer_rl.bench import parse_num_envs, run_bench
    from transformer_rl.files import check_output_json, write_output_json

    sizes = parse_num_envs(num_envs)
    check_value("seconds", seconds, Range(ge=0.01, le=3600))
    check_value("rounds", rounds, Range(ge=1, le=1000))
    if json_path is not None:
        check_output_json(json_path, "bench", "--json")
    progress, update = progress_bar("bench", "{task.completed}/{task.total} measurements")
    try:
        rows = run_bench(env, sizes, include_async=async_, seconds=seconds, rounds=rounds,
                         progress=lambda done, total: update(done, total=total))
    finally:
        stop(progress)
    table = Table("env", "num_envs", "mode", "steps/s", "x envpool (same mode)")
    for r in rows:
        table.add_row(r["env"], str(r["num_envs"]), r["mode"], f"{r['steps_per_s']:,}", f"{r['ratio']:.2f}")
    console.print(table)
    if json_path is not None:
        write_output_json(json_path, {"rows": rows}, "bench", "--json")

