"""`scope-bench serve` with the real clients over loopback HTTP: the CLI as a user starts it, scores and
continuations equal to the in-process synthetic PRM and refiner, injected failures as the client
counts them, vLLM's context-length rules on /pooling, and a reasoning refiner against `max_tokens`
through the SCOPE stage."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from scope_bench.core import ScopeConfig, rectify_groups
from scope_bench.core.interfaces import RefineRequest
from scope_bench.core.rectify import Rollout, stage_metrics
from scope_bench.engines.prm import VLLMPoolingPRM, prm_messages
from scope_bench.engines.refiner import OpenAIRefiner
from scope_bench.engines.serve import SyntheticServer, chat_tokens
from scope_bench.grading import math_reward
from scope_bench.synthetic import ProgrammaticRefiner, RuleBasedPRM, split_problems
from scope_bench.synthetic.task import apply_op, solution_steps

SCOPE_BENCH = Path(sys.executable).with_name("scope-bench")


def _steps(problem, wrong_at: int | None = None) -> list[str]:
    """The problem's solution steps; with `wrong_at`, that step's result is off by one and the slip
    is carried forward to a wrong answer (a near miss)."""
    ops = list(problem.ops)
    if wrong_at is None:
        return solution_steps(problem.start, ops)
    value = problem.values[wrong_at - 1] if wrong_at else problem.start
    op, x = ops[wrong_at]
    slipped = apply_op(value, op, x) + 1
    return (solution_steps(problem.start, ops[:wrong_at])[:-1] + [f"{value} {op} {x} = {slipped}"]
            + solution_steps(slipped, ops[wrong_at + 1:]))


def _requests(problems) -> list[RefineRequest]:
    """Continuation requests from an empty prefix and from the first step."""
    return [RefineRequest(p.question, prefix, p.answer)
            for p in problems for prefix in ("", _steps(p)[0] + "\n\n")]


def test_cli_serves_the_real_prm_and_refiner_clients():
    problems = split_problems("train", 12, seed=0)
    proc = subprocess.Popen([str(SCOPE_BENCH), "serve", "--port", "0", "--seed", "3", "--refiner-failure", "garbage",
                             "--refiner-failure-rate", "0.5"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        found = re.fullmatch(r"serving on (http://127\.0\.0\.1:\d+)\n", proc.stdout.readline())
        assert found, proc.stderr.read() if proc.poll() is not None else "no URL line"
        url = found.group(1)
        assert httpx.get(url + "/health").status_code == 200
        assert [m["id"] for m in httpx.get(url + "/v1/models").json()["data"]] == ["synthetic-prm", "synthetic-refiner"]

        questions = [p.question for p in problems] * 2
        steps = [_steps(p) for p in problems] + [_steps(p, wrong_at=1) for p in problems]
        scores = VLLMPoolingPRM(url + "/v1", "Qwen/Qwen2.5-Math-PRM-7B").score(questions, steps)
        assert scores == RuleBasedPRM().score(questions, steps)
        assert set(scores[0]) == {0.9} and scores[-1][:3] == [0.9, 0.1, 0.1]  # the slip is carried forward

        requests = _requests(problems)
        refiner = OpenAIRefiner(url + "/v1", "synthetic-refiner", retries=0, api_key_env="")
        results = refiner.refine(requests)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert proc.returncode == 0  # SIGTERM is a clean stop
    chooser = ProgrammaticRefiner(failure="error", failure_rate=0.5, seed=3)  # the in-process choice of failures
    failing = [chooser.refine([r])[0].error == "error" for r in requests]
    assert 0 < sum(failing) < len(requests)
    assert [r.error for r in results] == ["malformed" if f else None for f in failing]
    assert refiner.last_stats["error/malformed"] == sum(failing) and refiner.last_stats["ok"] == len(requests) - sum(failing)
    exact = ProgrammaticRefiner().refine(requests)
    for request, result, expected in zip(requests, results, exact):
        if result.ok:
            assert result.suffix == expected.suffix.strip()
            assert math_reward(request.prefix + result.suffix, request.ground_truth) == 1.0


@pytest.mark.parametrize("kind, error", [("error", "http_5xx"), ("timeout", "timeout"), ("wrong", None),
                                         ("rewrite", None)])
def test_injected_refiner_failures_as_the_client_sees_them(kind, error):
    (request,) = _requests(split_problems("train", 1, seed=1))[1:]
    with SyntheticServer(refiner_failure=kind, refiner_delay_s=10.0) as server:
        refiner = OpenAIRefiner(server.refiner_url, "m", retries=1, backoff_s=0.01, timeout_s=0.5, api_key_env="")
        (result,) = refiner.refine([request])
    assert result.error == error
    assert server.counts[f"failure/{kind}"] == refiner.last_stats["calls"] == (2 if error else 1)  # retried alike
    if kind == "wrong":
        assert math_reward(request.prefix + result.suffix, request.ground_truth) == 0.0
    if kind == "rewrite":
        assert result.suffix.startswith(request.prefix.strip())


def test_pooling_context_length_and_truncation_like_vllm():
    (problem,) = split_problems("train", 1, seed=0, difficulties=("hard",))
    steps = _steps(problem, wrong_at=3)  # 4 operations and the answer: [0.9, 0.9, 0.9, 0.1, 0.1]
    full = RuleBasedPRM().score([problem.question], [steps])[0]
    tokens, tags = chat_tokens(prm_messages(problem.question, steps))
    limit = tags[2] + 1  # room for the first three step tags
    short = steps[:2]
    assert len(chat_tokens(prm_messages(problem.question, short))[0]) <= limit
    with SyntheticServer(max_model_len=limit) as server:
        strict = VLLMPoolingPRM(server.url, "m", max_tokens=None, retries=3)
        with pytest.raises(RuntimeError, match="context length is only"):
            strict.score([problem.question], [steps])
        assert strict.stats["calls"] == 1  # a 4xx is not retried

        prm = VLLMPoolingPRM(server.url, "m", max_tokens=-1)  # -1: the server's max_model_len
        scores = prm.score([problem.question] * 2, [steps, short])
        assert scores == [full[:3] + [0.0, 0.0], full[:2]]  # lost steps score 0, as QwenMathPRM scores them
        assert prm.truncated_steps == server.counts["truncated_tags"] == 2

        with pytest.raises(RuntimeError, match="cannot be greater than max_model_len"):
            VLLMPoolingPRM(server.url, "m", max_tokens=limit + 1, retries=0).score([problem.question], [steps])

        body = {"model": "m", "messages": prm_messages(problem.question, steps), "truncate_prompt_tokens": limit,
                "truncation_side": "left"}  # keeps the end: the last tags, without the question
        rows = httpx.post(server.url + "/pooling", json=body).json()["data"][0]["data"]
    kept = [j for j, position in enumerate(tags) if position >= len(tokens) - limit]
    assert kept[-1] == len(steps) - 1 and [row[1] for row in rows] == [full[j] for j in kept]


def _group(problem) -> list[Rollout]:
    """Two right rollouts and three near misses (wrong at steps 1, 2, 3), one char per token."""
    texts = ["\n\n".join(_steps(problem, wrong_at)) for wrong_at in (None, None, 1, 2, 3)]
    return [Rollout(problem.question, problem.answer, t, [ord(c) for c in t], [(i, i + 1) for i in range(len(t))],
                    math_reward(t, problem.answer)) for t in texts]


def test_a_reasoning_refiner_needs_room_for_its_thoughts():
    """2,048 tokens cut a 3,000-token think block: every gated group is skipped as a counted `length`
    failure; the default `max_tokens` leaves room and the same groups are rectified from a kept prefix."""
    groups = [_group(p) for p in split_problems("train", 3, seed=2, difficulties=("hard",))]
    with SyntheticServer(reasoning_tokens=3000) as server:
        def stage(refiner):
            outcomes = rectify_groups(groups, prm=VLLMPoolingPRM(server.url, "m"), refiner=refiner,
                                      tokenize=lambda s: [ord(c) for c in s], verify=math_reward, config=ScopeConfig())
            return outcomes, stage_metrics(outcomes, len(groups))

        _, cut = stage(OpenAIRefiner(server.refiner_url, "m", max_tokens=2048, api_key_env=""))
        outcomes, roomy = stage(OpenAIRefiner(server.refiner_url, "m", api_key_env=""))
    assert cut["groups_gated"] == 3 and cut["refiner_failures"] == cut["skip/refiner_error:length"] == 3
    assert roomy["groups_rectified"] == 3 and roomy["refiner_failures"] == 0
    for group, out in zip(groups, outcomes):
        assert out.rectification.prefix_tokens > 0
        assert math_reward(out.rectification.text, group[0].ground_truth) == 1.0
