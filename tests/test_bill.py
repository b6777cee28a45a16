"""The refiner's and the PRM's bill (engines/bill.py, docs/cost.md): a SCOPE run of `scope-bench train`
against `scope-bench serve` (both as processes, over loopback HTTP) logs tokens, latency, the stage's
share of the step and the cost on every step; a budget of a few hundred tokens stops rectification
after the first step and the run finishes; `scope-bench report` shows the bill per method."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

_SCRIPT = Path(sys.executable).with_name("scope-bench")
CLI = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "scope_bench.cli"]
REASONING = 200  # think-block tokens the server puts before each answer, and bills
PRICES = {"refiner.price_in_usd_per_m": 0.55, "refiner.price_out_usd_per_m": 2.19, "prm.price_in_usd_per_m": 0.1}
BILL_KEYS = ("refiner/prompt_tokens", "refiner/completion_tokens", "prm/prompt_tokens", "refiner/latency_p50_s",
             "refiner/latency_p95_s", "time/stage_share", "cost/usd", "budget/skipped_groups")


@pytest.fixture(scope="module")
def serve():
    proc = subprocess.Popen([*CLI, "serve", "--port", "0", "--reasoning-tokens", str(REASONING)],
                            stdout=subprocess.PIPE, text=True)
    url = re.search(r"http://\S+", proc.stdout.readline())
    assert url, "no URL line from scope-bench serve"
    yield url.group().rstrip("/")
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def budget_run(serve, tmp_path_factory):
    """4 steps of SCOPE on the tiny random-init model (every rollout fails: both groups of each step are
    gated), with the PRM and the refiner served, prices set and a 500-token refiner budget."""
    from scope_bench.synthetic import tiny_model

    run_dir = tmp_path_factory.mktemp("bill") / "scope"
    cmd = [*CLI, "train", "--method", "scope", "--run-dir", str(run_dir), "--steps", "4",
           "--refiner-url", f"{serve}/v1", "--refiner", "synthetic-refiner", f"model.path={tiny_model()}",
           "refiner.api_key_env=null", "prm.kind=vllm", f"prm.url={serve}", "threads=1", "train.batch_size=2",
           "rollout.n=4", "rollout.max_new_tokens=16", "data.n_train=8", "data.val=null", "checkpoint.every=0",
           "refiner.budget_tokens=500", *(f"{k}={v}" for k, v in PRICES.items())]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return run_dir, rows, proc.stdout + proc.stderr


def test_every_step_is_billed_and_the_budget_stops_rectification(budget_run):
    run_dir, rows, output = budget_run
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert all(set(BILL_KEYS) <= set(r) for r in rows)
    first, *later = rows
    # step 1: both gated groups asked the refiner; the server's usage is billed, think block included
    # (the continuation alone is a few dozen tokens: a tokenizer count of the text would be far less)
    assert first["refiner/calls"] == 2 and first["groups_rectified"] > 0
    assert first["refiner/completion_tokens"] >= 2 * REASONING and first["refiner/prompt_tokens"] > 100
    assert 0 < first["refiner/latency_p50_s"] <= first["refiner/latency_p95_s"]
    assert 0 < first["time/stage_share"] < 1 and first["budget/skipped_groups"] == 0
    # its ~800 tokens spent the 500-token budget: no later step asks the refiner, each counts its groups
    for r in later:
        assert r["refiner/calls"] == r["refiner/prompt_tokens"] == r["refiner/completion_tokens"] == 0
        assert r["groups_rectified"] == 0 and r["budget/skipped_groups"] == 2
        assert r["refiner/latency_p50_s"] is None and r["time/stage_share"] == 0
        assert r["prm/prompt_tokens"] > 0  # near-miss scoring goes on (every method scores its failures)
    # the cost is the run's so far, from the logged tokens and the price table
    usd = 0.0
    for r in rows:
        usd += (r["refiner/prompt_tokens"] * 0.55 + r["refiner/completion_tokens"] * 2.19
                + r["prm/prompt_tokens"] * 0.1) / 1e6
        assert r["cost/usd"] == pytest.approx(usd)
    summary = json.loads((run_dir / "bill.json").read_text())
    assert summary["budget_spent_at_step"] == 1 and summary["budget/skipped_groups"] == 6
    assert summary["refiner/completion_tokens"] == first["refiner/completion_tokens"]
    assert "refiner budget (500 tokens) spent at step 1: rectification skipped on steps 2-4 (6 groups)" in output
    assert re.search(r"rect=\d+, fail=0, cost=\$0\.\d+, budget=spent@1", output)  # the progress bar


def test_report_shows_the_bill_beside_the_training_table(budget_run, tmp_path):
    run_dir, rows, _ = budget_run
    from scope_bench.cli import main

    assert main(["report", str(run_dir), "--out", str(tmp_path / "report"), "--no-plots"]) == 0
    report = (tmp_path / "report" / "report.md").read_text()
    assert report.index("Training runs: last logged values") < report.index("Refiner and PRM bill")
    bill = report[report.index("Refiner and PRM bill"):]
    cells = next(row for row in bill.splitlines() if row.startswith("| scope |")).strip("| ").split(" | ")
    totals = [str(sum(r[key] for r in rows)) for key in ("refiner/prompt_tokens", "refiner/completion_tokens",
                                                          "prm/prompt_tokens")]
    assert cells[1:6] == ["4", *totals, f"{rows[-1]['cost/usd']:.4f}"] and cells[-1] == "1"  # budget: step 1
