"""`trl run`'s configuration and its presets per algorithm and env family."""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from transformer_rl import distributed
from transformer_rl.envs import resolve
from transformer_rl.errors import DamagedData, UsageError
from transformer_rl.models import ModelArgs, check_size, resolve_device
from transformer_rl.settings import (
    ENVS,
    MAX_SEED,
    POSITIVE,
    Algo,
    Device,
    EvalMode,
    KeepCheckpoints,
    KeepData,
    Range,
    Tokens,
    Track,
    check,
    fill,
    setting,
)
from transformer_rl.train import LEARNERS, algorithm, check_mode


@dataclass
class RunConfig:
    env: str = "CartPole-v1"
    algo: Algo = Algo.dqn
    name: str = "default"
    root: Path = Path("runs")
    seed: int = 0
    init: Path | None = None  # start from this checkpoint (Online DT: a DT trained offline)
    seed_data: Path | None = None  # a dataset whose best episodes stay in the replay (Online DT)
    iterations: int = setting(20, "Most collect -> train cycles (stops once solved).", POSITIVE)
    steps_per_iteration: int = setting(10_000, "Env steps collected per iteration.", POSITIVE)
    num_envs: int = setting(8, "Envs collecting.", ENVS)
    eval_every: int = setting(1, "Evaluate and checkpoint every N iterations.", POSITIVE)
    eval_episodes: int = setting(100, "Episodes per evaluation (one env each).", ENVS)
    eval_mode: EvalMode = setting(EvalMode.greedy, "greedy, or sample from the policy (PPO).")
    seed_percent: float = setting(10.0, "With --seed-data: the best X% of its episodes stay in the replay.",
                                  Range(gt=0, le=100))
    seed_below_return: float | None = setting(None, "With --seed-data: only its episodes whose return is "
                                              "below this (weak-data experiments).")
    stop_at: float | None = setting(None, "Stop once an eval mean reaches this (none given: the "
                                    "env's threshold, e.g. 475 for CartPole-v1).")
    overlap: bool = setting(False, "Learn on iteration k while the envs play k+1 with the weights from "
                            "before that update (one iteration of policy lag; PPO corrects it by its ratio).")
    device: Device = setting(Device.auto, "Where the model learns and acts: auto (cuda when torch sees a "
                             "GPU), cpu or cuda.")
    keep_data: KeepData = setting(KeepData.all, "all: every rollout in data/ and every evaluation's episodes in "
                                  "evals/; none: neither (on-policy learners only: --algo ppo).")
    keep_checkpoints: KeepCheckpoints = setting(KeepCheckpoints.all, "all: a checkpoint per evaluation; last: "
                                                "only checkpoints/last and checkpoints/best.")
    eval_budget: float | None = setting(None, "Evaluate (every --eval-every) only while evaluation has played at "
                                        "most this fraction of the run's env steps, e.g. 0.1; the last iteration "
                                        "is always evaluated.", Range(gt=0, le=1))
    track: Track = setting(Track.none, "Mirror every metrics.jsonl row, under CleanRL's names, to tensorboard "
                           "(<run>/tensorboard/) or trackio (<run>/trackio/): pip install 'transformer-rl\\[track]'. "
                           "A resume may change it: the tracker is rewritten from metrics.jsonl.")
    model: ModelArgs = field(default_factory=ModelArgs)
    learner: Any = None  # the algorithm's config (its registry entry's); None: its defaults

    def __post_init__(self) -> None:
        if self.learner is None and self.algo in LEARNERS:
            self.learner = algorithm(self.algo).config()

    @classmethod
    def create(cls, env: str = "CartPole-v1", algo: Algo = Algo.dqn, **settings: Any) -> RunConfig:
        """The preset for ``env``'s family and ``algo``, then ``settings`` (setting name -> value,
        flat: run, model and algorithm settings alike) on top."""
        algo = Algo(algo)
        family = "atari" if resolve(env).is_ram else "classic"
        fixed = {k: settings.pop(k) for k in ("name", "root", "seed", "init", "seed_data") if k in settings}
        built = fill({"run": cls, "model": ModelArgs, "learner": algorithm(algo).config},
                     {**PRESETS[algo, family], **settings}, f"to --algo {algo}")
        run = built["run"]
        run.env, run.algo, run.model, run.learner = env, algo, built["model"], built["learner"]
        for key, value in fixed.items():
            setattr(run, key, value)
        return run

    def validate(self) -> None:
        check(self)
        self.model.validate(resolve(self.env))
        check_size(self.model.config(resolve(self.env)))
        if self.model.tokens == Tokens.seed and self.algo in (Algo.dt, Algo.bc):
            raise UsageError(f"--tokens seed reads one observation, no return-to-go or timestep; use "
                             f"--tokens feature for --algo {self.algo}")
        resolve_device(self.device)
        entry = algorithm(self.algo)
        if not isinstance(self.learner, entry.config):
            raise UsageError(f"--algo {self.algo} needs a {entry.config.__name__}")
        # pool seeds: seed * 1000 + iteration * max(10, num_envs) + env (see collect/experience.py);
        # evaluation seeds: 10,000,000 + seed * 1000 + iteration + env
        top = MAX_SEED - 10_000_000 - self.iterations * max(10, self.num_envs, self.eval_episodes) - self.num_envs
        if not 0 <= self.seed <= top // 1000:
            raise UsageError(f"--seed {self.seed} is out of range: a run's env streams are seeded from "
                             f"seed * 1000 on; give a seed in [0, {top // 1000:,}]")
        if self.seed_data is not None:
            from transformer_rl.datasets.checks import validate as validate_dataset
            from transformer_rl.datasets.format import read_manifest

            if read_manifest(self.seed_data)["env_id"] != self.env:
                raise UsageError(f"--seed-data {self.seed_data} holds no {self.env} data; give a dataset of it")
            report = validate_dataset(self.seed_data, max_problems=1)  # every shard, before anything is written
            if not report.ok:
                raise DamagedData(f"--seed-data {self.seed_data}: {report.problems[0]}")
        if self.keep_data == KeepData.none and not entry.on_policy:
            raise UsageError(f"--keep-data none is for on-policy learners (--algo ppo): --algo {self.algo} learns "
                             "from the run's replay in data/")
        check_mode(self.algo, self.eval_mode, "--eval-mode")

    def this_rank(self) -> RunConfig:
        """This rank's part of the run under torchrun: ``num_envs``, ``steps_per_iteration`` and
        the minibatch split equally over the ranks (so the job plays and learns per iteration what
        one process would, and averaged gradients stand for the whole minibatch); alone, itself."""
        if not distributed.active():
            return self
        n = distributed.world_size()
        local = copy.deepcopy(self)
        local.num_envs = distributed.share(self.num_envs, "--num-envs")
        local.steps_per_iteration = self.steps_per_iteration // n
        if local.steps_per_iteration < local.num_envs:
            raise UsageError(f"--steps-per-iteration {self.steps_per_iteration:,} is too few for {n} ranks of "
                             f"{local.num_envs} envs; give at least {self.num_envs:,}")
        local.learner.batch = distributed.share_minibatch(self.learner.batch)
        return local

    def update_seed(self, iteration: int) -> int:
        """The seed of iteration ``iteration``'s update (a rank's own under torchrun)."""
        return distributed.rank_seed(self.seed * 1000 + iteration)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        del d["root"]  # where the run lives is not part of it: a run directory moves (another --root, machine)
        d["init"] = str(self.init) if self.init is not None else None
        d["seed_data"] = str(self.seed_data) if self.seed_data is not None else None
        return d


