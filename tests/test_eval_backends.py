"""Generation backends: transformers on a tiny model, the OpenAI-compatible client against a local
server, vLLM's missing-package error (real vLLM: tests/test_vllm_eval.py)."""

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import torch
from _tiny_model import build_tiny_model

from scope_bench.eval.backends import (
    GenerationRequest,
    HFBackend,
    OpenAIBackend,
    VLLMBackend,
    derive_seed,
    encode_prompt,
    pick_tokens,
)
from scope_bench.eval.tasks import Sampling

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return HFBackend(str(build_tiny_model(tmp_path_factory.mktemp("tiny"))), batch_size=4)


# ---------------------------------------------------------------- vLLM
# The real engine (vLLM's CPU build) is driven in tests/test_vllm_eval.py; the FakeLLM that stood in
# for it here is gone.

def test_vllm_missing_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # as if vLLM were not installed
    with pytest.raises(ImportError, match="vllm backend needs vLLM"):
        VLLMBackend("some/model")


# ---------------------------------------------------------------- transformers

def test_hf_samples_do_not_depend_on_batching(tiny):
    chat = GenerationRequest([{"role": "user", "content": "1+1?"}], Sampling(1.0, 0.9, 12, 3), seed=5)
    raw = GenerationRequest("The answer is", Sampling(1.0, 0.9, 12, 2), seed=6)
    together = tiny.generate([chat, raw])
    assert tiny.generate([chat]) == together[:1]
    tiny.batch_size = 1
    try:
        assert tiny.generate([raw, chat]) == together[::-1]
    finally:
        tiny.batch_size = 4
    texts = [g.text for g in together[0]]
    assert len(set(texts)) > 1  # different samples of one prompt differ
    assert all(g.n_tokens <= 12 and g.finish_reason in ("stop", "length") for gens in together for g in gens)
    other_seed = tiny.generate([GenerationRequest(chat.prompt, chat.sampling, seed=99)])
    assert other_seed[0] != together[0]


def test_hf_greedy_matches_transformers_generate(tiny):
    ids = encode_prompt(tiny.tokenizer, "The answer is")
    ours = tiny.sample([ids], [0], Sampling(0.0, 1.0, 10, 1))[0]
    ref = tiny.model.generate(torch.tensor([ids]), max_new_tokens=10, do_sample=False,
                              pad_token_id=tiny.pad_id)[0, len(ids):].tolist()
    ref = [t for t in ref if t not in tiny.stop_ids]
    assert tiny.tokenizer.decode(ref, skip_special_tokens=True) == ours.text


def test_pick_tokens_top_p_keeps_only_the_nucleus():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    gens = [torch.Generator().manual_seed(i) for i in range(1)]
    seen = {int(pick_tokens(logits, Sampling(1.0, 0.7, 1, 1), gens)) for _ in range(200)}
    assert seen == {0, 1}
    assert int(pick_tokens(logits, Sampling(0.0, 1.0, 1, 1), gens)) == 0


def test_checkpoint_that_does_not_load(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not load"):
        HFBackend(str(tmp_path / "nothing-here"))


def test_derive_seed_is_stable():
    assert derive_seed(0, "math500", "p1") == derive_seed(0, "math500", "p1")
    assert derive_seed(0, "math500", "p1") != derive_seed(1, "math500", "p1")


# ---------------------------------------------------------------- OpenAI-compatible server

def test_openai_backend_against_a_local_server():
    seen = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append((self.path, body))
            chat = self.path.endswith("/chat/completions")
            choices = [{"index": j, "finish_reason": "stop",
                        **({"message": {"content": f"chat{j}"}} if chat else {"text": f"raw{j}"})}
                       for j in reversed(range(body["n"]))]
            data = json.dumps({"choices": choices, "usage": {"completion_tokens": 4 * body["n"]}}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        backend = OpenAIBackend("m", base_url=f"http://127.0.0.1:{server.server_port}/v1", concurrency=2)
        out = backend.generate([GenerationRequest([{"role": "user", "content": "hi"}], Sampling(0.6, 0.95, 9, 3), 1),
                                GenerationRequest("raw", Sampling(0.0, 1.0, 9, 1), 2)])
    finally:
        server.shutdown()
        server.server_close()
    assert [g.text for g in out[0]] == ["chat0", "chat1", "chat2"] and out[0][0].n_tokens == 4
    assert [g.text for g in out[1]] == ["raw0"]
    routes = {path: body for path, body in seen}
    chat_body = routes["/v1/chat/completions"]
    assert (chat_body["n"], chat_body["seed"], chat_body["max_tokens"], chat_body["model"]) == (3, 1, 9, "m")
    assert routes["/v1/completions"]["prompt"] == "raw"
