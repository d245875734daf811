"""Behaviour policies for collection.

A policy sees one EnvPool batch at a time: observations, the env ids they came from, which of
them start a new episode (so a sequence model can reset its per-env context), and the reward of
the step that led to each (a Decision Transformer lowers its return-to-go by it). It returns
actions and, for PPO, the log-probability and value of each action (else None).
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

Act = tuple[np.ndarray, np.ndarray | None, np.ndarray | None]


class Policy(Protocol):
    def act(self, obs: np.ndarray, env_ids: np.ndarray, first: np.ndarray, reward: np.ndarray) -> Act:
        """obs (B, D), env_ids (B,), first (B,) bool, reward (B,) -> actions (B,) int32, logp, value."""
        ...

    def describe(self) -> dict[str, Any]:
        """What produced the data, for the dataset manifest."""
        ...

    @property
    def exploring(self) -> float | None:
        """The chance of a uniform action, for a policy that explores so (else None)."""
        ...


class RandomPolicy:
    """Uniform over the discrete actions."""

    def __init__(self, num_actions: int, seed: int = 0, record_logp: bool = False):
        self.num_actions, self.seed, self.record_logp = num_actions, seed, record_logp
        self.rng = np.random.default_rng(seed)

    def act(self, obs: np.ndarray, env_ids: np.ndarray, first: np.ndarray, reward: np.ndarray) -> Act:
        action = self.rng.integers(0, self.num_actions, len(env_ids), dtype=np.int32)
        if not self.record_logp:
            return action, None, None
        n = len(env_ids)  # PPO can learn from it: logp is known, value unknown (NaN)
        return action, np.full(n, -np.log(self.num_actions), np.float32), np.full(n, np.nan, np.float32)

    def describe(self) -> dict[str, Any]:
        return {"policy": "random", "seed": self.seed, "checkpoint": None, "iteration": None}

    @property
    def exploring(self) -> float:
        return 1.0


class ModelPolicy:
    """Acts with a trained model, keeping each env's last K observations on the fly.

    ``acts_on`` "q" (DQN): argmax of Q, or epsilon-greedy over Q in mode "epsilon"; "policy"
    (PPO, DT, BC): argmax of the policy logits in mode "greedy", else ("sample") sampled from the
    policy, recording logp and value for PPO.
    A Decision Transformer also keeps each env's return-to-go, from ``target_return`` down by
    every reward, and its timestep in the episode.
    """

    def __init__(self, model, num_envs: int, mode: str, *, algo: str, acts_on: str = "policy",
                 epsilon: float = 0.0, seed: int = 0, describe: dict[str, Any] | None = None,
                 target_return: float = 0.0):
        import torch

        from transformer_rl.models import autocast

        if mode not in ("greedy", "epsilon", "sample"):
            raise ValueError(f"unknown mode {mode!r}")
        self.torch, self.autocast, self.model, self.mode, self.algo = torch, autocast, model, mode, algo
        self.acts_on = acts_on
        self.epsilon, self.seed, self.extra = epsilon, seed, describe or {}
        self.device = next(model.parameters()).device
        cfg = model.config
        self.k, self.num_actions = cfg.context, cfg.num_actions
        self.ctx_obs = np.zeros((num_envs, self.k, cfg.obs_dim), np.float32)
        self.ctx_prev = np.full((num_envs, self.k), cfg.num_actions, np.int64)
        self.ctx_len = np.zeros(num_envs, np.int64)
        self.last_action = np.full(num_envs, cfg.num_actions, np.int64)
        # a Decision Transformer's extra inputs: each env's return-to-go and step in its episode
        self.conditioned = bool(getattr(cfg, "rtg", False) or getattr(cfg, "max_timestep", 0))
        self.target_return = target_return
        self.rtg = np.zeros(num_envs, np.float32)
        self.timestep = np.zeros(num_envs, np.int64)
        self.ctx_rtg = np.zeros((num_envs, self.k), np.float32)
        self.ctx_time = np.zeros((num_envs, self.k), np.int64)
        self.rng = np.random.default_rng(seed)
        self.generator = torch.Generator(device="cpu").manual_seed(seed)
        # a model that encodes each step once (feature tokens with history): each env's context
        # as encoded, (num_envs, K, C), and whose is encoded with the weights the model has now
        self.encodes_steps_once = getattr(model, "encodes_steps_once", False)
        self.ctx_steps = None
        self.encoded = np.zeros(num_envs, bool)

    def new_weights(self) -> None:
        """The model's weights changed (between rollouts of one stream): encode contexts anew."""
        self.encoded[:] = False

    def act(self, obs: np.ndarray, env_ids: np.ndarray, first: np.ndarray, reward: np.ndarray) -> Act:
        torch = self.torch
        ids = env_ids
        self.ctx_len[ids[first]] = 0
        self.last_action[ids[first]] = self.num_actions
        contexts = [(self.ctx_obs, obs), (self.ctx_prev, self.last_action[ids])]
        if self.conditioned:  # only a Decision Transformer pays for these on every step
            self.rtg[ids] = np.where(first, self.target_return, self.rtg[ids] - reward)
            self.timestep[ids] = np.where(first, 0, self.timestep[ids] + 1)
            contexts += [(self.ctx_rtg, self.rtg[ids]), (self.ctx_time, self.timestep[ids])]
        for ctx, new in contexts:  # shift each env's context left by one and append the new step
            ctx[ids, :-1] = ctx[ids, 1:]
            ctx[ids, -1] = new
        self.ctx_len[ids] = np.minimum(self.ctx_len[ids] + 1, self.k)
        mask = np.arange(self.k)[None, :] >= (self.k - self.ctx_len[ids])[:, None]  # (B, K)
        inputs = [self.ctx_obs[ids], self.ctx_prev[ids], mask]
        if self.conditioned:
            inputs += [self.ctx_rtg[ids], self.ctx_time[ids]]
        with torch.inference_mode(), self.autocast(self.device):
            tensors = [torch.from_numpy(a).to(self.device) for a in inputs]
            if self.encodes_steps_once:
                out = self.model(None, *tensors[1:], last_only=True, steps=self._steps(ids))
            else:
                out = self.model(*tensors, last_only=True)
        logp = value = None
        if self.acts_on == "q":
            q = out.q[:, -1].float().cpu()  # (B, A)
            action = q.argmax(-1).numpy()
            if self.mode == "epsilon" and self.epsilon > 0:
                explore = self.rng.random(len(ids)) < self.epsilon
                action = np.where(explore, self.rng.integers(0, self.num_actions, len(ids)), action)
        else:
            logits = out.logits[:, -1].float().cpu()  # (B, A)
            if self.mode == "greedy":
                action = logits.argmax(-1).numpy()
            else:
                dist = torch.distributions.Categorical(logits=logits)
                a = torch.multinomial(dist.probs, 1, generator=self.generator).squeeze(-1)
                action = a.numpy()
                logp = dist.log_prob(a).numpy().astype(np.float32)
                value = out.value[:, -1].float().cpu().numpy().astype(np.float32)
        action = action.astype(np.int32)
        self.last_action[ids] = action
        return action, logp, value

    def _steps(self, ids: np.ndarray):
        """The acting envs' contexts encoded, (B, K, C): only the newest step, where the rest of an
        env's context is encoded with the current weights already; the whole context elsewhere."""
        def to_device(a: np.ndarray):
            return self.torch.from_numpy(a).to(self.device)

        new = self.model.encode(to_device(self.ctx_obs[ids, -1:]))  # (B, 1, C)
        if self.ctx_steps is None:
            self.ctx_steps = new.new_zeros(len(self.encoded), self.k, new.shape[-1])
        rows = to_device(ids)
        self.ctx_steps[rows] = self.torch.cat([self.ctx_steps[rows, 1:], new], dim=1)
        stale = ids[~self.encoded[ids]]
        if len(stale):
            self.ctx_steps[to_device(stale)] = self.model.encode(to_device(self.ctx_obs[stale]))
            self.encoded[stale] = True
        return self.ctx_steps[rows]

    def describe(self) -> dict[str, Any]:
        return {"policy": f"{self.algo}-{self.mode}", "epsilon": self.epsilon, "seed": self.seed,
                **self.extra}

    @property
    def exploring(self) -> float | None:
        return self.epsilon if self.mode == "epsilon" else None
