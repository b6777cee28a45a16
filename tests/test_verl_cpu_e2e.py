"""`scope-bench train --backend verl --device cpu` end to end: the command a user runs, as a process,
through verl's own `RayPPOTrainer.fit` (Ray actors, an FSDP2 worker, the async agent loop with the HF
rollout, the checkpoint manager), the warm-started tiny model, and the synthetic PRM and refiner
behind their HTTP APIs on loopback (`scope-bench serve`), reached by the real clients.

What a user relies on is read back from the run's own files: `metrics.jsonl` (stage metrics, the
worker's off-policy token share), verl's checkpoints, and verl's rollout dump
(`trainer.rollout_data_dir`, with the rows the stage rewrote). About 1.5 minutes per run on 2 cores.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

pytest.importorskip("verl", reason="verl is installed by the test command (pip install -e .[verl])")

from scope_bench.core.advantages import grpo_advantages
from scope_bench.grading import math_reward

_SCRIPT = Path(sys.executable).with_name("scope-bench")  # the console script a user runs
CLI = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "scope_bench.cli"]
TIMEOUT_S = 900


def train(run_dir: Path, method: str, steps: int, *extra: str) -> list[dict]:
    cmd = [*CLI, "train", "--backend", "verl", "--device", "cpu", "--method", method, "--steps", str(steps),
           "--run-dir", str(run_dir), *extra]
    log = run_dir.parent / f"{run_dir.name}-{len(list(run_dir.parent.glob(run_dir.name + '-*.log')))}.log"
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, timeout=TIMEOUT_S, check=False,
                              env={**os.environ, "RAY_DEDUP_LOGS": "0"})
    assert proc.returncode == 0, f"{' '.join(cmd)} exited {proc.returncode}:\n{log.read_text()[-6000:]}"
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def step_rows(rows: list[dict]) -> list[dict]:
    return [r for r in rows if "val_accuracy" not in r]


def dumped(run_dir: Path, step: int) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "rollouts" / f"{step}.jsonl").read_text().splitlines()]


def assert_group_advantages_are_grpo(rows: list[dict]) -> None:
    """Each row's advantage is GRPO's over its group's final scores (after the stage's rewrite)."""
    expected = grpo_advantages([r["score"] for r in rows], [r["uid"] for r in rows])
    for row, adv in zip(rows, expected):
        assert row["advantage"] == pytest.approx(float(adv), abs=1e-4)


@pytest.fixture(scope="module", autouse=True)
def warm_start():
    """The embedded default's model, built (or found cached) before any run's time limit starts."""
    from scope_bench.synthetic.model import warm_start_model

    return warm_start_model()


@pytest.fixture(scope="module")
def serve():
    """`scope-bench serve` as a user starts it, with a refiner that returns garbage for 40% of the
    requests (a 200 reply that is not JSON): over ~10 calls both outcomes occur (p > 0.99)."""
    proc = subprocess.Popen([*CLI, "serve", "--port", "0", "--refiner-failure", "garbage",
                             "--refiner-failure-rate", "0.4"], stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    url = re.search(r"http://\S+", line)
    assert url, f"no URL in {line!r}"
    yield url.group().rstrip("/")
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def scope_run(tmp_path_factory, serve):
    run_dir = tmp_path_factory.mktemp("verl") / "scope"
    rows = train(run_dir, "scope", 3, "--prm-url", serve, "--refiner-url", f"{serve}/v1",
                 "--refiner", "synthetic-refiner", "refiner.api_key_env=null",  # the loopback server takes no key
                 f"trainer.rollout_data_dir={run_dir / 'rollouts'}")
    return run_dir, rows


def test_scope_rewrites_rows_and_the_mask_reaches_the_worker(scope_run):
    run_dir, rows = scope_run
    steps = step_rows(rows)
    assert [r["step"] for r in steps] == [1, 2, 3]
    assert sum(r["groups_rectified"] for r in steps) > 0
    for r in steps:  # the worker's share of off-policy tokens is exactly what the driver sent
        assert r["offpolicy_token_frac"] == pytest.approx(r["offpolicy_token_frac_sent"], abs=1e-6)
        assert r["groups_rectified"] == 0 or 0 <= r["keep_ratio_steps"] <= 1  # no rewritten row: no ratio
        for key in ("reward_mean", "accuracy", "groups_gated", "near_miss@1", "entropy", "time/stage"):
            assert key in r
    assert any(r["offpolicy_token_frac"] > 0 for r in steps)
    # the bill (docs/cost.md), on every step: the served refiner's and PRM's usage, latency, stage share
    bill = ("refiner/prompt_tokens", "refiner/completion_tokens", "prm/prompt_tokens", "refiner/latency_p50_s",
            "refiner/latency_p95_s", "time/stage_share", "cost/usd", "budget/skipped_groups")
    assert all(set(bill) <= set(r) and 0 < r["time/stage_share"] < 1 for r in steps)
    assert all(r["cost/usd"] is None and r["budget/skipped_groups"] == 0 for r in steps)  # no prices, no budget
    assert sum(r["refiner/completion_tokens"] for r in steps) > 0 and sum(r["prm/prompt_tokens"] for r in steps) > 0
    assert any(r["refiner/latency_p50_s"] is not None for r in steps)
    summary = json.loads((run_dir / "bill.json").read_text())
    assert summary["refiner/prompt_tokens"] == sum(r["refiner/prompt_tokens"] for r in steps) > 0
    assert sum(r["refiner_failures"] for r in steps) > 0  # garbage replies counted, training went on
    assert any("val_accuracy" in r for r in rows)
    assert (run_dir / "checkpoints" / "global_step_3" / "actor").is_dir()
    # verl keeps the shards of 2 checkpoints (max_actor_ckpt_to_keep), not of every one
    kept = sorted(p.parent.name for p in (run_dir / "checkpoints").glob("global_step_*/actor"))
    assert kept == ["global_step_2", "global_step_3"]
    # verl's rollout-vs-trainer log-prob diagnostics, over the policy's own tokens, on every step
    for r in steps:
        assert r["training/rollout_probs_diff_valid"] == 1 and r["training/rollout_probs_diff_max"] >= 0
        assert abs(r["training/rollout_probs_diff_mean"]) < 0.05  # HF rollout and FSDP actor, both float32

    kept_prefix = 0
    for step in (1, 2, 3):
        batch = dumped(run_dir, step)
        assert {row["weights_step"] for row in batch} == {step - 1}  # the actor's weights reached the rollout
        groups = defaultdict(list)
        for row in batch:
            groups[row["uid"]].append(row)
        for members in groups.values():
            assert_group_advantages_are_grpo(members)
        for row in batch:
            if row["offpolicy_tokens"] == 0:
                continue
            assert row["offpolicy_is_suffix"]  # the mask covers the response's tail, nothing else
            assert row["score"] == 1.0 and math_reward(row["suffix"], row["gts"]) == 1.0
            assert row["output"].replace(" ", "") == (row["prefix"] + row["suffix"]).replace(" ", "")
            kept_prefix += bool(row["prefix"].strip())
    assert kept_prefix > 0  # a rewritten row kept a non-empty policy prefix


def _synthetic_eval_file(path: Path, n: int = 4) -> Path:
    from scope_bench.synthetic.task import generate_split

    rows = [{"id": f"p{i}", "question": p["question"], "answer": p["answer"]}
            for i, p in enumerate(generate_split("val", n, 0))]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def evaluate_cli(ckpt, out: Path, data: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [*CLI, "eval", "--ckpt", str(ckpt), "--tasks", "synthetic", "--data", f"synthetic={data}", "--n", "1",
           "--temperature", "0", "--max-tokens", "24", "--device", "cpu", "--grading-workers", "1",
           "--out", str(out), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)


def test_eval_reads_the_verl_checkpoint(scope_run, tmp_path):
    """`scope-bench eval --ckpt` on what the run wrote: a run folder (its latest step), merged once by
    verl's model merger into global_step_3/merged_hf; then the step's actor/ with --dp 2 reads it."""
    run_dir, _ = scope_run
    data = _synthetic_eval_file(tmp_path / "synthetic.jsonl")
    first = evaluate_cli(run_dir, tmp_path / "one", data)
    assert first.returncode == 0, first.stderr[-4000:]
    merged = run_dir / "checkpoints" / "global_step_3" / "merged_hf"
    assert "merging its FSDP shards" in first.stderr and (merged / "config.json").is_file()
    summary = json.loads((tmp_path / "one" / "summary.json").read_text())
    assert summary["label"] == "scope-global_step_3" and summary["checkpoint"] == str(merged)

    second = evaluate_cli(run_dir / "checkpoints" / "global_step_3" / "actor", tmp_path / "dp", data, "--dp", "2")
    assert second.returncode == 0, second.stderr[-4000:]
    assert "using the merged model" in second.stderr and "merging" not in second.stderr
    read = [sorted((r["problem_id"], r["response"]) for r in map(json.loads, (out / "results.jsonl").open()))
            for out in (tmp_path / "one", tmp_path / "dp")]
    assert read[0] == read[1] and len(read[0]) == 4  # two replicas, the same greedy answers as one process

    (tmp_path / "empty").mkdir()
    bad = evaluate_cli(tmp_path / "empty", tmp_path / "bad", data)
    assert bad.returncode == 2 and "nor a verl checkpoint" in bad.stderr


def test_resume_continues_from_the_checkpoint(scope_run):
    """The acceptance command (embedded default: no model, data or services named) resuming the run above."""
    run_dir, _ = scope_run
    rows = step_rows(train(run_dir, "scope", 4, "--resume", f"trainer.rollout_data_dir={run_dir / 'rollouts'}"))
    assert [r["step"] for r in rows] == [1, 2, 3, 4]  # step 4 ran once; steps 1-3 were not redone
    assert (run_dir / "checkpoints" / "global_step_4" / "actor").is_dir()
    assert {row["weights_step"] for row in dumped(run_dir, 4)} == {3}  # generated with the resumed weights
    assert rows[-1]["offpolicy_token_frac"] == pytest.approx(rows[-1]["offpolicy_token_frac_sent"], abs=1e-6)


@pytest.mark.parametrize("method, workers", [("grpo", 2), ("replace", 1), ("prm-reward", 1), ("luffy", 1),
                                             ("prm-step-reward", 1)])
def test_baselines_train_through_fit(tmp_path, method, workers):
    """grpo runs on two FSDP workers (gloo collectives, sharded parameters, two rollout replicas)."""
    run_dir = tmp_path / method
    rows = step_rows(train(run_dir, method, 2, "--gpus-per-node", str(workers),
                           f"trainer.rollout_data_dir={run_dir / 'rollouts'}"))
    assert [r["step"] for r in rows] == [1, 2]
    assert (run_dir / "checkpoints" / "global_step_2" / "actor").is_dir()
    batch = dumped(run_dir, 2)
    for r in rows:
        assert r["offpolicy_token_frac"] == pytest.approx(r.get("offpolicy_token_frac_sent", 0.0), abs=1e-6)
    if method == "grpo":
        assert all(r["groups_rectified"] == 0 and r["offpolicy_token_frac"] == 0 for r in rows)
        assert all(r["near_miss@1"] is not None for r in rows)  # failures scored by the PRM server
        assert {row["score"] for row in batch} <= {0.0, 1.0}
    if method == "replace":  # whole refiner solutions: every token of a rewritten row is off-policy
        assert sum(r["groups_rectified"] for r in rows) > 0
        rewritten = [row for row in batch if row["offpolicy_tokens"] > 0]
        assert all(row["offpolicy_tokens"] == row["response_tokens"] and not row["prefix"] for row in rewritten)
    if method == "luffy":  # every group (no gate) gets one whole teacher solution, trained as off-policy
        assert all(r["groups_gated"] == r["groups_total"] for r in rows)
        assert sum(r["groups_rectified"] for r in rows) > 0
        rewritten = [row for row in batch if row["offpolicy_tokens"] > 0]
        assert len({row["uid"] for row in rewritten}) == len(rewritten)  # at most one per group
        assert all(row["offpolicy_tokens"] == row["response_tokens"] and row["score"] == 1.0 for row in rewritten)
    if method == "prm-reward":  # outcome + 0.5 * min step score: not only 0 and 1
        assert any(row["score"] not in (0.0, 1.0) for row in batch)
        assert all(r["offpolicy_token_frac"] == 0 for r in rows)
    groups = defaultdict(list)
    for row in batch:
        groups[row["uid"]].append(row)
    if method == "prm-step-reward":  # dense: the outcome stays the score, 0.5 * p_j at each step's end
        assert {row["score"] for row in batch} <= {0.0, 1.0} and all(r["loss"] is not None for r in rows)
        for members in groups.values():
            assert_group_advantages_are_dense(members)
        assert any(len({round(a, 4) for a in row["step_advantages"]}) > 1 for row in batch)
        return
    for members in groups.values():
        assert_group_advantages_are_grpo(members)


def assert_group_advantages_are_dense(rows: list[dict]) -> None:
    """Each row's advantages, at its first token and at each step's last, are the local trainer's process
    advantages (`core.advantages.process_advantages`) recomputed from the dumped scores and step rewards."""
    from scope_bench.core.advantages import process_advantages

    steps = {i: [tuple(s) for s in row["step_rewards"]] for i, row in enumerate(rows)}
    expected = process_advantages([row["score"] for row in rows], steps, [row["uid"] for row in rows],
                                  [row["response_tokens"] for row in rows])
    for i, row in enumerate(rows):
        assert all(0 < end <= row["response_tokens"] and 0 <= r <= 0.5 for end, r in steps[i])
        assert row["advantage"] == pytest.approx(expected[i][0], abs=1e-4)
        assert row["step_advantages"] == pytest.approx([expected[i][end - 1] for end, _ in steps[i]], abs=1e-4)

