"""Data-parallel evaluation: 2 Ray replicas against 1, on a small random model, in the same run.

    .venv/bin/python benchmarks/bench_eval_dp.py [--problems 128] [--tokens 128] [--hidden 384] [--rounds 3]

Both runs evaluate the same problems through `evaluate(..., dp=N)` on a local Ray cluster started
once (so Ray's own start-up is not timed), 1 replica going through Ray as well; each replica is a
transformers model on one CPU thread.
Timed: from all replicas loaded to the last chunk graded and stored (`timings["generation_s"]`).
The two settings alternate for --rounds rounds and the medians are compared, so that a change in
the machine's load during the run does not favour one. The samples must be identical (greedy). On
2 idle cores the ideal is 2x; on a machine other jobs keep busy, much less.
"""

from __future__ import annotations

import argparse
import json
import statistics
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
             grading_workers=1, backend_kwargs={"batch_size": args.batch_size, "device": "cpu"}, dp=dp,
             ray_address="local", timings=timings)  # Ray is already up: this sends dp=1 through Ray too
    rows = sorted((r["problem_id"], r["response"]) for r in map(json.loads, (out / "results.jsonl").open()))
    return timings["generation_s"], rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", type=int, default=128)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--hidden", type=int, default=384)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3, help="1 and 2 replicas alternate this many times")
    ap.add_argument("--batch-size", type=int, default=32,
                    help="sequences a replica decodes together, the same for 1 and 2 replicas so that only "
                         "the parallelism differs")
    args = ap.parse_args()
    import ray

    times: dict[int, list[float]] = {1: [], 2: []}
    rows: dict[int, list] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ckpt = build_tiny_model(root / "model", hidden_size=args.hidden, layers=args.layers)
        data = root / "synthetic.jsonl"
        data.write_text("".join(json.dumps({"id": f"p{i}", "question": f"Problem {i}: what is {i} + {7 * i}?",
                                            "answer": str(8 * i)}) + "\n" for i in range(args.problems)))
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            for r in range(args.rounds):  # alternating, so a change in the machine's load hits both alike
                for dp in (1, 2):
                    seconds, rows[dp] = timed_run(ckpt, data, root / f"dp{dp}-{r}", dp, args)
                    times[dp].append(seconds)
        finally:
            ray.shutdown()
    one, two = statistics.median(times[1]), statistics.median(times[2])
    for dp, label in ((1, "1 replica "), (2, "2 replicas")):
        print(f"{label}: median {statistics.median(times[dp]):6.2f}s of {[round(t, 2) for t in times[dp]]} "
              f"({args.problems} problems x {args.tokens} tokens)")
    print(f"speed-up of 2 replicas over 1: {one / two:.2f}x (ideal 2x on 2 idle cores); "
          f"identical samples: {sum(a == b for a, b in zip(rows[1], rows[2]))}/{len(rows[1])}")


if __name__ == "__main__":
    main()
