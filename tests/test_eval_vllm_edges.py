"""vLLM edge cases found in vLLM's source: greedy n > 1, finish reasons other than stop/length, and the
SamplingParams arguments the backend sends, checked against vLLM's own class (the CPU build that
`make setup-test` installs; the copy recorded from vllm/sampling_params.py that stood in for it is gone).

FakeLLM stays for two cases the real engine cannot give on CPU in test time: every shipped task's
sampling (up to 32 samples of up to 32k tokens per prompt; only its SamplingParams matter here, and
they are vLLM's real ones), and the finish reasons "abort", "error" and "repetition", which vLLM
reports only for a request aborted or failed inside the engine. The real engine's samples, seeds,
finish reasons and greedy n > 1 are in tests/test_vllm_eval.py.
"""

import json
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest
import torch
import vllm
from _tiny_model import build_tiny_model

from scope_bench.eval import evaluate
from scope_bench.eval.backends import Generation, GenerationRequest, HFBackend, OpenAIBackend, VLLMBackend
from scope_bench.eval.protocol import PROTOCOLS, apply_protocol
from scope_bench.eval.runner import format_summary
from scope_bench.eval.tasks import Sampling, available_tasks, load_task

torch.set_num_threads(1)


def accepted_fields() -> set[str]:
    return {n for n in vllm.SamplingParams.__struct_fields__ if not n.startswith("_")}


@dataclass
class FakeLLM:
    """Stands in for vllm.LLM; completion j of each prompt ends with reasons[j % len(reasons)]."""

    tokenizer: object
    reasons: tuple = ("stop",)
    calls: list = field(default_factory=list)

    def get_tokenizer(self):
        return self.tokenizer

    def generate(self, prompts, params, use_tqdm=True):
        self.calls.append(params)
        def completion(p, j):
            return SimpleNamespace(text=f"seed{p.seed} s{j}", token_ids=[1, 2],
                                   finish_reason=self.reasons[j % len(self.reasons)])

        return [SimpleNamespace(outputs=[completion(p, j) for j in range(p.n)]) for p in params]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return HFBackend(str(build_tiny_model(tmp_path_factory.mktemp("tiny"))), batch_size=4)


def test_backend_sends_only_arguments_vllm_accepts(tiny):
    seen = []
    backend = VLLMBackend("unused", llm=FakeLLM(tiny.tokenizer), params_cls=lambda **kw: seen.append(kw))
    backend.build_params(GenerationRequest("x", Sampling(0.6, 1.0, 8192, 32), seed=3))
    assert set(seen[0]) <= accepted_fields(), set(seen[0]) - accepted_fields()
    assert seen[0] == {"n": 32, "temperature": 0.6, "top_p": 1.0, "max_tokens": 8192, "seed": 3}
    params = vllm.SamplingParams(**seen[0])
    assert (params.n, params.temperature, params.max_tokens, params.seed) == (32, 0.6, 8192, 3)


@pytest.mark.parametrize("protocol", sorted(PROTOCOLS))
def test_every_task_and_protocol_passes_vllm_validation(tiny, protocol):
    """Every shipped task's sampling, under each protocol and at temperature 0 (greedy with AIME's
    n=32, which vLLM refuses if sent as is), builds valid SamplingParams."""
    llm = FakeLLM(tiny.tokenizer)
    backend = VLLMBackend("unused", llm=llm, params_cls=vllm.SamplingParams)
    for temperature in (None, 0.0):
        tasks, _ = apply_protocol([load_task(t) for t in available_tasks()], protocol,
                                  {"temperature": temperature})
        out = backend.generate([GenerationRequest("q", t.sampling, seed=i) for i, t in enumerate(tasks)])
        assert [len(g) for g in out] == [t.sampling.n for t in tasks]
    assert any(p.n == 32 for p in llm.calls[0]) and all(p.n == 1 for p in llm.calls[1])


def test_vllm_refuses_greedy_n_so_the_backends_send_n_1():
    from vllm.exceptions import VLLMValidationError

    with pytest.raises(VLLMValidationError, match="n must be 1 when using greedy sampling, got 4"):
        vllm.SamplingParams(n=4, temperature=0.0)
    with pytest.raises(TypeError, match="use_beam_search"):
        vllm.SamplingParams(use_beam_search=True)


# ---------------------------------------------------------------- greedy n > 1: once, then repeated
# (on the real vLLM engine: tests/test_vllm_eval.py)

