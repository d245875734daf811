"""`trl`: the command line. Thin: each command parses, then calls one plain function."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from transformer_rl import __version__
from transformer_rl.errors import UsageError

app = typer.Typer(
    help="Teach GPT-style transformers to play games: collect, train, eval, run.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
datasets_app = typer.Typer(help="Inspect, validate and verify datasets.", no_args_is_help=True)
app.add_typer(datasets_app, name="datasets")

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

ENV_PANEL = "Environment"
DATA_PANEL = "Data"


def user_errors(fn):
    """A UsageError becomes one line on stderr and exit code 2, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UsageError as e:
            err_console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper


def _version(value: bool) -> None:
    if value:
        console.print(f"trl {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Teach GPT-style transformers to play games."""


EnvOpt = Annotated[
    str,
    typer.Option(
        "--env", help="EnvPool id (CartPole-v1, Acrobot-v1, ...) or <Game>-ram for Atari RAM.",
        rich_help_panel=ENV_PANEL,
    ),
]
StickyOpt = Annotated[
    float | None,
    typer.Option(help="Atari sticky-action probability (ALE v5 default 0.25).", rich_help_panel=ENV_PANEL),
]
FrameSkipOpt = Annotated[
    int | None, typer.Option(help="Atari frame skip (ALE v5 default 4).", rich_help_panel=ENV_PANEL)
]


def _collect_progress(total: int, unit: str):
    progress = Progress(
        TextColumn("[bold]collect"),
        BarColumn(),
        TextColumn("{task.completed:,}/{task.total:,} " + unit),
        TextColumn("{task.fields[sps]:,.0f} steps/s"),
        TextColumn("{task.fields[episodes]:,} episodes"),
        TextColumn("return {task.fields[mean_return]:.1f}"),
        TimeElapsedColumn(),
        console=err_console,
        transient=False,
    )
    task = progress.add_task("collect", total=total, sps=0.0, episodes=0, mean_return=0.0)

    def update(stats, already: int = 0) -> None:
        if not progress.live.is_started:  # started on first news, so errors print alone
            progress.start()
        recent = stats.returns[-100:]
        done = stats.rows if unit == "steps" else stats.episodes
        progress.update(
            task,
            completed=min(total, already + done),
            sps=stats.steps_per_s,
            episodes=stats.episodes,
            mean_return=sum(recent) / len(recent) if recent else 0.0,
        )

    return progress, update


@app.command()
@user_errors
def collect(
    env: EnvOpt,
    out: Annotated[Path, typer.Option(help="Dataset directory to create (or continue with --resume).")],
    steps: Annotated[int | None, typer.Option(help="Stop after this many recorded transitions.")] = None,
    episodes: Annotated[int | None, typer.Option(help="Stop after this many recorded episodes.")] = None,
    num_envs: Annotated[int, typer.Option(help="Envs in the EnvPool pool.")] = 8,
    batch_size: Annotated[
        int | None, typer.Option(help="Async EnvPool: envs per batch, < --num-envs.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Base seed: env stream i is seeded seed + i.")] = 0,
    policy: Annotated[str, typer.Option(help="Behaviour policy: random.")] = "random",
    resume: Annotated[
        bool, typer.Option(help="Continue the dataset at --out until the target is reached.")
    ] = False,
    shard_rows: Annotated[int, typer.Option(help="Rows per Parquet shard.", rich_help_panel=DATA_PANEL)] = 100_000,
    sticky: StickyOpt = None,
    frame_skip: FrameSkipOpt = None,
) -> None:
    """Play an environment with EnvPool and write whole episodes to a Parquet dataset.

    Example: trl collect --env CartPole-v1 --steps 100000 --num-envs 8 --out data/cartpole
    """
    from transformer_rl import envs
    from transformer_rl.collect.policies import RandomPolicy
    from transformer_rl.collect.rollout import CollectConfig
    from transformer_rl.collect.rollout import collect as run_collect

    cfg = CollectConfig(steps=steps, episodes=episodes, num_envs=num_envs, batch_size=batch_size,
                        seed=seed, shard_rows=shard_rows)
    cfg.validate()
    spec = envs.resolve(env, sticky=sticky, frame_skip=frame_skip)
    if policy != "random":
        raise UsageError(f"unknown --policy {policy!r}: use random (trained policies: `trl eval --record`)")
    behaviour = RandomPolicy(spec.num_actions, seed)
    progress, update = _collect_progress(steps or episodes, "steps" if steps else "episodes")
    try:
        stats = run_collect(spec, out, behaviour, cfg, append=resume, progress=update)
    finally:
        progress.stop()
    console.print(
        f"{stats.rows:,} transitions in {stats.episodes:,} episodes -> {out} "
        f"(dataset: {stats.dataset_rows:,} rows, {stats.dataset_episodes:,} episodes; "
        f"{stats.steps_per_s:,.0f} env steps/s)"
    )


@app.command("envs")
def list_envs(
    match: Annotated[str, typer.Argument(help="Only ids containing this text.")] = "",
) -> None:
    """List the env ids trl accepts (Atari games as <Game>-ram)."""
    from transformer_rl import envs

    ids = [i for i in envs.known_ids() if match.lower() in i.lower()]
    console.print("\n".join(ids))


@datasets_app.command("list")
@user_errors
def datasets_list(
    root: Annotated[Path, typer.Argument(help="Directory to search for datasets.")] = Path("."),
) -> None:
    """List the datasets under a directory."""
    from transformer_rl.datasets.format import MANIFEST, read_manifest, totals

    if not root.is_dir():
        raise UsageError(f"{root} is not a directory")
    found = sorted(p.parent for p in root.rglob(MANIFEST))
    table = Table("dataset", "env", "rows", "episodes", "shards", "MB")
    for path in found:
        try:
            m = read_manifest(path)
        except UsageError:
            continue
        rows, eps = totals(m)
        mb = sum(s["bytes"] for s in m["shards"]) / 1e6
        table.add_row(str(path), m["env_id"], f"{rows:,}", f"{eps:,}", str(len(m["shards"])), f"{mb:.1f}")
    console.print(table if found else f"no datasets under {root}")


@datasets_app.command("info")
@user_errors
def datasets_info(
    root: Annotated[Path, typer.Argument(help="Dataset directory.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Summarise a dataset: env, config, seeds, size, returns."""
    from transformer_rl.datasets.summary import summarize

    info = summarize(root)
    if as_json:
        console.print_json(json.dumps(info))
        return
    table = Table(show_header=False, box=None)
    for key, value in info.items():
        table.add_row(f"[bold]{key}", json.dumps(value) if isinstance(value, dict | list) else str(value))
    console.print(table)


def _print_report(root: Path, report, what: str) -> None:
    if report.ok:
        console.print(f"[green]OK[/] {root}: {what} ({report.rows:,} rows, {report.episodes:,} episodes)")
        return
    for problem in report.problems:
        err_console.print(f"[red]FAIL[/] {problem}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


@datasets_app.command("validate")
@user_errors
def datasets_validate(root: Annotated[Path, typer.Argument(help="Dataset directory.")]) -> None:
    """Check structure: manifest vs shards, checksums, schema, episode contiguity and step order."""
    from transformer_rl.datasets.checks import validate

    _print_report(root, validate(root), "structure valid")


@datasets_app.command("verify")
@user_errors
def datasets_verify(root: Annotated[Path, typer.Argument(help="Dataset directory.")]) -> None:
    """Re-simulate every episode with EnvPool; observations and rewards must match bit for bit."""
    from transformer_rl.datasets.checks import verify

    _print_report(root, verify(root), "every episode re-simulates bit for bit")


MODEL_PANEL = "Model"
TRAIN_PANEL = "Training"
RUN_PANEL = "Run"

ModelOpt = Annotated[str, typer.Option(help="gpt (transformer) or mlp (dense baseline).",
                                       rich_help_panel=MODEL_PANEL)]
ContextOpt = Annotated[int, typer.Option(help="GPT context: timesteps per window.",
                                         rich_help_panel=MODEL_PANEL)]
LayerOpt = Annotated[int, typer.Option(help="Transformer blocks / MLP hidden layers.",
                                       rich_help_panel=MODEL_PANEL)]
HeadOpt = Annotated[int, typer.Option(help="GPT attention heads.", rich_help_panel=MODEL_PANEL)]
EmbdOpt = Annotated[int, typer.Option(help="GPT embedding width.", rich_help_panel=MODEL_PANEL)]
HiddenOpt = Annotated[int, typer.Option(help="MLP hidden width.", rich_help_panel=MODEL_PANEL)]
EpochsOpt = Annotated[int, typer.Option(help="PPO epochs over the data (per iteration for `run`).",
                                        rich_help_panel=TRAIN_PANEL)]
EntOpt = Annotated[float, typer.Option(help="PPO entropy bonus.", rich_help_panel=TRAIN_PANEL)]
ClipOpt = Annotated[float, typer.Option(help="PPO surrogate clipping.", rich_help_panel=TRAIN_PANEL)]
LambdaOpt = Annotated[float, typer.Option(help="PPO GAE lambda.", rich_help_panel=TRAIN_PANEL)]
RamNormOpt = Annotated[str, typer.Option(help="Byte observations: data (per byte, scaled from the first "
                                         "data) or fixed (/255).", rich_help_panel=MODEL_PANEL)]
UpdatesOpt = Annotated[int, typer.Option(help="Gradient steps (per iteration for `run`).",
                                         rich_help_panel=TRAIN_PANEL)]
BatchOpt = Annotated[int | None, typer.Option("--batch", help="Per gradient step: windows (DQN, default 64) "
                                              "or rows, each with its window (PPO, default 128).",
                                              rich_help_panel=TRAIN_PANEL)]
LrOpt = Annotated[float | None, typer.Option(help="Adam learning rate (default: DQN 5e-4; PPO 2.5e-4, "
                                                  "1e-3 in `run` on Atari).",
                                             rich_help_panel=TRAIN_PANEL)]
GammaOpt = Annotated[float, typer.Option(help="Discount.", rich_help_panel=TRAIN_PANEL)]
NStepOpt = Annotated[int, typer.Option(help="DQN n-step returns.", rich_help_panel=TRAIN_PANEL)]
ReplayOpt = Annotated[int, typer.Option(help="DQN replay: newest dataset rows trained on.",
                                        rich_help_panel=TRAIN_PANEL)]


@app.command()
@user_errors
def train(
    data: Annotated[Path, typer.Option(help="Dataset directory to train on.")],
    out: Annotated[Path, typer.Option(help="Checkpoint directory to write.")],
    algo: Annotated[str, typer.Option(help="dqn, or ppo (on rows that recorded the behaviour "
                                            "policy's logp, e.g. a `trl run --algo ppo` dataset).")] = "dqn",
    init: Annotated[Path | None, typer.Option(help="Continue from this checkpoint.")] = None,
    seed: Annotated[int, typer.Option(help="Seed for init and sampling.")] = 0,
    model: ModelOpt = "gpt",
    context: ContextOpt = 8,
    n_layer: LayerOpt = 2,
    n_head: HeadOpt = 2,
    n_embd: EmbdOpt = 32,
    hidden: HiddenOpt = 64,
    ram_norm: RamNormOpt = "data",
    updates: UpdatesOpt = 1000,
    batch: BatchOpt = None,
    lr: LrOpt = None,
    gamma: GammaOpt = 0.99,
    n_step: NStepOpt = 3,
    replay_rows: ReplayOpt = 100_000,
    epochs: EpochsOpt = 4,
    ent_coef: EntOpt = 0.01,
    clip: ClipOpt = 0.2,
    gae_lambda: LambdaOpt = 0.95,
) -> None:
    """Train a model on a dataset (its newest --replay-rows rows) and write a checkpoint.

    Example: trl train --algo dqn --data data/cartpole --out ckpt/cartpole
    """
    from transformer_rl.pipeline import ModelArgs
    from transformer_rl.pipeline import train as run_train
    from transformer_rl.train.dqn import DQNConfig
    from transformer_rl.train.ppo import PPOConfig

    cfg = DQNConfig(updates=updates, batch_size=batch or DQNConfig.batch_size, lr=lr or DQNConfig.lr,
                    gamma=gamma, n_step=n_step, replay_rows=replay_rows)
    ppo = PPOConfig(epochs=epochs, minibatch_rows=batch or PPOConfig.minibatch_rows, lr=lr or PPOConfig.lr,
                    gamma=gamma, gae_lambda=gae_lambda, clip=clip, ent_coef=ent_coef)
    args = ModelArgs(model=model, context=context, n_layer=n_layer, n_head=n_head, n_embd=n_embd,
                     hidden=hidden, ram_norm=ram_norm)
    args.validate()
    progress = Progress(TextColumn("[bold]train"), BarColumn(),
                        TextColumn("{task.completed}/{task.total} updates"),
                        TextColumn("loss {task.fields[loss]:.4f}  Q {task.fields[q]:.2f}  "
                                   "{task.fields[ups]:.0f} updates/s"),
                        TimeElapsedColumn(), console=err_console)
    task = progress.add_task("train", total=updates, loss=0.0, q=0.0, ups=0.0)

    def update(m: dict) -> None:
        if not progress.live.is_started:
            progress.start()
        progress.update(task, completed=m["update"], loss=m["loss"], q=m["q"], ups=m["updates_per_s"])

    try:
        result = run_train(data, out, algo=algo, model_args=args, dqn=cfg, ppo=ppo, init=init, seed=seed,
                           progress=update)
    finally:
        progress.stop()
    losses = (f"td loss {result['losses/td_loss']:.4f}" if algo == "dqn" else
              f"policy loss {result['losses/policy_loss']:.4f}, kl {result['losses/approx_kl']:.4f}, "
              f"{result['charts/updates']} updates")
    console.print(f"{model}: {result['parameters']:,} parameters; {losses}; checkpoint -> {out}")


@app.command("eval")
@user_errors
def eval_command(
    ckpt: Annotated[Path, typer.Argument(help="Checkpoint directory.")],
    episodes: Annotated[int, typer.Option(help="Episodes, one per env.")] = 100,
    seed: Annotated[int, typer.Option(help="Evaluation seed.")] = 1_000_000,
    record: Annotated[Path | None, typer.Option(help="Write the episodes as a dataset here.")] = None,
    gif: Annotated[Path | None, typer.Option(help="Write a GIF of the first episode here.")] = None,
    report: Annotated[Path | None, typer.Option(help="report.json path (default: <CKPT>/report.json).")] = None,
    mode: Annotated[str, typer.Option(help="greedy, or sample from the policy (PPO checkpoints).")] = "greedy",
) -> None:
    """Play a checkpoint (greedily by default) and write report.json.

    Example: trl eval runs/default/checkpoints/best --episodes 100 --gif cartpole.gif
    """
    from transformer_rl.evaluate.evaluate import evaluate, write_report
    from transformer_rl.train import checkpoint

    loaded = checkpoint.load(ckpt)
    result = evaluate(loaded.model, loaded.spec, loaded.algo, episodes=episodes, seed=seed,
                      record=record, gif=gif, producer={"checkpoint": str(ckpt)}, mode=mode)
    write_report(result, report or ckpt / "report.json")
    console.print(f"{result['episodes']} episodes: return {result['mean_return']:.1f} ± "
                  f"{result['std_return']:.1f} (min {result['min_return']:.0f}, max "
                  f"{result['max_return']:.0f}); report -> {report or ckpt / 'report.json'}")


@app.command("run")
@user_errors
def run_command(
    env: EnvOpt = "CartPole-v1",
    algo: Annotated[str, typer.Option(help="dqn or ppo.", rich_help_panel=RUN_PANEL)] = "dqn",
    name: Annotated[str, typer.Option(help="Run name: everything goes to <root>/<name>.",
                                      rich_help_panel=RUN_PANEL)] = "default",
    root: Annotated[Path, typer.Option(help="Directory of runs.", rich_help_panel=RUN_PANEL)] = Path("runs"),
    seed: Annotated[int, typer.Option(help="Seed.", rich_help_panel=RUN_PANEL)] = 0,
    iterations: Annotated[int | None, typer.Option(help="Most collect/train cycles (preset).",
                                                   rich_help_panel=RUN_PANEL)] = None,
    steps_per_iteration: Annotated[int | None, typer.Option(help="Env steps collected per iteration (preset).",
                                                            rich_help_panel=RUN_PANEL)] = None,
    num_envs: Annotated[int | None, typer.Option(help="Envs collecting (preset).", rich_help_panel=RUN_PANEL)] = None,
    eps_decay_steps: Annotated[int, typer.Option(help="DQN: epsilon 1 -> 0.02 over these env steps.",
                                                 rich_help_panel=RUN_PANEL)] = 40_000,
    eval_every: Annotated[int | None, typer.Option(help="Evaluate and checkpoint every N iterations (preset).",
                                                   rich_help_panel=RUN_PANEL)] = None,
    eval_episodes: Annotated[int | None, typer.Option(help="Episodes per evaluation (preset).",
                                                      rich_help_panel=RUN_PANEL)] = None,
    eval_mode: Annotated[str | None, typer.Option(help="greedy, or sample from the policy (PPO) (preset).",
                                                  rich_help_panel=RUN_PANEL)] = None,
    stop_at: Annotated[float | None, typer.Option(help="Stop when eval mean reaches this "
                                                  "(default: the env's threshold).",
                                                  rich_help_panel=RUN_PANEL)] = None,
    model: ModelOpt = "gpt",
    context: ContextOpt = 8,
    n_layer: LayerOpt = 2,
    n_head: HeadOpt = 2,
    n_embd: EmbdOpt = 32,
    hidden: HiddenOpt = 64,
    ram_norm: RamNormOpt = "data",
    updates: UpdatesOpt = 1000,
    batch: BatchOpt = None,
    lr: LrOpt = None,
    gamma: GammaOpt = 0.99,
    n_step: NStepOpt = 3,
    replay_rows: ReplayOpt = 100_000,
    epochs: EpochsOpt = 4,
    ent_coef: EntOpt = 0.01,
    clip: ClipOpt = 0.2,
    gae_lambda: LambdaOpt = 0.95,
) -> None:
    """Collect -> train -> eval, N iterations, under runs/<name>/ (resumable).

    Options marked (preset) default per algorithm and env family (CartPole & co, or Atari RAM);
    the README lists the presets.

    Example: trl run --env CartPole-v1 --algo dqn --model gpt --seed 1 --name cartpole-s1
    """
    from transformer_rl.pipeline import ModelArgs, RunConfig, run
    from transformer_rl.train.dqn import DQNConfig
    from transformer_rl.train.ppo import PPOConfig

    cfg = RunConfig(
        env=env, algo=algo, name=name, root=root, seed=seed, iterations=iterations,
        steps_per_iteration=steps_per_iteration, num_envs=num_envs, eval_episodes=eval_episodes,
        eval_every=eval_every, eval_mode=eval_mode, eps_decay_steps=eps_decay_steps,
        stop_at=stop_at,
        model=ModelArgs(model=model, context=context, n_layer=n_layer, n_head=n_head,
                        n_embd=n_embd, hidden=hidden, ram_norm=ram_norm),
        dqn=DQNConfig(updates=updates, batch_size=batch or DQNConfig.batch_size, lr=lr or DQNConfig.lr,
                      gamma=gamma, n_step=n_step, replay_rows=replay_rows),
        ppo=PPOConfig(epochs=epochs, minibatch_rows=batch or PPOConfig.minibatch_rows,
                      lr=lr, gamma=gamma, gae_lambda=gae_lambda, clip=clip, ent_coef=ent_coef),
    )
    report = run(cfg, log=console.print)
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

    sizes = parse_num_envs(num_envs)
    if seconds <= 0 or rounds <= 0:
        raise UsageError("--seconds and --rounds must be positive")
    if json_path is not None and not json_path.parent.exists():
        raise UsageError(f"--json {json_path}: directory {json_path.parent} does not exist")
    rows = run_bench(env, sizes, include_async=async_, seconds=seconds, rounds=rounds)
    table = Table("env", "num_envs", "mode", "steps/s", "x envpool (same mode)")
    for r in rows:
        table.add_row(r["env"], str(r["num_envs"]), r["mode"], f"{r['steps_per_s']:,}", f"{r['ratio']:.2f}")
    console.print(table)
    if json_path is not None:
        json_path.write_text(json.dumps(rows, indent=1) + "\n")


def main() -> None:
    app()
