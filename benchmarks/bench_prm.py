"""In-process PRM (`QwenMathPRM`) on a tiny Qwen2.5-Math-PRM-shaped checkpoint: bf16 on the GPU
against fp32 on the CPU (same scores up to bf16 rounding), and scoring throughput of both.

    python benchmarks/bench_prm.py [--solutions 256] [--steps 8]

Needs torch and transformers only (no verl); on a machine without CUDA it measures the CPU alone.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import torch
from test_prm import build_tiny_prm

from scope_bench.engines.prm import QwenMathPRM


def timed_scores(prm: QwenMathPRM, questions, steps):
    prm.score(questions[:4], steps[:4])  # warm-up (kernels, allocator)
    if prm.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    scores = prm.score(questions, steps)
    if prm.device.type == "cuda":
        torch.cuda.synchronize()
    return scores, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--solutions", type=int, default=256)
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(4)
    questions = [f"What is {i} plus {i + 1}?" for i in range(args.solutions)]
    steps = [[f"Step {j}: add {i} and {j}, carry the {j % 3}." for j in range(1 + i % args.steps)]
             for i in range(args.solutions)]
    with tempfile.TemporaryDirectory() as tmp:
        path = build_tiny_prm(Path(tmp))
        cpu_scores, cpu_s = timed_scores(QwenMathPRM(str(path), device="cpu", batch_size=32), questions, steps)
        print(f"cpu fp32: {args.solutions} solutions in {cpu_s:.2f} s")
        if not torch.cuda.is_available():
            print("no CUDA device: GPU comparison skipped")
            return
        gpu = QwenMathPRM(str(path), device="cuda", batch_size=32)
        gpu_scores, gpu_s = timed_scores(gpu, questions, steps)
    flat_cpu = torch.tensor([p for s in cpu_scores for p in s])
    flat_gpu = torch.tensor([p for s in gpu_scores for p in s])
    assert [len(s) for s in gpu_scores] == [len(s) for s in steps], "step counts differ"
    diff = (flat_cpu - flat_gpu).abs().max().item()
    print(f"cuda {gpu.model.dtype}: {args.solutions} solutions in {gpu_s:.3f} s ({cpu_s / gpu_s:.1f}x the CPU); "
          f"max |p_gpu - p_cpu| = {diff:.4f} over {len(flat_cpu)} steps")


if __name__ == "__main__":
    main()