# Settings per (algorithm, env family) that differ from the defaults; the command line wins.
PRESETS: dict[tuple[Algo, str], dict[str, Any]] = {
    # DQN: 10k steps of epsilon-greedy play, then 1000 updates on the newest 100k rows
    (Algo.dqn, "classic"): {},
    (Algo.dqn, "atari"): dict(iterations=100, steps_per_iteration=20_000, num_envs=16, eval_every=5,
                              eval_episodes=16),
    # PPO: rollouts of 128 steps per env; episodes carry on across iterations; learning overlaps
    # the next rollout (CartPole GPT, 3 seeds: 51k env steps to solve, 108k without)
    (Algo.ppo, "classic"): dict(iterations=146, steps_per_iteration=1024, eval_every=5, overlap=True),
    # Breakout & co: 32 envs, sampled evaluation (a greedy policy can stall, never pressing FIRE
    # to serve); in training only, clipped rewards and a lost life ends the return; ~2M env steps;
    # learning overlaps the next rollout, in minibatches of 512 (8 per epoch: a quarter of the
    # gradient steps of 128, at about half the cost per row)
    (Algo.ppo, "atari"): dict(iterations=488, steps_per_iteration=4096, num_envs=32, eval_every=25,
                              eval_episodes=16, eval_mode=EvalMode.sample, lr=1e-3, reward_clip=True,
                              episodic_life=True, batch=512, overlap=True),
    # Online Decision Transformer: start from an offline DT (--init), play for 1.3x the best
    # return seen, sampling actions with an entropy bonus; learn from the run's replay
    (Algo.dt, "classic"): dict(steps_per_iteration=5000, updates=500, warmup_steps=0, ent_coef=0.01),
    (Algo.dt, "atari"): dict(iterations=100, steps_per_iteration=20_000, num_envs=16, eval_every=5,
                             eval_episodes=16, updates=500, warmup_steps=0, ent_coef=0.01),
    (Algo.bc, "classic"): dict(steps_per_iteration=5000, updates=500),
    (Algo.bc, "atari"): dict(iterations=100, steps_per_iteration=20_000, num_envs=16, eval_every=5,
                             eval_episodes=16, updates=500),
}
