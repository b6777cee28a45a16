"""`VLLMPoolingPRM` against a real vLLM pooling server (vLLM's CPU build) serving a tiny
`Qwen2ForProcessRewardModel` built offline: its per-step probabilities equal `QwenMathPRM`'s in
process on the same checkpoint (which tests/test_prm.py checks against a hand computation), over
batches, concurrent calls and chats cut at the server's `--max-model-len`; the reply shape is read
from the real server; and a SCOPE training run scores its steps through it, the server killed after
step 1 and started again while step 2 waits for it (`prm.retry_s`). When the window is spent the run
stops with its checkpoint kept and resumes: that leg uses the project's loopback PRM server, which
stops and starts in milliseconds (a vLLM start is ~1 min on 2 cores).

One server for the module (~1 min to start on 2 cores), started again once by the fault test. Its checkpoint has attention heads of 32
dims (vLLM's CPU attention has no 8-dim kernel, tests/test_prm.py's tiny PRM has 8), and the step
tag is given with `--pooler-config` (vLLM's default is Qwen's `<extra_0>` id, 151651).
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.request

import pytest
import torch
from _vllm import START_TIMEOUT_S, served
from test_prm import chat_tokenizer

from scope_bench.engines.prm import (
    STEP_TAG,
    PRMUnreachable,
    QwenMathPRM,
    VLLMPoolingPRM,
    parse_pooling_reply,
    prm_messages,
)

torch.set_num_threads(1)
MAX_MODEL_LEN = 256  # _vllm.start_server's --max-model-len
QUESTIONS = ["What is 2+3?", "Compute 7*8.", "Is 9 prime?"]
STEPS = [["2+3 = 5.", "So \\boxed{5}."],
         ["7*8 = 54.", "Check: 7*8 = 7*7 + 7.", "That is 56, so \\boxed{56}."],
         ["9 = 3*3."]]
LONG = [f"Step {i}: add {i} to the total and carry on." for i in range(12)]  # > 256 tokens as a chat


def build_prm(out, hidden: int = 128):
    """A Qwen2.5-Math-PRM-shaped checkpoint: Qwen2 `model.*` weights, the `score.{0,2}` head (its
    last layer scaled so step probabilities differ clearly), the `<extra_0>` token, a chat template."""
    from safetensors.torch import save_file
    from transformers import Qwen2Config, Qwen2Model

    tokenizer = chat_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": [STEP_TAG]})
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512, architectures=["Qwen2ForProcessRewardModel"],
                         pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    body = Qwen2Model(config)
    head = torch.nn.Sequential(torch.nn.Linear(hidden, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 2))
    with torch.no_grad():
        head[2].weight.mul_(3.0)
    state = {f"model.{k}": v.contiguous() for k, v in body.state_dict().items()}
    state.update({f"score.{k}": v.contiguous() for k, v in head.state_dict().items()})
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    config.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out, tokenizer.convert_tokens_to_ids(STEP_TAG)


@pytest.fixture(scope="module")
def prm_dir(tmp_path_factory):
    return build_prm(tmp_path_factory.mktemp("vllm-prm"))


@pytest.fixture(scope="module")
def handle(prm_dir, tmp_path_factory):
    path, tag = prm_dir
    log = tmp_path_factory.mktemp("vllm-prm-log") / "server.log"
    with served(path, log, "--runner", "pooling", "--served-model-name", "tiny-prm",
                "--pooler-config", json.dumps({"step_tag_id": tag})) as (_, srv):
        yield srv


@pytest.fixture
def server(handle):
    if handle.proc is None:  # the fault test left it down
        handle.start()
    return handle.url


@pytest.fixture(scope="module")
def local(prm_dir):
    return QwenMathPRM(str(prm_dir[0]), device="cpu", batch_size=2, max_length=MAX_MODEL_LEN)


def test_real_reply_shape(server, prm_dir):
    body = {"model": "tiny-prm", "messages": prm_messages(QUESTIONS[1], STEPS[1])}
    req = urllib.request.Request(f"{server}/pooling", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        reply = json.loads(resp.read())
    rows = reply["data"][0]["data"]
    assert len(rows) == 3 and all(len(r) == 2 and sum(r) == pytest.approx(1.0, abs=1e-5) for r in rows)
    assert parse_pooling_reply(reply, 3) == [r[1] for r in rows]  # the positive class, one per step


def test_scores_equal_the_in_process_prm(server, local):
    client = VLLMPoolingPRM(server, "tiny-prm", concurrency=2, max_tokens=MAX_MODEL_LEN)
    got = client.score(QUESTIONS + ["no steps"], STEPS + [[]])
    want = local.score(QUESTIONS, STEPS)
    assert [len(s) for s in got] == [2, 3, 1, 0]
    for g, w in zip(got, want):
        assert g == pytest.approx(w, abs=1e-5)
    flat = [p for s in want for p in s]
    assert len({round(p, 4) for p in flat}) == len(flat)  # step-specific: a shifted score would show
    assert client.stats["calls"] == 3 and client.truncated_steps == 0  # one call per solution with steps


def test_concurrent_calls_match_one_at_a_time(server):
    questions = [f"What is {i} + {i}?" for i in range(16)]
    steps = [[f"{i} + {i} = {2 * i}.", f"So \\boxed{{{2 * i + (i % 3 == 0)}}}."] for i in range(16)]
    together = VLLMPoolingPRM(server, "tiny-prm", concurrency=16, max_tokens=MAX_MODEL_LEN).score(questions, steps)
    alone = VLLMPoolingPRM(server, "tiny-prm", concurrency=1, max_tokens=MAX_MODEL_LEN)
    one_by_one = [alone.score([q], [s])[0] for q, s in zip(questions[::5], steps[::5])]
    assert [t == pytest.approx(o, abs=1e-5) for t, o in zip(together[::5], one_by_one)] == [True] * len(one_by_one)


@pytest.mark.parametrize("max_tokens", [MAX_MODEL_LEN, -1])
def test_chat_longer_than_the_server_context_keeps_its_start(server, local, max_tokens):
    client = VLLMPoolingPRM(server, "tiny-prm", max_tokens=max_tokens)
    (got,) = client.score(["Sum the numbers."], [LONG])
    before = local.truncated_steps
    (want,) = local.score(["Sum the numbers."], [LONG])
    cut = local.truncated_steps - before
    assert 0 < cut < len(LONG) and client.truncated_steps == cut
    assert got == pytest.approx(want, abs=1e-5) and got[-cut:] == [0.0] * cut


def test_no_truncation_over_the_context_is_a_clear_error(server):
    client = VLLMPoolingPRM(server, "tiny-prm", max_tokens=None, retries=0)
    with pytest.raises(RuntimeError, match="PRM server .* failed"):
        client.score(["Sum the numbers."], [LONG])


def prm_run_config(tmp_path, url, *extra):
    from scope_bench.engines.local import load_train_config
    from scope_bench.synthetic import tiny_model

    return load_train_config("scope", [
        f"model.path={tiny_model()}", f"run_dir={tmp_path / 'run'}", "threads=1", "train.steps=3",
        "train.batch_size=2", "rollout.n=2", "rollout.max_new_tokens=24", "data.n_train=8", "data.val=null",
        "prm.kind=vllm", f"prm.url={url}", *extra])


def test_training_run_waits_for_a_restarted_server(handle, server, tmp_path, caplog):
    """A SCOPE run scores through the server; after step 1 the server is killed and started again
    (its own process, ~1 min): step 2's scoring waits for it within prm.retry_s and the run goes on,
    no step lost, the restarted server scoring steps 2 and 3."""
    from scope_bench.engines.local import train

    cfg = prm_run_config(tmp_path, server, "prm.path=tiny-prm", f"prm.max_tokens={MAX_MODEL_LEN}",
                         f"prm.retry_s={START_TIMEOUT_S}")
    assert served_requests(server) > 0  # the tests above were scored here
    restart = threading.Thread(target=handle.start)

    def on_step(step, metrics):
        if step == 1:
            handle.kill()
            restart.start()

    with caplog.at_level(logging.WARNING, logger="scope_bench.engines.prm"):
        out = train(cfg, on_step=on_step)
    restart.join()
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2, 3]
    assert all(m["groups_gated"] > 0 and m["time/stage/prm"] > 0 for m in metrics)
    assert served_requests(server) > 0  # a fresh server's counter: steps 2 and 3 were scored by it
    said = caplog.text
    assert "unreachable (connection" in said and f"retrying for up to {START_TIMEOUT_S:g} s (prm.retry_s)" in said
    assert "is back after" in said


def test_an_outage_longer_than_the_window_stops_the_run_resumably(tmp_path):
    """The window spent: the run stops at step 2 with a clear error, step 1's checkpoint kept; with the
    server back, `resume` trains steps 2 and 3 (the loopback PRM server: stopping and starting a vLLM
    server costs a minute, and the client sees the same refused connections)."""
    from scope_bench.engines.local import train
    from scope_bench.engines.local.checkpoint import list_checkpoints
    from scope_bench.engines.serve import SyntheticServer

    first = SyntheticServer(port=0).start()
    port = first.url.rsplit(":", 1)[1]
    cfg = prm_run_config(tmp_path, first.url, "prm.path=synthetic-prm", "prm.retry_s=2", "checkpoint.every=1")
    with pytest.raises(PRMUnreachable, match=r"unreachable for \d+ s \(prm.retry_s=2\).*resume the run"):
        train(cfg, on_step=lambda step, _: step == 1 and first.close())
    run = tmp_path / "run"
    assert [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()] == [1]
    assert len(list_checkpoints(run)) == 1
    with SyntheticServer(port=int(port)):
        cfg.resume = True
        train(cfg)
    assert [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]


def served_requests(url: str) -> float:
    """Requests the server finished, from its Prometheus /metrics."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=30) as resp:
        lines = resp.read().decode().splitlines()
    return sum(float(x.rsplit(" ", 1)[1]) for x in lines if x.startswith("vllm:request_success_total"))
