"""`scope-bench eval` with a new-token budget the model's context cannot hold (LUFFY's 8,192 on
Qwen2.5-Math-7B's 4,096): a warning, and summary.json records the budget the context leaves."""

import json
import subprocess
import sys
from pathlib import Path

from _tiny_model import build_tiny_model

_SCRIPT = Path(sys.executable).with_name("scope-bench")
CLI = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "scope_bench.cli"]


def test_a_budget_past_the_context_is_warned_about_and_recorded(tmp_path):
    ckpt = build_tiny_model(tmp_path / "tiny")
    config = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 48}))  # a short context
    data = tmp_path / "synthetic.jsonl"
    data.write_text(json.dumps({"id": "p0", "question": "What is 1 + 2?", "answer": "3"}) + "\n")

    def evaluate(out: str, *extra: str):
        cmd = [*CLI, "eval", "--ckpt", str(ckpt), "--tasks", "synthetic", "--data", f"synthetic={data}", "--n", "1",
               "--temperature", "0", "--device", "cpu", "--grading-workers", "1", "--out", str(tmp_path / out),
               *extra]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stderr, json.loads((tmp_path / out / "summary.json").read_text())

    err, summary = evaluate("long", "--max-tokens", "64")
    assert "max_tokens=64 does not fit the model's context of 48 tokens" in err
    assert summary["budget"] == {"max_tokens": 64, "context": 48, "effective_max_tokens": 47}
    assert summary["tasks"]["synthetic"]["sampling"]["max_tokens"] == 64  # what was asked stays recorded too

    err, summary = evaluate("fits", "--max-tokens", "8")
    assert "does not fit" not in err and summary["budget"]["effective_max_tokens"] == 8


def test_luffys_context_extension_lifts_the_limit_and_is_recorded(tmp_path):
    """`--context-extension luffy` evaluates with rope_theta 40000 and 16,384 positions (LUFFY's change
    for Qwen2.5-Math-7B): the same over-long budget is no longer cut, and the summary says what was used."""
    from scope_bench.eval.backends import HFBackend

    ckpt = build_tiny_model(tmp_path / "tiny")
    config = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 48}))
    data = tmp_path / "synthetic.jsonl"
    data.write_text(json.dumps({"id": "p0", "question": "What is 1 + 2?", "answer": "3"}) + "\n")
    cmd = [*CLI, "eval", "--ckpt", str(ckpt), "--tasks", "synthetic", "--data", f"synthetic={data}", "--n", "1",
           "--temperature", "0", "--device", "cpu", "--grading-workers", "1", "--out", str(tmp_path / "ext"),
           "--max-tokens", "64", "--context-extension", "luffy"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "does not fit" not in done.stderr
    summary = json.loads((tmp_path / "ext" / "summary.json").read_text())
    assert summary["budget"] == {"max_tokens": 64, "context": 16384, "effective_max_tokens": 64}
    assert summary["context_extension"] == {"name": "luffy", "rope_theta": 40000.0, "max_position_embeddings": 16384}

    model = HFBackend(str(ckpt), device="cpu", context_extension="luffy").model  # what the backend really loads
    rope = getattr(model.config, "rope_parameters", None) or {"rope_theta": model.config.rope_theta}
    assert rope["rope_theta"] == 40000.0 and model.config.max_position_embeddings == 16384
    plain = HFBackend(str(ckpt), device="cpu").model
    assert plain.config.max_position_embeddings == 48
