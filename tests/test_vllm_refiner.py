"""`OpenAIRefiner` against a real vLLM OpenAI-compatible server (vLLM's CPU build) serving the
synthetic task's warm-started tiny model: the continuation prompt as the project sends it goes
through `/v1/chat/completions`, replies are read as the server gives them (greedy, so a direct call
gives the same text), `max_tokens` cuts become counted `length` failures, concurrent calls equal
calls one at a time, the pre-training probe passes (and names a wrong model); a local SCOPE training
run rectifies through it and outlives an outage (the server made unreachable for step 2, through a
`Gate` in front of it: a client sees what a killed server gives, refused connections, without a second
one-minute vLLM start; tests/test_vllm_prm.py restarts its real server), and a verl CPU SCOPE run
(`scope-bench train --backend verl --device cpu --refiner-url ...`) rectifies through it.
One server for the module (~1 min to start on 2 cores).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import torch
from _vllm import Gate, served

from scope_bench.core.interfaces import RefineRequest
from scope_bench.engines.refiner import OpenAIRefiner, parse_chat_reply, refine_messages

torch.set_num_threads(1)
MODEL = "tiny-refiner"
# the refine prompt is ~400 tokens with the synthetic tokenizer; the model's context is 512
MAX_MODEL_LEN = 512
REQUESTS = [RefineRequest(f"Start with {a}. Add {b}, then multiply by 2.", f"Start with {a}.\n\n{a} + {b} = {a + b}.",
                          str(2 * (a + b))) for a, b in [(3, 4), (5, 1), (2, 9), (7, 7)]]


@pytest.fixture(scope="module")
def handle(tmp_path_factory):
    from scope_bench.synthetic.model import warm_start_model

    log = tmp_path_factory.mktemp("vllm-refiner") / "server.log"
    with served(warm_start_model(), log, "--served-model-name", MODEL, max_model_len=MAX_MODEL_LEN) as (_, srv):
        yield srv


@pytest.fixture
def server(handle):
    return handle.url + "/v1"


def served_requests(url: str) -> float:
    """Requests the server finished, from its Prometheus /metrics (`url` with or without /v1)."""
    with urllib.request.urlopen(f"{url.removesuffix('/v1')}/metrics", timeout=30) as resp:
        lines = resp.read().decode().splitlines()
    return sum(float(x.rsplit(" ", 1)[1]) for x in lines if x.startswith("vllm:request_success_total"))


def chat(url, body):
    req = urllib.request.Request(f"{url}/chat/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as resp:
        return json.loads(resp.read())


# the tiny model's greedy reply to this long prompt runs on (a `length` failure); vLLM's stop strings,
# sent through extra_body as a user would, give replies that end and parse
ENDS = {"stop": ["*", "=", "\n\n"], "include_stop_str_in_output": True}


@pytest.mark.parametrize("extra", [{}, ENDS])
def test_refiner_replies_are_the_servers(server, extra):
    refiner = OpenAIRefiner(server, MODEL, max_tokens=32, concurrency=4, retries=0, extra_body=extra)
    refiner.probe()
    results = refiner.refine(REQUESTS)
    texts = []
    for request, result in zip(REQUESTS, results):
        reply = chat(server, {"model": MODEL, "messages": refine_messages(request), "temperature": 0.0,
                              "max_tokens": 32, **extra})
        assert reply["choices"][0]["finish_reason"] in ("stop", "length")
        texts.append(reply["choices"][0]["message"]["content"])
        try:
            want = parse_chat_reply(reply)
        except Exception as err:  # noqa: BLE001 - the refiner must report the same failure
            assert result.suffix is None and result.error == err.kind
        else:
            assert (result.suffix, result.error) == (want, None)
    assert refiner.last_stats["calls"] == len(REQUESTS)
    if extra:
        assert any(r.suffix for r in results), texts


def test_max_tokens_cut_is_a_counted_length_failure(server):
    refiner = OpenAIRefiner(server, MODEL, max_tokens=2, retries=0)
    results = refiner.refine(REQUESTS[:2])
    assert [(r.suffix, r.error) for r in results] == [(None, "length")] * 2
    assert refiner.last_stats["error/length"] == 2


def test_concurrent_calls_equal_one_at_a_time(server):
    many = [RefineRequest(f"Start with {i}. Add {i}.", "", str(2 * i)) for i in range(8)]
    together = OpenAIRefiner(server, MODEL, max_tokens=16, concurrency=8, extra_body=ENDS).refine(many)
    alone = OpenAIRefiner(server, MODEL, max_tokens=16, concurrency=1, extra_body=ENDS)
    assert [alone.refine([r])[0] for r in many[::3]] == together[::3]


def test_probe_names_a_wrong_model(server):
    with pytest.raises(ValueError, match="answered a first call with 404"):
        OpenAIRefiner(server, "no-such-model").probe()


def test_training_run_rectifies_through_the_server_and_outlives_an_outage(handle, server, tmp_path):
    """Step 1 rectifies through the server; for step 2 it is unreachable (counted failures, the step
    still trains); for step 3 it is back on the same URL and used again. No step is lost."""
    from scope_bench.engines.local import load_train_config, train
    from scope_bench.synthetic import tiny_model

    gate = Gate(handle.port).open()
    cfg = load_train_config("scope", [
        f"model.path={tiny_model()}", f"run_dir={tmp_path / 'run'}", "threads=1", "train.steps=3",
        "train.batch_size=2", "rollout.n=2", "rollout.max_new_tokens=24", "data.n_train=8", "data.val=null",
        "refiner.kind=openai", f"refiner.url={gate.url}/v1", f"refiner.model={MODEL}", "refiner.max_tokens=64",
        "refiner.retries=1"])
    served = [served_requests(server)]

    def on_step(step, _):
        served.append(served_requests(server))
        if step == 1:
            gate.close()
        elif step == 2:
            gate.open()

    try:
        out = train(cfg, on_step=on_step)
    finally:
        gate.close()
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2, 3]
    for m in metrics:
        assert m["groups_gated"] > 0  # the random-init policy fails every group: each goes to the refiner
        assert m["groups_rectified"] + m["groups_skipped"] == m["groups_gated"]
    down = metrics[1]
    assert down["refiner_failures"] == down["groups_gated"]
    assert down["skip/refiner_error:connection"] == down["groups_gated"], down
    for m in (metrics[0], metrics[2]):  # up, and back up: every call answered (right, wrong or cut)
        assert m.get("skip/refiner_error:connection", 0) == 0
    assert served[1] > served[0] and served[2] == served[1] and served[3] > served[2]  # the server's own count


BIN = Path(sys.executable).parent


def test_verl_scope_run_rectifies_through_the_server(server, tmp_path):
    """One step of verl's RayPPOTrainer.fit on CPU (the embedded default: warm start, synthetic data,
    its PRM on loopback) with `--refiner-url` at the vLLM server: the gated groups go to it."""
    run_dir = tmp_path / "verl"
    before = served_requests(server)
    cmd = [str(BIN / "scope-bench"), "train", "--backend", "verl", "--device", "cpu", "--method", "scope",
           "--steps", "1", "--run-dir", str(run_dir), "--refiner-url", server, "--refiner", MODEL,
           "refiner.api_key_env=null", "refiner.max_tokens=64", "trainer.test_freq=-1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False,
                          env={**os.environ, "RAY_DEDUP_LOGS": "0"})
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    assert [r["step"] for r in rows] == [1]
    step = rows[0]
    assert step["groups_gated"] > 0 and step["groups_rectified"] + step["groups_skipped"] == step["groups_gated"]
    # the launcher's probe, then one call per gated group: all answered by this server (the tiny model's
    # replies run past refiner.max_tokens, so they end as counted `length` failures rather than rewrites)
    assert served_requests(server) - before >= 1 + step["groups_gated"]
