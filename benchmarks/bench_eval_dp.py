"""Data-parallel evaluation: 2 Ray replicas against 1, on a small random model, in the same run.

    .venv/bin/python benchmarks/bench_eval_dp.py [--problems 32] [--tokens 48] [--hidden 256] [--layers 4]

Both runs evaluate the same problems through `evaluate(..., dp=N)` on a local Ray cluster started
once (so Ray's own start-up is not timed), 1 replica going through Ray as well; each replica is a
transformers model on one CPU thread.
Timed: generation, from all replicas loaded to the last chunk stored (the summary's `generation_s`).
The samples must be identical (greedy), and the speed-up is printed. On 2 cores the ideal is 2x.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _tiny_model import build_tiny_model

from scope_bench.eval import evaluate


def timed_run(ckpt: Path, data: Path, out: Path, dp: int, args) -> tuple[float, list]:
    timings: dict[str, float] = {}
    evaluate(str(ckpt), "synthetic", backend="hf", out_dir=out, data_paths={"synthetic": str(data)}, n=1,
             temperature=0.0, max_tokens=args.tokens, chunk_size=args.problems, progress=False,
             grading_workers=1, backend_kwargs={"batch_size": args.problems, "device": "cpu"}, dp=dp,
             ray_address="local", timings=timings)  # Ray is already up: this sends dp=1 through Ray too
    rows = sorted((r["problem_id"], r["response"]) for r in map(json.loads, (out / "results.jsonl").open()))
    return timings["generation_s"], rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    args = ap.parse_args()
    import ray

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ckpt = build_tiny_model(root / "model", hidden_size=args.hidden, layers=args.layers)
        data = root / "synthetic.jsonl"
        data.write_text("".join(json.dumps({"id": f"p{i}", "question": f"Problem {i}: what is {i} + {7 * i}?",
                                            "answer": str(8 * i)}) + "\n" for i in range(args.problems)))
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            one, rows1 = timed_run(ckpt, data, root / "dp1", 1, args)
            two, rows2 = timed_run(ckpt, data, root / "dp2", 2, args)
        finally:
            ray.shutdown()
    print(f"1 replica : {one:6.2f}s generating {args.problems} problems x {args.tokens} tokens")
    print(f"2 replicas: {two:6.2f}s")
    print(f"speed-up of 2 replicas over 1: {one / two:.2f}x (ideal 2x on 2 cores); "
          f"identical samples: {sum(a == b for a, b in zip(rows1, rows2))}/{len(rows1)}")


if __name__ == "__main__":
    main()
