"""The OpenAI-compatible refiner client against a local fake server: results, error kinds, retries,
bounded concurrency, the continuation-only prompt."""

from __future__ import annotations

import asyncio
import socket

import pytest
from test_refiner_server import FakeChatServer

from scope_bench.core.interfaces import Refiner, RefineRequest
from scope_bench.engines.refiner import (
    EMPTY_PREFIX,
    OpenAIRefiner,
    parse_refine_messages,
    refine_messages,
    strip_reasoning,
)


def _request(tag: str = "", answer: str = "42") -> RefineRequest:
    return RefineRequest(question=f"What is 6 times 7? {tag}", prefix="Step 1: 6*7.\n\n", ground_truth=answer)


def test_results_errors_and_counts_for_a_mixed_batch(monkeypatch):
    monkeypatch.setenv("TEST_REFINER_KEY", "sk-test")
    requests = [
        _request(answer="42"),
        _request("[[fail5xx:2]]", answer="7"),  # two 500s, then a reply: retried, ok
        _request("[[slow:2]]"),  # longer than the client's timeout on every attempt
        _request("[[malformed]]"),
        _request("[[nochoices]]"),
        _request("[[empty]]"),
        _request("[[length]]"),
        _request("[[reasoning]]", answer="x^2"),
        _request("[[fail5xx:9]]"),  # more 500s than retries
    ]
    with FakeChatServer() as server:
        refiner = OpenAIRefiner(server.base_url, "teacher", api_key_env="TEST_REFINER_KEY", concurrency=8,
                                timeout_s=0.5, retries=2, backoff_s=0.01)
        assert isinstance(refiner, Refiner)
        results = refiner.refine(requests)

    assert [r.error for r in results] == [None, None, "timeout", "malformed", "malformed", "empty", "length", None,
                                          "http_5xx"]
    assert results[0].suffix == "The rest.\n\n\\boxed{42}"  # think block removed, text stripped
    assert results[1].suffix.endswith("\\boxed{7}")
    assert results[7].suffix == "The rest. \\boxed{x^2}"  # reasoning_content ignored
    assert all(r.ok == (r.error is None) for r in results)
    stats = refiner.last_stats
    # retries: 2 (fail5xx:2) + 2 (slow) + 2 (fail5xx:9); calls = 9 first attempts + retries
    assert stats["retries"] == 6 and stats["calls"] == 15
    assert stats["ok"] == 3
    assert stats["error/timeout"] == 1 and stats["error/malformed"] == 2 and stats["error/http_5xx"] == 1
    assert stats["error/empty"] == 1 and stats["error/length"] == 1
    assert server.attempts["[[fail5xx:2]]"] == 3 and server.attempts["[[malformed]]"] == 1  # malformed not retried
    assert {r["auth"] for r in server.requests} == {"Bearer sk-test"}
    assert refiner.stats == stats  # lifetime stats after one call


def test_request_body_is_the_greedy_continuation_prompt():
    request = RefineRequest("Find x if 2x = 6.", "We divide both sides by 2.\n\n", "3")
    with FakeChatServer() as server:
        OpenAIRefiner(server.base_url, "deepseek-r1", api_key_env="", max_tokens=123).refine([request])
    body = server.requests[0]["body"]
    assert server.requests[0]["path"] == "/v1/chat/completions" and server.requests[0]["auth"] is None
    assert body["model"] == "deepseek-r1" and body["temperature"] == 0.0 and body["max_tokens"] == 123
    (message,) = body["messages"]
    text = message["content"]
    assert message["role"] == "user"
    for part in ("Find x if 2x = 6.", "We divide both sides by 2.", "## Correct final answer\n3\n",
                 "do not repeat", "exactly one \\boxed{}"):
        assert part in text
    assert EMPTY_PREFIX in refine_messages(RefineRequest("q", "  ", "1"))[0]["content"]


def test_concurrency_is_bounded_and_all_calls_overlap():
    with FakeChatServer(latency_s=0.3) as server:
        results = OpenAIRefiner(server.base_url, "m", concurrency=4, api_key_env="").refine(
            [_request(f"#{i}") for i in range(12)])
    assert all(r.ok for r in results)
    assert server.max_in_flight == 4  # never more than the bound, and the bound is reached


def test_connection_refused_is_retried_then_reported():
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    refiner = OpenAIRefiner(f"http://127.0.0.1:{port}/v1", "m", retries=1, backoff_s=0.01, api_key_env="")
    (result,) = refiner.refine([_request()])
    assert result.error == "connection" and result.suffix is None
    assert refiner.last_stats["error/connection"] == 1 and refiner.last_stats["retries"] == 1


def test_refine_works_inside_a_running_event_loop():
    with FakeChatServer() as server:
        refiner = OpenAIRefiner(server.base_url, "m", api_key_env="")

        async def caller():
            return refiner.refine([_request()])

        assert asyncio.run(caller())[0].ok


def test_empty_batch_makes_no_call():
    assert OpenAIRefiner("http://127.0.0.1:9/v1", "m").refine([]) == []


@pytest.mark.parametrize("raw, expected", [
    ("<think>a\nb</think>\n\nStep 3.\n\n\\boxed{1}", "Step 3.\n\n\\boxed{1}"),
    ("reasoning without an opening tag</think>Step 3.", "Step 3."),
    ("Step 3. \\boxed{2}", "Step 3. \\boxed{2}"),
    ("<think>only</think>", ""),
])
def test_strip_reasoning(raw, expected):
    assert strip_reasoning(raw) == expected


@pytest.mark.parametrize("request_", [
    RefineRequest("Find $x$ if $2x = 6$.", "We divide by 2.\n\n", "3"),
    RefineRequest("Q with ## Problem inside?", "", "\\frac{1}{2}"),
    RefineRequest("Multi\n\nline question", "Step 1.\n\nStep 2.", "{a, b}"),
])
def test_a_refine_prompt_reads_back_as_its_request(request_):
    """What a server playing the refiner (scope-bench serve) sees is what the client asked."""
    assert parse_refine_messages(refine_messages(request_)) == request_
    assert parse_refine_messages([{"role": "user", "content": "Solve 2+2."}]) is None


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError, match="concurrency"):
        OpenAIRefiner("http://x/v1", "m", concurrency=0)
    with pytest.raises(ValueError, match="timeout_s"):
        OpenAIRefiner("http://x/v1", "m", timeout_s=0)
