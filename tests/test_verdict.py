"""The campaign's verdict: the claim as stated (the best transformer at N parameters against every
dense net of at least N), with Welch's 95% intervals, checked on hand-made seeds."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import experiment  # noqa: E402
import sweep_report  # noqa: E402


def test_welch_interval_matches_the_hand_computed_one():
    # means 2 and 5, variances 1 and 1, n = 3: se = sqrt(2/3), df = 4, t(0.975, 4) = 2.7764
    p, low, high = sweep_report.welch([1, 2, 3], [4, 5, 6])
    half = 2.7764 * (2 / 3) ** 0.5
    assert (low, high) == pytest.approx((-3 - half, -3 + half), abs=1e-3)
    assert p == pytest.approx(0.0213, abs=1e-3)  # t = -3.674 with 4 degrees of freedom
    assert sweep_report.t_quantile(0.05, 1e6) == pytest.approx(1.95996, abs=1e-4)


def runs(family: str, size: str, parameters: int, finals: list[float]) -> list[dict]:
    return [{"workload": "w", "family": family, "size": size, "context": None, "seed": seed,
             "parameters": parameters, "final": {"mean_return": final}, "env_steps": 2_000_000,
             "wall_s": 100.0, "solved": False, "stop_at": None, "model_options": {}}
            for seed, final in enumerate(finals)]


def verdict(*groups: list[dict]) -> str:
    return sweep_report.verdict(experiment.summary([r for g in groups for r in g]))


GPT = runs("gpt", "w16", 9_017, [40, 41, 42])
SMALL_BETTER = runs("mlp", "h48", 5_000, [50, 51, 52])  # better, but smaller: outside the claim


def test_yes_when_it_beats_every_dense_net_of_at_least_its_size():
    text = verdict(GPT, runs("gpt", "w8", 2_977, [10, 11, 12]), SMALL_BETTER,
                   runs("mlp", "h64", 20_000, [30, 31, 32]), runs("mlp", "h160", 9_017, [20, 22, 24]))
    first = text.splitlines()[0]
    assert "gpt w16 (9,017 parameters" in first and "**yes**" in first
    assert "against mlp h64" in text and "against mlp h160" in text
    assert "against the dense net's best size, mlp h48" in text and "the dense net is better" in text


def test_no_when_a_dense_net_at_least_as_large_is_better():
    text = verdict(GPT, SMALL_BETTER, runs("mlp", "h64", 20_000, [30, 31, 32]),
                   runs("mlp", "h160", 50_000, [50, 51, 52]))
    assert "**no**" in text.splitlines()[0]


def test_not_distinguishable_when_the_seeds_overlap():
    text = verdict(GPT, runs("mlp", "h64", 20_000, [30, 31, 32]), runs("mlp", "h160", 50_000, [36, 42, 48]))
    assert "**not distinguishable at 3 seeds**" in text.splitlines()[0]


def test_not_tested_without_a_dense_net_that_large():
    text = verdict(GPT, SMALL_BETTER)
    assert "**not tested**" in text.splitlines()[0]


def test_the_10m_block_reads_each_familys_best_beside_the_published_figures():
    rows = experiment.summary(runs("gpt", "w32", 30_313, [80, 95, 90]) + runs("gpt", "w16", 9_017, [60, 61, 62])
                              + runs("mlp", "h48", 8_985, [70, 75, 72]))
    text = sweep_report.block("breakout-ppo-10m", rows, None)
    assert "Sygnowski and Michalewski, 2016): 99.6" in text
    assert "gpt w32 88.3 ± 6.2 over 3 seeds (its best seed 95.0); mlp h48 72.3 ± 2.1 over 3 seeds" in text
    assert "Sygnowski" not in sweep_report.block("breakout-ppo-2m", rows, None)


def test_a_family_with_one_seed_reads_as_one_score_not_a_spread():
    mlp = runs("mlp", "h48", 8_985, [51.8])
    mlp[0]["last"] = {"mean_return": 58.0}
    text = sweep_report.block("breakout-ppo-10m", experiment.summary(runs("gpt", "w32", 30_313, [80, 95, 90]) + mlp),
                              None)
    assert "; mlp h48 51.8 from 1 seed so far; its last checkpoint 58.0." in text
    assert "51.8 ± 0.0 over" not in text


def test_the_table_scores_the_last_checkpoint_beside_the_best():
    """The best checkpoint (picked on a few evaluation games) can score below the last one on the
    same 100 games; the table gives both, and says when early results lack the last."""
    gpt = runs("gpt", "w32", 30_313, [73.5, 80, 90])
    for r, last in zip(gpt, [100.2, 90.0, None], strict=True):
        r["last"] = None if last is None else {"mean_return": last}
    mlp = runs("mlp", "h48", 8_985, [70, 75, 72])
    table = sweep_report.table(experiment.summary(gpt + mlp))
    assert "| best checkpoint (100 ep) | last checkpoint (100 ep) |" in table
    assert "| 81.2 ± 6.8 | 95.1 ± 5.1 (2 of 3 seeds) |" in table
    assert "| 72.3 ± 2.1 | - |" in table
    text = sweep_report.block("breakout-ppo-10m", experiment.summary(gpt + mlp), None)
    assert ("gpt w32 81.2 ± 6.8 over 3 seeds (its best seed 90.0; its last checkpoints 95.1 ± 5.1 (2 of 3 seeds))"
            in text)


def test_an_atari_block_shows_its_plots_and_the_curves_plot_draws_every_run(tmp_path):
    rows = experiment.summary(GPT + SMALL_BETTER)
    for r in rows:
        for seed, run in enumerate(r["runs"]):
            run["curve"] = [[100_000 * i, 10.0 * i, 5.0 + i + seed] for i in range(1, 6)]
    text = sweep_report.block("w", rows, experiment.plot_paths("w", rows, Path("docs")))
    assert "![w: score on 100 games vs parameters, every seed's best and last checkpoint](docs/sweep_w.png)" in text
    assert "![w: every run's evaluations against env steps](docs/sweep_w_curves.png)" in text
    experiment.curves("w", rows, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
