"""The HTTP layer of the engines' clients (the refiner, the PRM server): JSON POSTs to one endpoint,
all in flight at once under a concurrency bound, with the API key from an environment variable,
typed failures and retries.

Why all at once: a training step sends one request per rectified group or scored rollout (up to a
few hundred), so a step waits for its slowest call, not for the sum of all calls.

Error kinds: "timeout", "connection", "http_429", "http_5xx", "http_4xx", "malformed", "deadline" (the
call was still open when the batch's deadline passed) and whatever a client's reply parser adds. The
first four are retried with jittered exponential backoff.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

RETRYABLE = frozenset({"timeout", "connection", "http_429", "http_5xx"})


class CallError(Exception):
    """A failed HTTP call, with its error kind (see the module docstring)."""

    def __init__(self, kind: str, detail: str = "", status: int | None = None):
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind
        self.status = status  # the HTTP status, where there was a reply


def run_coroutine(coro: Awaitable):
    """Run `coro` to completion from sync code, even when the caller already runs an event loop
    (Ray async actors, notebooks): then it runs on a private loop in a helper thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}

    def target():
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as err:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = err

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


async def post_json(client, url: str, body: dict, headers: dict | None = None) -> dict:
    """One POST; raises `CallError` with a kind for every way it can fail."""
    import httpx

    try:
        response = await client.post(url, json=body, headers=headers)
    except httpx.TimeoutException as err:
        raise CallError("timeout", str(err)) from None
    except httpx.HTTPError as err:
        raise CallError("connection", f"{type(err).__name__}: {err}") from None
    if response.status_code == 429:
        raise CallError("http_429", response.text[:200])
    if response.status_code >= 500:
        raise CallError("http_5xx", f"{response.status_code} {response.text[:200]}")
    if response.status_code >= 400:
        raise CallError("http_4xx", f"{response.status_code} {response.text[:200]}", response.status_code)
    try:
        return response.json()
    except (json.JSONDecodeError, ValueError):
        raise CallError("malformed", f"not JSON: {response.text[:200]!r}") from None


async def with_retries(call: Callable[[], Awaitable], *, retries: int, backoff_s: float, counts: Counter):
    """Await `call()`, retrying retryable kinds up to `retries` times with jittered exponential
    backoff (`backoff_s * 2**attempt`, capped at 30 s)."""
    for attempt in range(retries + 1):
        try:
            return await call()
        except CallError as err:
            if err.kind not in RETRYABLE or attempt == retries:
                raise
            counts["retries"] += 1
            delay = min(30.0, backoff_s * 2**attempt)
            await asyncio.sleep(delay * (0.5 + random.random() / 2))


class JSONEndpoint:
    """POSTs JSON bodies to `url`: at most `concurrency` calls open, `timeout_s` each, retryable
    failures retried `retries` times; `Authorization: Bearer $<api_key_env>` when that variable is set."""

    def __init__(self, url: str, *, api_key_env: str | None, concurrency: int, timeout_s: float, retries: int,
                 backoff_s: float = 1.0):
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        self.url, self.api_key_env = url, api_key_env
        self.concurrency, self.timeout_s, self.retries, self.backoff_s = concurrency, timeout_s, retries, backoff_s

    def headers(self) -> dict:
        key = os.environ.get(self.api_key_env, "") if self.api_key_env else ""
        return {"Authorization": f"Bearer {key}"} if key else {}

    def post_all(self, bodies: Sequence[dict], parse: Callable[[int, Any], Any], counts: Counter,
                 deadline_s: float | None = None, latencies: list | None = None) -> list:
        """Per body, in order: `parse(i, reply)`, or the `CallError` it ended with. `counts` gets
        `calls` and `retries`. Calls still open (or waiting to retry) `deadline_s` after the start are
        cancelled and end as `CallError("deadline")`: one stalled call cannot hold the batch longer.
        `latencies` (a list as long as `bodies`) gets, per body that was answered, the seconds from
        sending its last attempt to the reply (queueing and backoff excluded)."""
        return run_coroutine(self._post_all(list(bodies), parse, counts, deadline_s, latencies)) if bodies else []

    async def _post_all(self, bodies: list[dict], parse, counts: Counter, deadline_s: float | None = None,
                        latencies: list | None = None) -> list:
        import httpx

        headers = self.headers()
        gate = asyncio.Semaphore(self.concurrency)
        limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)

        async def one(client, i: int, body: dict):
            async def call():
                async with gate:  # the semaphore bounds open calls; backoff sleeps do not hold a slot
                    counts["calls"] += 1
                    sent = loop.time()
                    reply = await post_json(client, self.url, body, headers)
                    if latencies is not None:
                        latencies[i] = loop.time() - sent
                    return reply

            try:
                reply = await asyncio.wait_for(
                    with_retries(call, retries=self.retries, backoff_s=self.backoff_s, counts=counts),
                    timeout=None if deadline_s is None else max(0.0, deadline_s - (loop.time() - start)))
                return parse(i, reply)
            except CallError as err:
                return err
            except TimeoutError:
                return CallError("deadline", f"still open {deadline_s:g} s after the batch started")

        loop = asyncio.get_running_loop()
        start = loop.time()

        async with httpx.AsyncClient(timeout=httpx.Timeout(self.timeout_s), limits=limits) as client:
            return list(await asyncio.gather(*(one(client, i, body) for i, body in enumerate(bodies))))
