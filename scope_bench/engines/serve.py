"""`scope-bench serve`: the synthetic task's PRM and refiner behind the HTTP APIs of the real services.

    scope-bench serve --port 8001            # prints "serving on http://127.0.0.1:8001", then serves
      POST /pooling                 vLLM's pooling API, as `vllm serve Qwen/Qwen2.5-Math-PRM-7B --runner pooling`
      POST /v1/chat/completions     OpenAI's chat API, as the refiner endpoint
      GET  /v1/models, /health

Why: the paper-scale path talks to a PRM server and a refiner endpoint through `VLLMPoolingPRM` and
`OpenAIRefiner`. Serving the rule-based PRM and the programmatic refiner of the synthetic task behind
the same APIs lets a recipe run end to end with those real clients on a laptop or in CI (verl on CPU
does), before any GPU is rented. Clients: `VLLMPoolingPRM(URL, model)` (it posts to URL/pooling, with
or without a trailing /v1) and `OpenAIRefiner(URL + "/v1", model)`. Any model name is accepted.

PRM (`/pooling`): the chat of `prm_messages` is read back (question = the user turn, steps = the
assistant turn cut at each `<extra_0>`), the steps are judged by `RuleBasedPRM` and each tag gets
`[1 - p, p]`, as vLLM's STEP pooling returns for Qwen2.5-Math-PRM. Context length as in vLLM: a chat
longer than `max_model_len` tokens is refused with 400 unless the request sets
`truncate_prompt_tokens` (N, or -1 for max_model_len; larger than max_model_len is a 400 too);
`truncation_side` "right" (the default here, as Qwen's tokenizer) keeps the first N tokens, "left" the
last N. Only the tags inside the kept tokens are scored, so a client sees fewer scores than steps.
Tokens are counted by a toy tokenizer (`chat_tokens`: chat markers and the step tag are one token,
runs of letters or digits one, any other character one), so lengths are deterministic without a model.

Refiner (`/v1/chat/completions`): the prompt of `refine_messages` is read back and answered by
`ProgrammaticRefiner`: the correct continuation of the prefix. `reasoning_tokens` puts a
`<think>` block of that many tokens before it, as DeepSeek-R1 does; a reply longer than the request's
`max_tokens` is cut there with `finish_reason: "length"`, as a real server does. `refiner_failure`
injects, in a `refiner_failure_rate` share of requests chosen as `ProgrammaticRefiner` chooses (a hash
of seed, question and prefix, so a retried or resumed request fails the same way):
  error    500 reply                         timeout  answers only after `refiner_delay_s` seconds
  garbage  200 reply that is not JSON        wrong    a continuation boxing a wrong answer
  rewrite  the prefix repeated before the continuation
A chat that is the training prompt itself (`chat_messages`: "solve this problem", what `scope-bench
data distill` sends) is answered the same way with the whole solution (an empty prefix), slips and
injected failures included, so a distillation run gets correct and wrong solutions to grade.
`counts` records what was served (`pooling`, `chat`, `failure/<kind>`, `truncated_tags`, `http_400`).
No authentication: keep it on loopback (the default host).
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import sys
import threading
import time
import traceback
import uuid
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from scope_bench.core.interfaces import RefineRequest
from scope_bench.engines.prm import STEP_TAG
from scope_bench.engines.refiner import parse_refine_messages
from scope_bench.prompts import chat_messages

REFINER_FAILURES = ("error", "timeout", "garbage", "wrong", "rewrite")
PRM_MODEL = "synthetic-prm"
REFINER_MODEL = "synthetic-refiner"

_TOKEN = re.compile(re.escape(STEP_TAG) + r"|<\|im_start\|>|<\|im_end\|>|[A-Za-z]+|\d+|.", re.DOTALL)


def text_tokens(text: str) -> list[str]:
    return _TOKEN.findall(text)


def chat_tokens(messages: list[dict]) -> tuple[list[str], list[int]]:
    """The toy tokens of a chat in Qwen's template, and the positions of the step tags of its last
    assistant turn (tags elsewhere are ordinary text to the PRM)."""
    tokens: list[str] = []
    tags: list[int] = []
    last_assistant = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
    for i, message in enumerate(messages):
        tokens += text_tokens(f"<|im_start|>{message['role']}\n")
        content = text_tokens(message["content"])
        if i == last_assistant:
            tags = [len(tokens) + j for j, tok in enumerate(content) if tok == STEP_TAG]
        tokens += content + text_tokens("<|im_end|>\n")
    return tokens, tags


class HTTPError(Exception):
    """A reply other than 200, in vLLM's error format."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a sleeping handler (an injected timeout) never holds up close()
    request_queue_size = 256  # the default backlog of 5 drops bursts of connections (1 s SYN retry)