def test_greedy_n_is_drawn_once_and_repeated_on_hf(tiny, monkeypatch):
    rows = []
    real = tiny.sample
    monkeypatch.setattr(tiny, "sample", lambda prompts, seeds, s: rows.append(len(prompts))
                        or real(prompts, seeds, s))
    chat = [{"role": "user", "content": "1+1?"}]
    many = tiny.generate([GenerationRequest(chat, Sampling(0.0, 1.0, 8, 3), seed=5)])[0]
    one = tiny.generate([GenerationRequest(chat, Sampling(0.0, 1.0, 8, 1), seed=5)])[0]
    assert rows == [1, 1]  # one decoded row for three greedy samples
    assert many == one * 3


def test_greedy_n_is_drawn_once_and_repeated_on_openai(monkeypatch):
    sent = []
    monkeypatch.setattr(OpenAIBackend, "_one", lambda self, r: sent.append(r.sampling.n)
                        or [Generation(f"t{j}", 1, "stop") for j in range(r.sampling.n)])
    out = OpenAIBackend("m", concurrency=1).generate([GenerationRequest("q", Sampling(0.0, 1.0, 5, 3), seed=1)])
    assert sent == [1] and [g.text for g in out[0]] == ["t0"] * 3


# ---------------------------------------------------------------- finish reasons as they are

def test_vllm_finish_reasons_are_recorded_as_they_are(tiny):
    reasons = ("stop", "length", "abort", "error", "repetition")
    backend = VLLMBackend("unused", llm=FakeLLM(tiny.tokenizer, reasons), params_cls=vllm.SamplingParams)
    out = backend.generate([GenerationRequest("q", Sampling(0.6, 1.0, 10, 5), seed=1)])
    assert [g.finish_reason for g in out[0]] == list(reasons)


class ScriptedBackend:
    """Answers every sample correctly; `gave_up` maps (problem text, sample) to a finish reason."""

    name = "scripted"

    def __init__(self, answers, gave_up=None):
        self.answers, self.gave_up, self.asked = answers, gave_up or {}, []

    def has_chat_template(self):
        return True

    def generate(self, requests):
        out = []
        for r in requests:
            problem = next(p for p in self.answers if r.prompt[-1]["content"].startswith(p))
            self.asked.append(problem)
            text = f"so \\boxed{{{self.answers[problem]}}}"
            out.append([Generation(text, 5, self.gave_up.get((problem, j), "stop")) for j in range(r.sampling.n)])
        return out


def test_aborted_samples_score_zero_are_counted_and_drawn_again(tmp_path):
    rows = [{"id": f"p{i}", "question": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(3)]
    data = tmp_path / "synthetic.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    answers = {r["question"]: r["answer"] for r in rows}
    kw = {"out_dir": tmp_path / "run", "data_paths": {"synthetic": str(data)}, "n": 2, "progress": False,
          "grading_workers": 1}
    gave_up = {(rows[0]["question"], 1): "abort", (rows[1]["question"], 0): "error",
               (rows[2]["question"], 1): "repetition"}
    summary = evaluate("m", "synthetic", backend=ScriptedBackend(answers, gave_up), **kw)
    task = summary["tasks"]["synthetic"]
    assert task["finish_reasons"] == {"abort": 1, "error": 1, "repetition": 1, "stop": 3}
    assert task["score"] == pytest.approx(100 * 4 / 6)  # the right text of an aborted sample is not graded
    assert "2 samples not finished by the engine" in format_summary(summary)
    lines = [json.loads(x) for x in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    aborted = next(r for r in lines if r["finish_reason"] == "abort")
    assert (aborted["correct"], aborted["prediction"]) == (0, None)
    assert next(r for r in lines if r["finish_reason"] == "repetition")["correct"] == 1  # finished: graded

    again = ScriptedBackend(answers)
    summary = evaluate("m", "synthetic", backend=again, **kw)
    assert sorted(again.asked) == sorted([rows[0]["question"], rows[1]["question"]])  # only the two not done
    assert summary["tasks"]["synthetic"]["score"] == 100.0
    keys = [(r["problem_id"], r["sample"]) for r in map(json.loads, (tmp_path / "run" / "results.jsonl").open())]
    assert sorted(keys) == sorted({(f"p{i}", j) for i in range(3) for j in range(2)})
