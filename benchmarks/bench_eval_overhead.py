"""Share of an evaluation spent outside generation (loading, grading, bookkeeping), on the real
MATH-500 prompts with the tiny model, plus the grader's cost on the real reference solutions.

    .venv/bin/python benchmarks/bench_eval_overhead.py [--problems 500] [--n 1] [--tokens 64]

Target: time outside generation under 5% of the evaluation.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _tiny_model import build_tiny_model

from scope_bench.eval import HFBackend, evaluate, load_task
from scope_bench.eval.chunk import grade
from scope_bench.paths import SHARED_DATA_DIR

BENCH = SHARED_DATA_DIR / "benchmarks"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--problems", type=int, default=500)
    ap.add_argument("--n", type=int, default=1)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--grading-workers", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        backend = HFBackend(str(build_tiny_model(Path(tmp) / "tiny")), batch_size=64)
        timings: dict[str, float] = {}
        evaluate("tiny", "math500", backend=backend, out_dir=Path(tmp) / "run", data_dir=BENCH,
                 limit=args.problems, n=args.n, max_tokens=args.tokens, temperature=1.0, progress=False,
                 grading_workers=args.grading_workers, timings=timings)
    outside = timings["total_s"] - timings["generation_s"]
    print(f"evaluation {timings['total_s']:.2f}s: generation {timings['generation_s']:.2f}s, "
          f"outside generation {outside:.2f}s = {100 * outside / timings['total_s']:.1f}% (target < 5%)")

    # the grader on text that does have answers: each MATH-500 reference solution vs its answer
    rows = [json.loads(x) for x in (BENCH / "qwen/math500.jsonl").open()][: args.problems]
    start = time.perf_counter()
    grades, _ = grade(load_task("math500"), [r["solution"] for r in rows], [r["answer"] for r in rows],
                      workers=args.grading_workers)
    seconds = time.perf_counter() - start
    print(f"grading {len(rows)} reference solutions: {seconds:.2f}s ({1000 * seconds / len(rows):.2f} ms each), "
          f"{sum(grades)}/{len(rows)} correct; per generated sample that is "
          f"{100 * (seconds / len(rows)) / (timings['generation_s'] / (args.problems * args.n)):.1f}% "
          f"of its generation time")


if __name__ == "__main__":
    main()
