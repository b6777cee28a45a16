"""`scope-bench data distill` against `scope-bench serve` (a weaker teacher: 30% of its solutions slip),
both as processes: an interrupted run resumes without asking again, the SFT parquet loads with verl's
own MultiTurnSFTDataset, and a local LUFFY run with `luffy.source=data` trains on the `target` column."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from scope_bench.grading import math_reward
from scope_bench.prompts import chat_messages
from scope_bench.synthetic import generate_split

_SCRIPT = Path(sys.executable).with_name("scope-bench")
CLI = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "scope_bench.cli"]
N, TRIES = 12, 2


@pytest.fixture(scope="module")
def serve():
    proc = subprocess.Popen([*CLI, "serve", "--port", "0", "--refiner-error-rate", "0.3"], stdout=subprocess.PIPE,
                            text=True)
    url = re.search(r"http://\S+", proc.stdout.readline())
    assert url, "no URL line from scope-bench serve"
    yield url.group().rstrip("/")
    proc.terminate()
    proc.wait(timeout=30)


def distill(serve: str, out: Path, *extra: str) -> str:
    cmd = [*CLI, "data", "distill", "--url", f"{serve}/v1", "--model", "synthetic-refiner", "--n", str(N),
           "--tries", str(TRIES), "--concurrency", "4", "--out", str(out), *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def attempts(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "attempts.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def distilled(serve, tmp_path_factory):
    """A run cut short (the first 5 prompts, then a line torn as a kill mid-write leaves it), resumed
    over all 12, then run a third time."""
    out = tmp_path_factory.mktemp("distill")
    distill(serve, out, "--limit", "5")
    first = (out / "attempts.jsonl").read_text()
    with (out / "attempts.jsonl").open("a") as f:
        f.write('{"index": 7, "question": "Start wi')
    stdout = distill(serve, out)
    second = (out / "attempts.jsonl").read_text()
    distill(serve, out)
    return out, first, second, stdout


def test_a_resumed_run_never_asks_a_prompt_again(distilled):
    out, first, second, _ = distilled
    assert {a["index"] for a in map(json.loads, first.splitlines())} <= set(range(5))
    assert second.startswith(first)  # the torn line was dropped and the first run's attempts kept as they were
    assert (out / "attempts.jsonl").read_text() == second  # a finished folder: the third run asked nothing
    done = attempts(out)
    assert all(a["answered"] and a["error"] is None for a in done)  # the server answered every call
    per_prompt = Counter(a["index"] for a in done)
    assert set(per_prompt) == set(range(N))
    for i, n in per_prompt.items():  # one try when the first is correct, else every try; never one more
        tries = [a["correct"] for a in done if a["index"] == i]
        assert tries == ([True] if tries[0] else [False] * (TRIES - 1) + [tries[-1]]), (i, tries)
        assert n <= TRIES


def test_each_attempt_is_graded_against_the_problem(distilled):
    out, *_ = distilled
    answers = {r["question"]: r["answer"] for r in generate_split("train", N)}
    done = attempts(out)
    for a in done:
        assert a["correct"] == (math_reward(a["solution"], answers[a["question"]]) == 1.0)
    assert 0 < sum(a["correct"] for a in done) < N  # the weaker teacher slipped on some, not all
    summary = json.loads((out / "distill.json").read_text())
    kept = {a["index"] for a in done if a["correct"]}
    assert summary["prompts"] == N and summary["tries"] == TRIES and summary["attempts"] == len(done)
    assert summary["unfinished"] == 0 and summary["errors"] == {}
    assert summary["kept"] == len(kept) and summary["kept_fraction"] == pytest.approx(len(kept) / N)
    assert summary["prompt_tokens"] == sum(a["usage"][0] for a in done) > 0
    assert summary["completion_tokens"] == sum(a["usage"][1] for a in done) > 0


def test_sft_parquet_loads_with_verls_multiturn_dataset(distilled):
    pytest.importorskip("verl", reason="verl is installed by the test command (pip install -e .[verl])")
    from transformers import AutoTokenizer
    from verl.utils.dataset.multiturn_sft_dataset import MultiTurnSFTDataset

    from scope_bench.synthetic import tiny_model

    out, *_ = distilled
    answers = {r["question"]: r["answer"] for r in generate_split("train", N)}
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model()))
    data = MultiTurnSFTDataset(str(out / "sft.parquet"), tokenizer,
                               {"messages_key": "messages", "max_length": 512, "truncation": "error"})
    kept = [a for a in attempts(out) if a["correct"]]
    assert len(data) == len(kept) > 0
    for j in range(len(data)):
        messages = data.messages[j]
        question = messages[1]["content"].split("\n")[0]
        assert messages[:-1] == chat_messages(question)  # the RL prompts' template
        assert messages[-1]["role"] == "assistant" and math_reward(messages[-1]["content"], answers[question]) == 1.0
        item = data[j]  # the loss covers the assistant's turn and nothing else
        trained = tokenizer.decode(item["input_ids"][item["loss_mask"].bool()])
        assert trained.startswith(messages[-1]["content"]) and "Start with" not in trained


def test_luffy_trains_on_the_target_column(distilled, tmp_path):
    import torch

    from scope_bench.engines.local import load_train_config, train
    from scope_bench.engines.local.data import batch_indices
    from scope_bench.synthetic import tiny_model

    out, _, _, stdout = distilled
    assert "column `target`" in stdout
    rows = pd.read_parquet(out / "train.parquet")
    assert len(rows) == N and set(rows["target"].map(bool)) == {True, False}  # "" where nothing was kept
    torch.set_num_threads(1)
    cfg = load_train_config("luffy", [
        f"model.path={tiny_model()}", f"run_dir={tmp_path / 'luffy'}", "threads=1", "train.steps=1",
        "train.batch_size=6", "rollout.n=2", "rollout.max_new_tokens=8", "data.val=null", "metrics.near_miss=false",
        f"data.train={out / 'train.parquet'}", "luffy.source=data"])
    run_dir = train(cfg)
    (metrics,) = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    batch = rows.iloc[batch_indices(N, 6, 1, cfg.seed)]
    with_target = int(batch["target"].map(bool).sum())
    assert metrics["groups_rectified"] == with_target and metrics["refiner_failures"] == 6 - with_target


def test_a_prepared_parquet_is_sent_as_its_prompt_column(serve, tmp_path):
    """The paper-scale input: `data prepare`'s parquet; its rows come back whole, with the target."""
    from scope_bench.cli import main

    source = tmp_path / "qa.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in generate_split("train", 3)))
    assert main(["data", "prepare", "--dataset", str(source), "--data-source", "synthetic",
                 "--out", str(tmp_path / "prepared")]) == 0
    assert main(["data", "distill", "--data", str(tmp_path / "prepared" / "train.parquet"), "--url", f"{serve}/v1",
                 "--model", "synthetic-refiner", "--tries", "1", "--out", str(tmp_path / "out")]) == 0
    prepared = pd.read_parquet(tmp_path / "prepared" / "train.parquet")
    rows = pd.read_parquet(tmp_path / "out" / "train.parquet")
    assert list(rows.columns) == [*prepared.columns, "question", "answer", "target"]
    assert list(rows["question"]) == [r["question"] for r in generate_split("train", 3)]  # bare, no template
    assert [g["ground_truth"] for g in rows["reward_model"]] == list(rows["answer"])
    for sft in pd.read_parquet(tmp_path / "out" / "sft.parquet").itertuples():
        assert [dict(m) for m in sft.messages[:-1]] == chat_messages(sft.question)


