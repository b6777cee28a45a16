"""Refiner client throughput: 64 calls at 1 s server latency, concurrency 32, against a sequential
baseline (concurrency 1) measured in the same run on a few calls.

    .venv/bin/python benchmarks/bench_refiner.py [--calls 64] [--latency 1.0] [--concurrency 32]

Expected: about calls / concurrency * latency seconds (2 s), i.e. a step waits for the slowest
wave of calls, not for the sum of all calls.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from test_refiner_server import FakeChatServer

from scope_bench.core.interfaces import RefineRequest
from scope_bench.engines.refiner import OpenAIRefiner


def wall(refiner: OpenAIRefiner, n: int) -> float:
    requests = [RefineRequest(f"Problem {i}", "Step 1.\n\n", str(i)) for i in range(n)]
    start = time.perf_counter()
    results = refiner.refine(requests)
    elapsed = time.perf_counter() - start
    bad = [r.error for r in results if not r.ok]
    if bad:
        raise SystemExit(f"{len(bad)} calls failed: {bad[:5]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=64)
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--baseline-calls", type=int, default=4)
    args = parser.parse_args()
    with FakeChatServer(latency_s=args.latency) as server:
        sequential = wall(OpenAIRefiner(server.base_url, "m", concurrency=1, api_key_env=""), args.baseline_calls)
        concurrent = wall(OpenAIRefiner(server.base_url, "m", concurrency=args.concurrency, api_key_env=""),
                          args.calls)
    per_call = sequential / args.baseline_calls
    ideal = -(-args.calls // args.concurrency) * args.latency
    print(f"sequential baseline: {per_call:.3f} s/call over {args.baseline_calls} calls "
          f"(=> {per_call * args.calls:.1f} s for {args.calls} calls one by one)")
    print(f"{args.calls} calls, concurrency {args.concurrency}, latency {args.latency} s: {concurrent:.2f} s wall "
          f"(ideal {ideal:.1f} s; {per_call * args.calls / concurrent:.1f}x faster than sequential)")


if __name__ == "__main__":
    main()
