import json

import numpy as np

from transformer_rl.datasets import load
from transformer_rl.pipeline import RunConfig, run
from transformer_rl.train.ppo import PPOConfig, gae


def test_gae_by_hand():
    # episode A: 2 rows, terminated; episode B: 2 rows, truncated (bootstraps from V(final))
    reward = np.array([1.0, 1.0, 1.0, 2.0], np.float32)
    value = np.array([0.5, 0.4, 1.0, 2.0], np.float32)
    next_value = np.array([0.4, 9.0, 2.0, 3.0], np.float32)  # 9.0 must be ignored (terminal)
    terminated = np.array([False, True, False, False])
    g, lam = 0.9, 0.5
    adv = gae(reward, value, next_value, terminated, np.array([0, 2, 4]), g, lam)
    d1 = 1.0 - 0.4  # terminal: no bootstrap
    d0 = 1.0 + g * 0.4 - 0.5
    d3 = 2.0 + g * 3.0 - 2.0  # truncated: bootstrap from the final observation's value
    d2 = 1.0 + g * 2.0 - 1.0
    assert np.allclose(adv, [d0 + g * lam * d1, d1, d2 + g * lam * d3, d3], atol=1e-6)


def test_ppo_run_records_behaviour_logp_and_trains(tmp_path):
    cfg = RunConfig(algo="ppo", name="p", root=tmp_path, iterations=2, steps_per_iteration=1500,
                    eval_episodes=5, ppo=PPOConfig(epochs=2))
    report = run(cfg, log=lambda *_: None)
    assert report["iterations"] == 2
    data = load(tmp_path / "p" / "data")
    second = data.env_index >= 8  # iteration 2 was sampled from the model: logp and value recorded
    assert np.isfinite(data.logp[second]).all() and np.isfinite(data.value[second]).all()
    assert (data.logp[second] < 0).all()
    rows = [json.loads(x) for x in (tmp_path / "p" / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["losses/approx_kl"]) for r in rows)