class JSONServer:
    """A JSON-over-HTTP server in a background thread, one thread per connection. Subclasses
    implement `handle(method, path, body, headers) -> (status, reply)`; a reply that is not a dict or
    list is sent as is (text), so a subclass can also answer garbage. The test suite's fake servers
    are built on it too."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self._server = _Server((host, port), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._started = False

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self):
        if not self._started:
            self._started = True
            self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving and free the port (idempotent; handlers still sleeping are daemon threads)."""
        if self._started:
            self._started = False
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    def handle(self, method: str, path: str, body, headers) -> tuple[int, object]:
        raise NotImplementedError

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet: a training log should not fill with access lines
                pass

            def do_GET(self):
                self._reply(*server.handle("GET", self.path, None, self.headers))

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = json.loads(raw)
                except ValueError:
                    self._reply(400, error_reply(400, "request body is not JSON"))
                    return
                self._reply(*server.handle("POST", self.path, body, self.headers))

            def _reply(self, status: int, payload) -> None:
                text = json.dumps(payload) if isinstance(payload, (dict, list)) else str(payload)
                data = text.encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
                    pass

        return Handler


def error_reply(status: int, message: str) -> dict:
    kind = {400: "BadRequestError", 404: "NotFoundError"}.get(status, "InternalServerError")
    return {"error": {"message": message, "type": kind, "param": None, "code": status}}


