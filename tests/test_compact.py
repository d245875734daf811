"""Long experiments that outlive their machine: compact runs that resume anywhere, and the
benchmarks/experiment.py ledger that stops at a deadline and resumes from the repo."""

from __future__ import annotations

import json
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from transformer_rl.train import checkpoint

TRL = str(Path(sys.executable).with_name("trl"))
EXPERIMENT = Path(__file__).parent.parent / "benchmarks" / "experiment.py"
COMPACT = ("--keep-data", "none", "--keep-checkpoints", "last")


def ppo_run(root: Path, iterations: int = 12) -> list[str]:
    return [TRL, "run", "--env", "CartPole-v1", "--algo", "ppo", "--iterations", str(iterations), "--eval-every", "3",
            "--eval-episodes", "4", "--stop-at", "1000", "--seed", "3", "--root", str(root), "--name", "c", *COMPACT]


def test_a_compact_run_killed_anywhere_resumes_on_another_root(tmp_path):
    rng = random.Random(0)
    root = tmp_path / "machine-a"
    for _ in range(3):  # SIGKILL at random instants, each time on a new "machine"
        proc = subprocess.Popen(ppo_run(root), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while not (root / "c" / "state.json").exists() and proc.poll() is None:
            time.sleep(0.05)
        time.sleep(rng.uniform(0, 4))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        moved = tmp_path / f"machine-{rng.randrange(10**6)}"
        shutil.copytree(root, moved)  # the run directory carried elsewhere (its lock file is gone with its writer)
        shutil.rmtree(root)
        root = moved
    result = subprocess.run(ppo_run(root), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    run = root / "c"
    assert not (run / "data").exists() and not (run / "evals").exists()
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best", "last"]
    report = json.loads((run / "report.json").read_text())
    assert report["iterations"] == 12
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == list(range(1, 13))  # each once, after every kill
    best = checkpoint.load(run / "checkpoints" / "best")
    assert best.meta["counters"]["iteration"] == report["best"]["iteration"]
    assert checkpoint.load(run / "checkpoints" / "last").meta["counters"]["iteration"] == 12
    assert sum(p.stat().st_size for p in run.rglob("*") if p.is_file()) < 2_000_000
    text = "".join(p.read_text(errors="replace") for p in run.rglob("*.json"))
    assert str(tmp_path) not in text  # nothing inside depends on where it was


def test_a_compact_run_has_the_metrics_of_a_full_one(tmp_path):
    def metrics(root: Path, *extra: str) -> list[dict]:
        cmd = [a for a in ppo_run(root, iterations=6) if a not in COMPACT] + list(extra)
        assert subprocess.run(cmd, capture_output=True, timeout=600).returncode == 0
        return [{k: v for k, v in json.loads(line).items() if "wall" not in k and not k.endswith("_s")}
                for line in (root / "c" / "metrics.jsonl").read_text().splitlines()]

    assert metrics(tmp_path / "full") == metrics(tmp_path / "compact", *COMPACT)
    full = tmp_path / "full" / "c"
    assert (full / "data").is_dir() and (full / "checkpoints" / "iter-006").is_dir()


def test_the_ledger_stops_at_its_deadline_and_resumes(tmp_path):
    """Stopped by SIGTERM once both runs have begun, then by its deadline while they resume (a
    3-second one: every stop waits on a state, never on this machine's speed), then run to the end."""
    args = [sys.executable, str(EXPERIMENT), "--workload", "cartpole-ppo-smoke", "--seeds", "0,1",
            "--families", "mlp", "--sizes", "h48", "--results", str(tmp_path / "sweep"),
            "--root", str(tmp_path / "runs")]
    runs = tmp_path / "sweep" / "cartpole-ppo-smoke" / "runs"
    names = ["cartpole-ppo-smoke-mlp-h48-s0", "cartpole-ppo-smoke-mlp-h48-s1"]
    # SIGTERM (or Ctrl-C) stops it as the deadline does
    ledger = subprocess.Popen([*args[:2], "run", *args[2:], "--jobs", "2"], stdout=subprocess.PIPE, text=True)
    while not all((runs / name / "state.json").exists() for name in names):  # written before the first step
        time.sleep(0.1)
    ledger.send_signal(signal.SIGTERM)
    out, _ = ledger.communicate(timeout=120)
    assert ledger.returncode == 0 and out.count("stopped by SIGTERM") == 2, out
    first = subprocess.run([*args[:2], "run", *args[2:], "--jobs", "2", "--deadline", "0.05"], capture_output=True,
                           text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    assert first.stdout.count("stopped by the deadline") == 2, first.stdout
    flying = sorted(p.name for p in runs.iterdir())
    assert flying == names
    status = subprocess.run([*args[:2], "status", *args[2:]], capture_output=True, text=True, timeout=60)
    assert "0 done, 2 in flight, 0 queued" in status.stdout, status.stdout
    second = subprocess.run([*args[:2], "run", *args[2:], "--jobs", "2"], capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stderr
    done = tmp_path / "sweep" / "cartpole-ppo-smoke"
    for seed in (0, 1):
        result = json.loads((done / f"mlp-h48-s{seed}.json").read_text())
        assert result["env_steps"] >= 60 * 1024 and result["final"]["episodes"] == 100
        for keep in (f"mlp-h48-s{seed}", f"mlp-h48-s{seed}-last"):  # the best and the last model
            kept = sorted(p.name for p in (done / "checkpoints" / keep).iterdir())
            assert kept == ["config.json", "model.safetensors"], kept
        last = json.loads((done / "checkpoints" / f"mlp-h48-s{seed}-last" / "config.json").read_text())
        assert last["counters"]["iteration"] == 60, last["counters"]
    assert not (done / "runs").exists() or not any((done / "runs").iterdir())
    status = subprocess.run([*args[:2], "status", *args[2:]], capture_output=True, text=True, timeout=60)
    assert "2 done, 0 in flight, 0 queued" in status.stdout, status.stdout


def test_the_atari_campaign_is_planned_with_feature_tokens():
    """`--workload breakout-ppo-2m` alone queues the campaign's nine configurations x 3 seeds (the
    committed results and in-flight runs count among them); a --sizes filter replaces the plan."""
    def counts(*extra: str) -> tuple[int, str]:
        out = subprocess.run([sys.executable, str(EXPERIMENT), "status", "--workload", "breakout-ppo-2m", *extra],
                             capture_output=True, text=True, timeout=60).stdout
        done, flying, queued = (int(n) for n in re.search(r"(\d+) done, (\d+) in flight, (\d+) queued", out).groups())
        return done + flying + queued, out

    total, out = counts()
    assert total == 27, out
    assert counts("--families", "gpt-feature-k1")[0] == 4 * 3  # every size of the family given
    assert counts("--sizes", "w8,h48", "--seeds", "0")[0] == 2  # gpt w8 and mlp h48: families default to gpt,mlp


def test_the_campaign_takes_each_familys_best_2m_size_further(tmp_path):
    """breakout-ppo-10m and seaquest-ppo-2m queue each family's best 2M size once its sizes all
    have 3 seeds; the feature family after the others, and not at all when clearly behind."""
    two_m = tmp_path / "sweep" / "breakout-ppo-2m"
    two_m.mkdir(parents=True)

    def results(scores: dict[str, dict[str, float]]) -> None:
        for family, sizes in scores.items():
            for size, score in sizes.items():
                for seed in range(3):
                    (two_m / f"{family}-{size}-s{seed}.json").write_text(json.dumps(
                        {"workload": "breakout-ppo-2m", "family": family, "size": size, "seed": seed,
                         "final": {"mean_return": score + seed - 1}, "wall_s": 1800.0}))

    def status() -> str:
        out = subprocess.run([sys.executable, str(EXPERIMENT), "status", "--workload", "breakout-ppo-10m",
                              "--results", str(tmp_path / "sweep"), "--root", str(tmp_path / "runs")],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return out.stdout

    results({"gpt": {"w8": 27, "w16": 31, "w32": 37}, "gpt-feature-k1": {"w8": 5, "w16": 6, "w24": 7},
             "mlp": {"h48": 33, "h64": 23}})  # mlp h160 not run yet
    out = status()
    assert "0 done, 0 in flight, 3 queued" in out and "gpt w32 (best at 2M: 37.0" in out, out
    assert "mlp - (waits" in out and "gpt-feature-k1 - (waits for the other families'" in out, out
    # 3 runs of each family (two not decided yet) at 1,800 s per 2M run x 2,442 / 488 iterations
    assert "+ 22.5 h guessed from the 2M runs" in out, out
    results({"mlp": {"h160": 25}})
    out = status()
    assert "6 queued" in out and "mlp h48" in out and "gpt-feature-k1 - (left out" in out, out
    # a finished 10M run took 4,800 s against its 2M configuration's 1,800: the runs not measured
    # yet at 10M are guessed at the same ratio, not by iterations (its evaluations are budgeted)
    ten_m = tmp_path / "sweep" / "breakout-ppo-10m"
    ten_m.mkdir()
    (ten_m / "gpt-w32-s0.json").write_text(json.dumps(
        {"workload": "breakout-ppo-10m", "family": "gpt", "size": "w32", "seed": 0, "wall_s": 4800.0}))
    out = status()
    assert "1 done, 0 in flight, 5 queued; 1.3 h spent, 2.7 h left at each family's measured speed" in out, out
    assert "+ 4.0 h guessed from the 2M runs" in out, out  # mlp h48: 3 x 1,800 s x 4,800 / 1,800
    (ten_m / "gpt-w32-s0.json").unlink()
    results({"gpt-feature-k1": {"w24": 36}})  # within the others' spread: it goes on too
    assert "9 queued" in status()


def test_a_free_slot_takes_a_begun_run_else_the_workload_with_fewest_going(tmp_path, monkeypatch):
    """The ledger's order: a run begun in a past session first (finished: returns at once; in flight:
    resumes), else the first job of the workload with the fewest runs going, ties in the order given."""
    sys.path.insert(0, str(EXPERIMENT.parent))
    import experiment

    monkeypatch.setattr(experiment, "RESULTS", tmp_path / "sweep")
    two_m = [("breakout-ppo-2m", "gpt-feature-k1", "w16", seed, None) for seed in (1, 2)]
    ten_m = [("breakout-ppo-10m", "gpt", "w32", seed, None) for seed in (0, 1)]
    pending = two_m + ten_m
    assert experiment.next_job([], [], tmp_path) is None
    assert experiment.next_job(pending, [], tmp_path) == two_m[0]
    assert experiment.next_job(pending, [two_m[0]], tmp_path) == ten_m[0]
    assert experiment.next_job(pending, [ten_m[0], ten_m[1]], tmp_path) == two_m[0]
    # ten_m[1] was begun by a past session: its compact state comes first, whatever is going
    run_dir = experiment.run_dir_of("breakout-ppo-10m", experiment.result_path(*ten_m[1][:4]), tmp_path)
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps({"iterations": 2442}))
    (run_dir / "state.json").write_text(json.dumps({"iteration": 100, "wall_s": 900.0}))
    assert experiment.next_job(pending, [two_m[1], ten_m[0]], tmp_path) == ten_m[1]