def test_a_call_without_reply_is_not_a_try(tmp_path, capsys):
    """A 500 (3 of the 6 prompts, the same ones every time) costs no try: the prompt stays open for a
    rerun, and the summary says how many are."""
    from scope_bench.cli import main
    from scope_bench.engines.serve import SyntheticServer

    with SyntheticServer(refiner_failure="error", refiner_failure_rate=0.3) as server:
        args = ["data", "distill", "--url", server.refiner_url, "--model", "m", "--n", "6", "--tries", "2",
                "--retries", "0", "--out", str(tmp_path)]
        assert main(args) == 0
        failed = server.counts["failure/error"]
        assert 0 < failed < 2 * 6 and "rerun the same command" in capsys.readouterr().err
        summary = json.loads((tmp_path / "distill.json").read_text())
        assert summary["errors"] == {"http_5xx": failed} and summary["unfinished"] == failed // 2
        assert main(args) == 0  # the rerun asks the open prompts again, and only them
        assert server.counts["failure/error"] == 2 * failed and server.counts["chat"] == summary["attempts"] + 2 * failed


@pytest.mark.parametrize("make, match", [
    (lambda d: None, "does not exist"),
    (lambda d: pd.DataFrame({"prompt": [chat_messages("Start with 1. Add 2.")]}).to_parquet(d), "row 0: no answer"),
    (lambda d: pd.DataFrame({"text": ["Start with 1. Add 2."], "answer": ["3"]}).to_parquet(d), "row 0: no question"),
])
def test_bad_input_is_named(make, match, tmp_path, capsys):
    from scope_bench.cli import main

    data = tmp_path / "train.parquet"
    make(data)
    code = main(["data", "distill", "--data", str(data), "--url", "http://127.0.0.1:9/v1", "--model", "m",
                 "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and str(data) in err and match in err