class SyntheticServer(JSONServer):
    """The synthetic PRM and refiner on one port (see the module docstring).

        with SyntheticServer(port=0, refiner_failure="garbage", refiner_failure_rate=0.5) as server:
            prm = VLLMPoolingPRM(server.url, "synthetic-prm")
            refiner = OpenAIRefiner(server.url + "/v1", "synthetic-refiner")

    `url` is the root (no /v1); `refiner_url` is `url + "/v1"`.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, p_correct: float = 0.9, p_wrong: float = 0.1,
                 fp_rate: float = 0.0, fn_rate: float = 0.0, max_model_len: int | None = None,
                 refiner_failure: str | None = None, refiner_failure_rate: float = 1.0,
                 refiner_delay_s: float = 60.0, refiner_style: str = "student", refiner_error_rate: float = 0.0,
                 reasoning_tokens: int = 0, seed: int = 0):
        from scope_bench.synthetic.prm import RuleBasedPRM
        from scope_bench.synthetic.refiner import ProgrammaticRefiner

        if refiner_failure is not None and refiner_failure not in REFINER_FAILURES:
            raise ValueError(f"unknown refiner failure {refiner_failure!r}; choose from {', '.join(REFINER_FAILURES)}")
        if max_model_len is not None and max_model_len < 1:
            raise ValueError(f"max_model_len must be positive, got {max_model_len}")
        if reasoning_tokens < 0 or refiner_delay_s < 0:
            raise ValueError("reasoning_tokens and refiner_delay_s must not be negative")
        self.prm = RuleBasedPRM(p_correct, p_wrong, fp_rate=fp_rate, fn_rate=fn_rate, seed=seed)
        self.refiner = ProgrammaticRefiner(seed=seed, style=refiner_style, error_rate=refiner_error_rate)
        # the same choice of failing requests as the in-process refiner with these settings
        self._chooser = ProgrammaticRefiner(failure="error", failure_rate=refiner_failure_rate, seed=seed)
        self._corrupt = (ProgrammaticRefiner(failure=refiner_failure, seed=seed, style=refiner_style)
                         if refiner_failure in ("wrong", "rewrite") else None)
        self.refiner_failure, self.refiner_delay_s = refiner_failure, refiner_delay_s
        self.max_model_len, self.reasoning_tokens = max_model_len, reasoning_tokens
        self.counts: Counter = Counter()
        self._lock = threading.Lock()
        super().__init__(host, port)

    @property
    def refiner_url(self) -> str:
        return self.url + "/v1"

    def count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.counts[key] += n

    def handle(self, method: str, path: str, body, headers=None) -> tuple[int, object]:
        route = {("GET", "/health"): lambda _: "",
                 ("GET", "/v1/models"): self._models,
                 ("POST", "/pooling"): self._pooling,
                 ("POST", "/v1/chat/completions"): self._chat}.get((method, path.split("?")[0].rstrip("/")))
        if route is None:
            return 404, error_reply(404, f"no route {method} {path}")
        try:
            return 200, route(body)
        except HTTPError as err:
            self.count(f"http_{err.status}")
            return err.status, error_reply(err.status, str(err))
        except Exception as err:  # noqa: BLE001 - a bug answers 500 (and is printed) rather than dropping the connection
            traceback.print_exc()
            self.count("http_500")
            return 500, error_reply(500, f"{type(err).__name__}: {err}")

    def _models(self, _body) -> dict:
        return {"object": "list", "data": [
            {"id": name, "object": "model", "created": 0, "owned_by": "scope-bench", "max_model_len": self.max_model_len}
            for name in (PRM_MODEL, REFINER_MODEL)]}

    def _pooling(self, body) -> dict:
        messages = _messages(body)
        question = next((m["content"] for m in messages if m["role"] == "user"), None)
        assistant = [m["content"] for m in messages if m["role"] == "assistant"]
        if question is None or not assistant:
            raise HTTPError(400, "a PRM chat needs a user turn (the question) and an assistant turn (the steps)")
        steps = assistant[-1].split(STEP_TAG)[:-1]  # the text after the last tag is not a scored step
        tokens, tags = chat_tokens(messages)
        kept = self._kept_range(len(tokens), body.get("truncate_prompt_tokens"), body.get("truncation_side"))
        try:
            probs = self.prm.score([question], [steps])[0] if steps else []
        except ValueError as err:
            raise HTTPError(400, str(err)) from None
        scored = [j for j, position in enumerate(tags) if kept[0] <= position < kept[1]]
        self.count("pooling")
        self.count("truncated_tags", len(tags) - len(scored))
        n = kept[1] - kept[0]
        return {"id": f"pool-{uuid.uuid4().hex}", "object": "list", "created": int(time.time()),
                "model": body.get("model") or PRM_MODEL,
                "data": [{"index": 0, "object": "pooling", "data": [[1.0 - probs[j], probs[j]] for j in scored]}],
                "usage": {"prompt_tokens": n, "total_tokens": n, "completion_tokens": 0}}

    def _kept_range(self, n_tokens: int, truncate, side) -> tuple[int, int]:
        """[start, end) of the prompt tokens the model sees, with vLLM's rules and messages."""
        limit = self.max_model_len
        if truncate is not None:
            if not isinstance(truncate, int) or truncate < -1:
                raise HTTPError(400, f"truncate_prompt_tokens must be an integer >= -1, got {truncate!r}")
            if side not in (None, "left", "right"):
                raise HTTPError(400, f"truncation_side must be 'left' or 'right', got {side!r}")
            if truncate == -1:
                truncate = limit
            elif limit is not None and truncate > limit:
                raise HTTPError(400, f"truncate_prompt_tokens={truncate} cannot be greater than max_model_len={limit}. "
                                     "Please request a smaller truncation size.")
        if truncate is not None and truncate < n_tokens:
            return (n_tokens - truncate, n_tokens) if side == "left" else (0, truncate)
        if limit is not None and n_tokens > limit:
            raise HTTPError(400, f"You passed {n_tokens} input tokens. However, the model's context length is only "
                                 f"{limit} tokens. Please reduce the length of the input prompt.")
        return 0, n_tokens

    def _chat(self, body) -> object:
        messages = _messages(body)
        request = parse_refine_messages(messages)
        if request is None and (question := training_question(messages)) is not None:
            request = RefineRequest(question, "", "")  # the whole solution; the refiner needs no answer for it
        if request is None:
            raise HTTPError(400, "neither a refiner prompt (scope_bench.engines.refiner.refine_messages) nor a "
                                 "training prompt (scope_bench.prompts.chat_messages)")
        (answer,) = self.refiner.refine([request])
        if not answer.ok:
            raise HTTPError(400, f"not a synthetic question: {request.question[:80]!r}")
        self.count("chat")
        fails = self.refiner_failure is not None and self._chooser.refine([request])[0].error == "error"
        if fails:
            self.count(f"failure/{self.refiner_failure}")
            if self.refiner_failure == "error":
                raise HTTPError(500, "injected refiner failure")
            if self.refiner_failure == "garbage":
                return "{this is not json"
            if self.refiner_failure == "timeout":
                time.sleep(self.refiner_delay_s)
            if self._corrupt is not None:
                (answer,) = self._corrupt.refine([request])
        return self._completion(body, answer.suffix)

    def _completion(self, body: dict, text: str) -> dict:
        """A chat-completions reply: an optional think block, then `text`, cut at `max_tokens`."""
        if self.reasoning_tokens:
            text = "<think>" + " step" * (self.reasoning_tokens // 2) + "</think>" + text
        tokens = text_tokens(text)
        limit = body.get("max_tokens")
        finish = "stop"
        if isinstance(limit, int) and len(tokens) > limit:
            tokens, finish = tokens[:limit], "length"
            self.count("finish/length")
        prompt = sum(len(text_tokens(m["content"])) for m in body["messages"])
        return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
                "model": body.get("model") or REFINER_MODEL,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(tokens)},
                             "finish_reason": finish}],
                "usage": {"prompt_tokens": prompt, "completion_tokens": len(tokens),
                          "total_tokens": prompt + len(tokens)}}


