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
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_DIRECTIVE = re.compile(r"\[\[(\w+)(?::([\w.]+))?\]\]")
_ANSWER = re.compile(r"## Correct final answer\n(.*?)\n\nContinue", re.DOTALL)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # the default backlog of 5 drops bursts of connections (1 s SYN retry)


class FakeChatServer:
    def __init__(self, latency_s: float = 0.0, pooling=None):
        self.latency_s = latency_s
        self.pooling = pooling  # callable(body) -> JSON reply for POST /pooling
        self.attempts: Counter = Counter()  # per problem directive
        self.requests: list[dict] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output quiet
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server._lock:
                    server.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    time.sleep(server.latency_s)
                    if self.path.endswith("/pooling"):
                        status, payload = 200, json.dumps(server.pooling(body))
                    else:
                        status, payload = server._chat(body)
                finally:
                    with server._lock:
                        server.in_flight -= 1
                data = payload.encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
                    pass

        return Handler

    def _chat(self, body: dict) -> tuple[int, str]:
        prompt = body["messages"][-1]["content"]
        found = _DIRECTIVE.search(prompt)
        kind, arg = (found.group(1), found.group(2)) if found else ("ok", None)
        key = found.group(0) if found else prompt
        with self._lock:
            self.attempts[key] += 1
            attempt = self.attempts[key]
        answer = _ANSWER.search(prompt).group(1).strip()
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
