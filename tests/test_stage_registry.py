"""A new method is one registry entry and one YAML: a toy stage, defined in a module outside the
package and named by a method file outside `trainers/`, trains through `scope-bench train` on both
engines (real processes; on verl, its own `fit` with the stage running in the Ray task runner), with
nothing else edited. Also: the registry's own contract (what it refuses, what the configs ask it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from scope_bench.engines.local import load_train_config
from scope_bench.engines.methods import needs_prm, needs_refiner
from scope_bench.engines.stage import STAGES, apply_stage, get_stage, register_stage

_SCRIPT = Path(sys.executable).with_name("scope-bench")
CLI = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "scope_bench.cli"]

TOY_MODULE = '''
"""A toy baseline: +0.5 reward for the shortest correct rollout of each group."""
from scope_bench.engines.stage import register_stage


@register_stage("bonus_shortest")
def bonus_shortest(groups, ctx, result):
    start = given = 0
    for group in groups:
        correct = [i for i, r in enumerate(group) if not r.failed]
        if correct:
            best = min(correct, key=lambda i: len(group[i].token_ids))
            result.rewards[start + best] += 0.5
            given += 1
        start += len(group)
    result.metrics["bonus_given"] = given
'''
TOY_METHOD = "method: bonus-shortest\nstage: bonus_shortest\nstage_module: toy_stages\n"


@pytest.fixture
def toy(tmp_path):
    (tmp_path / "toy_stages.py").write_text(textwrap.dedent(TOY_MODULE))
    (tmp_path / "bonus-shortest.yaml").write_text(TOY_METHOD)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
           "RAY_DEDUP_LOGS": "0"}
    return tmp_path, env


def run(cmd: list[str], env: dict, log: Path) -> None:
    with log.open("w") as out:
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, timeout=900, check=False)
    assert proc.returncode == 0, f"{' '.join(cmd)} exited {proc.returncode}:\n{log.read_text()[-6000:]}"


def metric_rows(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [r for r in rows if "val_accuracy" not in r or "reward_mean" in r]


def assert_bonus_trained(rows: list[dict], rollouts_per_step: int) -> None:
    """The rewards trained on are the outcome plus the toy's bonus: exactly 0.5 per group given one."""
    assert rows
    for r in rows:
        assert r["reward_mean"] == pytest.approx(r["accuracy"] + 0.5 * r["bonus_given"] / rollouts_per_step)
    assert sum(r["bonus_given"] for r in rows) > 0  # the warm start solves some problems


def test_a_toy_stage_trains_on_the_local_engine(toy):
    tmp, env = toy
    run_dir = tmp / "local"
    run([*CLI, "train", "--method", str(tmp / "bonus-shortest.yaml"), "--steps", "2", "--run-dir", str(run_dir),
         "train.batch_size=4", "rollout.n=4", "eval.every=0"], env, tmp / "local.log")
    rows = metric_rows(run_dir)
    assert [r["step"] for r in rows] == [1, 2] and rows[0]["method"] == "bonus-shortest"
    assert_bonus_trained(rows, 4 * 4)


def test_a_toy_stage_trains_through_verls_fit(toy):
    pytest.importorskip("verl", reason="verl is installed by the test command (pip install -e .[verl])")
    from scope_bench.synthetic.model import warm_start_model

    warm_start_model()  # built (or found cached) before the run's time limit starts
    tmp, env = toy
    run_dir = tmp / "verl"
    run([*CLI, "train", "--backend", "verl", "--device", "cpu", "--method", str(tmp / "bonus-shortest.yaml"),
         "--steps", "1", "--run-dir", str(run_dir), f"trainer.rollout_data_dir={run_dir / 'rollouts'}",
         "trainer.test_freq=-1"], env, tmp / "verl.log")
    rows = metric_rows(run_dir)
    assert [r["step"] for r in rows] == [1]
    assert_bonus_trained(rows, 4 * 8)  # config/device/cpu.yaml: 4 prompts x 8 rollouts
    dumped = [json.loads(line) for line in (run_dir / "rollouts" / "1.jsonl").read_text().splitlines()]
    assert sum(row["score"] == 1.5 for row in dumped) == rows[0]["bonus_given"]  # the reward verl trained on


def test_registry_refuses_a_second_stage_under_a_taken_name():
    with pytest.raises(ValueError, match="already registered"):
        register_stage("scope")(lambda groups, ctx, result: None)
    assert STAGES["scope"].offpolicy


def test_unknown_stage_and_module_are_named():
    with pytest.raises(ValueError, match="stage must be one of none, scope, prm_reward, luffy"):
        get_stage("dpo")
    with pytest.raises(ValueError, match="stage_module 'no_such_module_xyz' cannot be imported"):
        get_stage("dpo", "no_such_module_xyz")
    with pytest.raises(ValueError, match="stage must be one of"):
        load_train_config("grpo", ["stage=dpo"])


@pytest.mark.parametrize("method, overrides, prm, refiner", [
    ("grpo", ["metrics.near_miss=false"], False, False),
    ("grpo", [], True, False),  # near-miss metrics score failures with the PRM
    ("scope", ["metrics.near_miss=false"], True, True),
    ("replace", ["metrics.near_miss=false"], False, True),
    ("prm-reward", ["metrics.near_miss=false"], True, False),
    ("luffy", ["metrics.near_miss=false"], False, True),
    ("sft+rl", ["metrics.near_miss=false"], False, True),
])
def test_what_a_method_needs_comes_from_its_stage(method, overrides, prm, refiner):
    cfg = load_train_config(method, overrides)
    assert (needs_prm(cfg), needs_refiner(cfg)) == (prm, refiner)


def test_the_shared_metrics_come_from_the_stage_run():
    """reward_mean is over the rewards trained on, accuracy over the outcomes, length over sampled tokens."""
    from scope_bench.core import Rollout

    groups = [[Rollout("q", "1", "a", [1, 2, 3], [(0, 1)] * 3, 0.0), Rollout("q", "1", "b", [2], [(0, 1)], 1.0)]]
    result = apply_stage("prm_reward", groups, prm=_ConstantPRM(0.4), prm_reward={"weight": 0.5})
    assert result.rewards == pytest.approx([0.2, 1.2])
    assert result.metrics["reward_mean"] == pytest.approx(0.7) and result.metrics["accuracy"] == 0.5
    assert result.metrics["response_length"] == 2.0


class _ConstantPRM:
    def __init__(self, p):
        self.p = p

    def score(self, questions, steps):
        return [[self.p] * len(s) for s in steps]
