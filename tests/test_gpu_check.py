"""`benchmarks/gpu_check.py` runs as a GPU host would run it, here on CPU: every part (trainer, HF
eval, the float32 parity step, bf16 steps) passes and the JSON summary is the last line."""

from __future__ import annotations

import json
import subprocess
import sys

from scope_bench.paths import PROJECT_ROOT


def test_gpu_check_runs_on_cpu(tmp_path):
    proc = subprocess.run([sys.executable, str(PROJECT_ROOT / "benchmarks" / "gpu_check.py"), "--device", "cpu",
                           "--steps", "1", "--problems", "2", "--bf16-steps", "2"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["ok"] and summary["heavy_imports"] == []  # no Ray, vLLM, verl or datasets
    assert summary["trainer"]["steps"] == 1 and summary["eval"]["samples"] == 4
    parity = summary["parity"]
    assert parity["compared"] == "cpu vs cpu" and parity["loss_diff"] == 0.0 and parity["grad_norm"][1] > 0
    assert summary["bf16"]["dtype"] == "torch.bfloat16" and len(summary["bf16"]["losses"]) == 2
