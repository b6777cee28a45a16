"""HF backend: batched sampling against one sequence at a time, on the tiny model, in the same run.

    .venv/bin/python benchmarks/bench_eval_hf.py [--threads 2] [--prompts 32] [--tokens 64]

Both modes draw the same samples (each sample has its own seeded generator), so the tokens generated
are identical and tokens/s compare like for like. Target: batched >= 5x on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _tiny_model import build_tiny_model

from scope_bench.eval.backends import GenerationRequest, HFBackend
from scope_bench.eval.tasks import Sampling


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--dtype", default="auto", help="auto (bf16 on GPU, fp32 on CPU), float32, bfloat16")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        backend = HFBackend(str(build_tiny_model(tmp)), batch_size=args.batch_size, device=args.device,
                            dtype=args.dtype)
    sampling = Sampling(temperature=1.0, top_p=1.0, max_tokens=args.tokens, n=1)
    requests = [GenerationRequest([{"role": "user", "content": f"Problem {i}: what is {i} + {i * 7}?"}],
                                  sampling, seed=i) for i in range(args.prompts)]
    results = {}
    for label, batch_size in (("one at a time", 1), (f"batched ({args.batch_size})", args.batch_size)):
        backend.batch_size = batch_size
        backend.generate(requests[:2])  # warm-up
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = backend.generate(requests)
        seconds = time.perf_counter() - start
        tokens = sum(g.n_tokens for gens in out for g in gens)
        results[label] = (tokens / seconds, out)
        print(f"{label:<16} {tokens:6d} tokens in {seconds:6.2f}s = {tokens / seconds:8.1f} tokens/s")
    (single, out1), (batched, out2) = results.values()
    same = sum(a == b for a, b in zip(out1, out2))
    print(f"speed-up: {batched / single:.1f}x (target >= 5x); identical samples: {same}/{len(out1)} "
          f"on {args.device} ({backend.model.dtype})")


if __name__ == "__main__":
    main()