def training_question(messages: list[dict]) -> str | None:
    """The question of a chat whose one user turn is the training prompt (`chat_messages`), else None."""
    marker = "\x00"
    head, tail = chat_messages(marker)[-1]["content"].split(marker)
    users = [m["content"] for m in messages if m["role"] == "user"]
    if len(users) != 1 or len(users[0]) < len(head) + len(tail):
        return None
    text = users[0]
    return text[len(head):len(text) - len(tail)] if text.startswith(head) and text.endswith(tail) else None


def _messages(body) -> list[dict]:
    messages = body.get("messages") if isinstance(body, dict) else None
    if not isinstance(messages, list) or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in messages):
        raise HTTPError(400, "body needs `messages`: a list of {role, content} with string content")
    return messages


def register(subparsers) -> None:
    p = subparsers.add_parser("serve", help="serve the synthetic PRM (/pooling) and refiner (/v1/chat/completions)",
                              description=__doc__.splitlines()[0], epilog="\n".join(__doc__.splitlines()[1:]),
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback; there is no authentication)")
    p.add_argument("--port", type=int, default=8001, help="port (0: any free port; the URL is printed first)")
    p.add_argument("--p-correct", type=float, default=0.9, help="PRM probability of a correct step")
    p.add_argument("--p-wrong", type=float, default=0.1, help="PRM probability of a wrong step")
    p.add_argument("--fp-rate", type=float, default=0.0, help="share of wrong steps the PRM judges correct")
    p.add_argument("--fn-rate", type=float, default=0.0, help="share of correct steps the PRM judges wrong")
    p.add_argument("--max-model-len", type=int, help="PRM context length in toy tokens (default: unlimited)")
    p.add_argument("--refiner-failure", choices=REFINER_FAILURES, help="inject this refiner failure")
    p.add_argument("--refiner-failure-rate", type=float, default=1.0, help="share of refiner requests that fail")
    p.add_argument("--refiner-delay", type=float, default=60.0, help="seconds a `timeout` failure waits to answer")
    p.add_argument("--refiner-style", default="student", help="refiner wording: student | shifted")
    p.add_argument("--refiner-error-rate", type=float, default=0.0, help="share of answers where the refiner slips")
    p.add_argument("--reasoning-tokens", type=int, default=0, help="think-block tokens before each refiner answer")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def run(args) -> int:
    server = SyntheticServer(
        args.host, args.port, p_correct=args.p_correct, p_wrong=args.p_wrong, fp_rate=args.fp_rate,
        fn_rate=args.fn_rate, max_model_len=args.max_model_len, refiner_failure=args.refiner_failure,
        refiner_failure_rate=args.refiner_failure_rate, refiner_delay_s=args.refiner_delay,
        refiner_style=args.refiner_style, refiner_error_rate=args.refiner_error_rate,
        reasoning_tokens=args.reasoning_tokens, seed=args.seed)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):  # a launcher's terminate() is a clean stop (exit 0)
        signal.signal(sig, lambda *_: stop.set())
    with server:
        print(f"serving on {server.url}", flush=True)
        print(f"PRM: VLLMPoolingPRM({server.url!r}, {PRM_MODEL!r}); refiner: OpenAIRefiner({server.refiner_url!r}, "
              f"{REFINER_MODEL!r}); Ctrl-C stops", file=sys.stderr, flush=True)
        stop.wait()
    return 0
