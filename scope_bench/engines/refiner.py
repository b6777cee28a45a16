"""The refiner as an async client of any OpenAI-compatible chat server (DeepSeek-R1 behind an API,
or a vLLM/SGLang server of Qwen2.5-32B-Instruct).

Why async: a training step sends one request per rectified group (up to a few hundred). They are all
put in flight at once under a concurrency bound, so a step waits for its slowest call, not for the
sum of all calls. Failures never raise: each comes back as `RefineResult(None, error=kind)` and is
counted, so a flaky endpoint costs rectifications, not the run.

Error kinds: those of `engines/http.py`, plus "empty" and "length" (the reply hit `max_tokens`).
`step_deadline_s` bounds one `refine` call (one training step's requests): what is unfinished then
ends as a counted "deadline" failure, so a stalled endpoint costs those rectifications, not
`timeout_s x (retries + 1)` of every GPU's time.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence
from typing import Any

from scope_bench.core.interfaces import RefineRequest, RefineResult
from scope_bench.engines.http import CallError, JSONEndpoint

# The paper's continuation-only instruction (Fig. 8): problem, verified prefix as context only,
# the ground-truth answer, and the demand to write only what follows, ending in one \boxed{}.
REFINE_INSTRUCTION = """You are given a math problem, the beginning of a solution to it, and the correct final answer.

## Problem
{question}

## Beginning of the solution (verified correct; context only, do not repeat it)
{prefix}

## Correct final answer
{ground_truth}

