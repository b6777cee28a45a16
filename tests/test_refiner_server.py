"""A local OpenAI-compatible chat server (and vLLM /pooling endpoint) for the refiner and PRM client
tests and benchmarks. Loopback only, ephemeral port, one thread per connection.

Behaviour is chosen per request by a directive in the problem text, `[[kind:arg]]`:
  ok (default)      reply "<think>..</think>The rest.\\n\\n\\boxed{<ground truth>}"
  fail5xx:N         answer 500 to the first N attempts of this problem, then ok
  slow:S            sleep S seconds before answering (a timeout when S > the client's timeout)
  malformed         a 200 reply that is not JSON;   nochoices: JSON without choices
  empty             only a think block;             length: finish_reason "length"
  reasoning         content without think tags, reasoning in a separate reasoning_content field
Every request also waits `latency_s` (set on the server).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter

from scope_bench.engines.refiner import parse_refine_messages
from scope_bench.engines.serve import JSONServer

_DIRECTIVE = re.compile(r"\[\[(\w+)(?::([\w.]+))?\]\]")


class FakeChatServer(JSONServer):
    def __init__(self, latency_s: float = 0.0, pooling=None):
        super().__init__("127.0.0.1", 0)
        self.latency_s = latency_s
        self.pooling = pooling  # callable(body) -> JSON reply for POST /pooling
        self.attempts: Counter = Counter()  # per problem directive
        self.requests: list[dict] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    @property
    def root_url(self) -> str:
        return self.url

    def handle(self, method, path, body, headers):
        with self._lock:
            self.requests.append({"path": path, "body": body, "auth": headers.get("Authorization")})
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            time.sleep(self.latency_s)
            if path.endswith("/pooling"):
                return 200, self.pooling(body)
            return self._chat(body)
        finally:
            with self._lock:
                self.in_flight -= 1

    def _chat(self, body: dict) -> tuple[int, str]:
        prompt = body["messages"][-1]["content"]
        found = _DIRECTIVE.search(prompt)
        kind, arg = (found.group(1), found.group(2)) if found else ("ok", None)
        key = found.group(0) if found else prompt
        with self._lock:
            self.attempts[key] += 1
            attempt = self.attempts[key]
        answer = parse_refine_messages(body["messages"]).ground_truth
        message = {"role": "assistant", "content": f"<think>hmm</think>The rest.\n\n\\boxed{{{answer}}}"}
        finish = "stop"
        if kind == "fail5xx" and attempt <= int(arg):
            return 500, json.dumps({"error": "overloaded"})
        if kind == "slow":
            time.sleep(float(arg))
        if kind == "malformed":
            return 200, "{not json"
        if kind == "nochoices":
            return 200, json.dumps({"id": "x", "object": "chat.completion"})
        if kind == "empty":
            message["content"] = "<think>only thinking</think>"
        if kind == "length":
            finish = "length"
        if kind == "reasoning":
            message = {"role": "assistant", "reasoning_content": "long thoughts", "content": f"The rest. \\boxed{{{answer}}}"}
        reply = {"id": "x", "object": "chat.completion", "model": body["model"],
                 "choices": [{"index": 0, "message": message, "finish_reason": finish}]}
        return 200, json.dumps(reply)
