"""A refiner that fails, times out, answers wrong, rewrites the prefix or raises never stops training:
the group stays as sampled and the failure is counted in the metrics."""

from __future__ import annotations

import json

import pytest
import torch

from scope_bench.engines.local import load_train_config, train


@pytest.fixture(scope="module")
def tiny():
    from scope_bench.synthetic import tiny_model

    torch.set_num_threads(1)
    return str(tiny_model())


@pytest.fixture
def near_misses(monkeypatch):
    """A policy that writes near misses: every step right except the last operation (and the box), as
    real tokens with their offsets, so every group is gated and has a verified prefix to keep."""
    import re

    from scope_bench.core.steps import decode_with_offsets
    from scope_bench.engines.local import trainer
    from scope_bench.engines.local.policy import Sample
    from scope_bench.synthetic import parse_question
    from scope_bench.synthetic.task import answer_text, solution_steps

    def generate(model, tokenizer, prompt_ids, *, n, **kwargs):
        groups = []
        for ids in prompt_ids:
            question = re.search(r"(Start with .*?)\n", tokenizer.decode(ids)).group(1)
            start, ops = parse_question(question)
            steps = solution_steps(start, ops)
            value = int(steps[-2].split("= ")[1]) + 1
            steps[-2] = steps[-2].rsplit("= ", 1)[0] + f"= {value}"
            steps[-1] = answer_text(value)
            ids = tokenizer("\n\n".join(steps), add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
            text, offsets = decode_with_offsets(tokenizer, ids)
            groups.append([Sample(ids, text, offsets, True) for _ in range(n)])
        return groups

    monkeypatch.setattr(trainer, "generate", generate)


def run(tiny, run_dir, method, *extra) -> list[dict]:
    cfg = load_train_config(method, [
        f"model.path={tiny}", f"run_dir={run_dir}", "threads=1", "train.steps=2", "train.batch_size=3",
        "rollout.n=4", "rollout.max_new_tokens=20", "data.n_train=12", "data.val=null", *extra])
    out = train(cfg)
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("failure, reason", [
    ("error", "refiner_error:error"), ("timeout", "refiner_error:timeout"), ("wrong", "suffix_wrong"),
    ("rewrite", "prefix_rewritten"), ("raise", "refiner_error:exception"),
])
def test_failing_refiner_leaves_groups_as_sampled(tiny, tmp_path, near_misses, failure, reason):
    # every rollout is a near miss: all 3 groups are gated, and every refiner call fails
    metrics = run(tiny, tmp_path / failure, "scope", f"refiner.failure={failure}")
    assert len(metrics) == 2
    for m in metrics:
        assert m["groups_gated"] == 3 and m["groups_rectified"] == 0
        assert m["groups_skipped"] == m["refiner_failures"] == m[f"skip/{reason}"] == 3
        assert m["reward_mean"] == m["accuracy"] == 0.0  # nothing replaced: the rewards as sampled
        assert m["keep_ratio"] is None and m["loss"] == 0.0
        assert m["near_miss@1"] == 0.0 and m["near_miss@2"] == 1.0  # last op and box wrong: 2 steps


def test_scope_salvages_near_misses(tiny, tmp_path, near_misses):
    metrics = run(tiny, tmp_path / "ok", "scope")
    for m in metrics:
        assert m["groups_rectified"] == 3 and m["refiner_failures"] == 0
        assert 0.3 < m["keep_ratio"] < 1.0  # the verified steps are kept, the rest rewritten
        assert m["reward_mean"] == pytest.approx(1 / 4)


def test_partly_failing_refiner_is_counted(tiny, tmp_path):
    metrics = run(tiny, tmp_path / "half", "scope", "refiner.failure=error", "refiner.failure_rate=0.5",
                  "train.batch_size=8")
    assert sum(m["refiner_failures"] for m in metrics) > 0 and sum(m["groups_rectified"] for m in metrics) > 0
    for m in metrics:
        assert m["groups_rectified"] + m["refiner_failures"] == m["groups_gated"] == 8
        assert m["reward_mean"] == pytest.approx(m["groups_rectified"] / (8 * 4))


def test_sft_survives_a_failing_refiner(tiny, tmp_path):
    metrics = run(tiny, tmp_path / "sft", "sft", "refiner.failure=timeout")
    assert [m["refiner_failures"] for m in metrics] == [3, 3]
    assert all(m["loss"] is None for m in metrics)