Continue the solution from exactly where the beginning above stops. Output only the continuation: \
do not restate the problem and do not repeat or rewrite any part of the beginning. Reason step by \
step, separate steps with a blank line, and end with exactly one \\boxed{{}} that contains the final answer."""

EMPTY_PREFIX = "(empty: write the whole solution from the first step)"

_THINK_BLOCK = re.compile(r"<think>.*?</think>", re.DOTALL)


def refine_messages(request: RefineRequest) -> list[dict]:
    """Chat messages for one continuation request (a single user turn, as DeepSeek-R1 recommends)."""
    prefix = request.prefix if request.prefix.strip() else EMPTY_PREFIX
    content = REFINE_INSTRUCTION.format(question=request.question.strip(), prefix=prefix, ground_truth=request.ground_truth)
    return [{"role": "user", "content": content}]


def _template_pattern(template: str) -> re.Pattern:
    """A regex matching `template.format(**fields)`, one named group per field."""
    parts = []
    for literal, field, _, _ in string.Formatter().parse(template):
        parts.append(re.escape(literal))
        if field:
            parts.append(f"(?P<{field}>.*?)")
    return re.compile("".join(parts) + r"\Z", re.DOTALL)


_REFINE_PROMPT = _template_pattern(REFINE_INSTRUCTION)


def parse_refine_messages(messages: list[dict]) -> RefineRequest | None:
    """The request back from `refine_messages` (question stripped, the empty-prefix marker read as
    ""), or None when the last message is not a refine prompt; what a server playing the refiner needs."""
    try:
        found = _REFINE_PROMPT.match(messages[-1]["content"])
    except (IndexError, KeyError, TypeError):
        return None
    if not found:
        return None
    prefix = "" if found["prefix"] == EMPTY_PREFIX else found["prefix"]
    return RefineRequest(found["question"], prefix, found["ground_truth"])


def strip_reasoning(text: str) -> str:
    """Drop a DeepSeek-R1 `<think>...</think>` block; an unopened `</think>` (the template opened
    it in the prompt) drops everything before it."""
    text = _THINK_BLOCK.sub("", text)
    if "</think>" in text:
        text = text.rsplit("</think>", 1)[1]
    return text.strip()


class OpenAIRefiner:
    """`Refiner` over `POST {base_url}/chat/completions`, greedy (temperature 0) by default.

    `base_url` includes the API version (`https://api.deepseek.com/v1`, `http://host:8000/v1`).
    `max_tokens` (16384) is sized for a reasoning refiner: DeepSeek-R1's think block counts against it
    and often runs to thousands of tokens, and a reply cut there is a counted `length` failure, not a
    continuation; it still fits a 32k-context server with the prompt.

    `stats` accumulates over the refiner's life: calls, ok, retries, and `error/<kind>` counts;
    `last_stats` holds the same for the latest `refine` call (what a training step logs).
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key_env: str = "SCOPE_REFINER_API_KEY",
        concurrency: int = 32,
        timeout_s: float = 600.0,
        retries: int = 3,
        backoff_s: float = 1.0,
        max_tokens: int = 16384,
        temperature: float = 0.0,
        extra_body: dict | None = None,
        step_deadline_s: float | None = None,
    ):
        if step_deadline_s is not None and step_deadline_s <= 0:
            raise ValueError(f"step_deadline_s must be positive or null, got {step_deadline_s}")
        self.step_deadline_s = step_deadline_s
        self.endpoint = JSONEndpoint(base_url.rstrip("/") + "/chat/completions", api_key_env=api_key_env,
                                     concurrency=concurrency, timeout_s=timeout_s, retries=retries, backoff_s=backoff_s)
        self.url = self.endpoint.url
        self.model = model
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.extra_body = dict(extra_body or {})
        self.stats: Counter = Counter()
        self.last_stats: Counter = Counter()

    def refine(self, requests: Sequence[RefineRequest]) -> list[RefineResult]:
        """All requests in flight at once (at most `concurrency` open); results in input order."""
        counts: Counter = Counter()
        bodies = [{"model": self.model, "messages": refine_messages(r), "temperature": self.temperature,
                   "max_tokens": self.max_tokens, **self.extra_body} for r in requests]
        results = []
        usage: list = [None] * len(bodies)
        latencies: list = [None] * len(bodies)

        def parse(i, reply):
            usage[i] = reply_usage(reply)  # billed even when the reply is unusable (cut at max_tokens)
            return parse_chat_reply(reply)

        replies = self.endpoint.post_all(bodies, parse, counts, deadline_s=self.step_deadline_s, latencies=latencies)
        for got, billed, seconds in zip(replies, usage, latencies):
            if isinstance(got, CallError):
                counts[f"error/{got.kind}"] += 1
                results.append(RefineResult(None, error=got.kind, usage=billed, latency_s=seconds))
            else:
                counts["ok"] += 1
                results.append(RefineResult(got, usage=billed, latency_s=seconds))
        self.last_stats = counts
        self.stats.update(counts)
        return results

    def probe(self) -> None:
        """One small call before training: raise if the endpoint refuses it with 401/403/404 (a missing
        or wrong key, a wrong URL or model name); any other answer, even an error, lets training start."""
        body = {"model": self.model, "messages": [{"role": "user", "content": "Reply with OK."}], "max_tokens": 1}
        got, = self.endpoint.post_all([body], lambda i, reply: reply, Counter())
        if isinstance(got, CallError) and got.status in (401, 403, 404):
            hint = {401: f"the key in ${self.endpoint.api_key_env} is missing or wrong",
                    403: f"the key in ${self.endpoint.api_key_env} may not use this model",
                    404: "wrong URL (it includes the API version, e.g. https://api.deepseek.com/v1) or model name"}
            raise ValueError(f"refiner {self.url} (model {self.model}) answered a first call with {got.status}: "
                               f"{hint[got.status]}. Without a refiner SCOPE trains as GRPO; fix it before training "
                               f"({str(got)[:200]})")


def reply_usage(reply: Any) -> tuple[int, int] | None:
    """`(prompt_tokens, completion_tokens)` of a chat reply's `usage` (reasoning included, as
    OpenAI-compatible servers bill it), or None when the server sent none."""
    try:
        usage = reply["usage"]
        return int(usage["prompt_tokens"]), int(usage.get("completion_tokens") or 0)
    except (KeyError, TypeError, ValueError):
        return None


def parse_chat_reply(reply: Any) -> str:
    """The continuation text of a chat-completions reply, reasoning removed; `CallError` if unusable."""
    try:
        choice = reply["choices"][0]
        content = choice["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise CallError("malformed", f"no choices[0].message.content in {str(reply)[:200]}") from None
    if content is not None and not isinstance(content, str):
        raise CallError("malformed", f"content is {type(content).__name__}")
    if choice.get("finish_reason") == "length":
        raise CallError("length", "reply stopped at max_tokens")
    text = strip_reasoning(content or "")
    if not text:
        raise CallError("empty", "reply has no text after removing reasoning")
    return text

