"""vLLM edge cases found in vLLM's source: greedy n > 1, finish reasons other than stop/length, and the
SamplingParams arguments the backend sends, checked against vLLM's own signature and validation.

vLLM is not installed here: `SamplingParams` is checked against the real class where vLLM imports, and
otherwise against RecordedSamplingParams, a copy of the fields and of the validation the backend can
trip, recorded from vllm/sampling_params.py in vllm-project/vllm as stored by this project's source
index (commit 00388f6573ccfcffad607b8c9ecdf341a4669ceb; the v0.24.0 tag itself could not be fetched
here, the repository snapshot being too large, so that commit stands in for it).
"""

import importlib.util
import json
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest
import torch
from _tiny_model import build_tiny_model

from scope_bench.eval import evaluate
from scope_bench.eval.backends import Generation, GenerationRequest, HFBackend, OpenAIBackend, VLLMBackend
from scope_bench.eval.protocol import PROTOCOLS, apply_protocol
from scope_bench.eval.runner import format_summary
from scope_bench.eval.tasks import Sampling, available_tasks, load_task

torch.set_num_threads(1)
HAVE_VLLM = importlib.util.find_spec("vllm") is not None

# vllm/sampling_params.py, class SamplingParams(msgspec.Struct): every field, in source order
RECORDED_FIELDS = (
    "n", "presence_penalty", "frequency_penalty", "repetition_penalty", "temperature", "top_p", "top_k", "min_p",
    "seed", "stop", "stop_token_ids", "ignore_eos", "max_tokens", "min_tokens", "logprobs", "prompt_logprobs",
    "prompt_logprob_token_ids", "prompt_logprob_start", "logprob_token_ids", "flat_logprobs", "detokenize",
    "skip_special_tokens", "spaces_between_special_tokens", "include_stop_str_in_output", "output_kind",
    "stream_interval", "skip_clone", "output_text_buffer_length", "_eos_token_id", "_all_stop_token_ids",
    "structured_outputs", "logit_bias", "allowed_token_ids", "extra_args", "bad_words", "_bad_words_token_ids",
    "skip_reading_prefix_cache", "thinking_token_budget", "repetition_detection", "routed_experts_prompt_start",
    "trace_decode_token_ids",
)
SAMPLING_EPS = 1e-5  # vllm/sampling_params.py: _SAMPLING_EPS


class RecordedSamplingParams:
    """Keyword arguments as the recorded SamplingParams takes them, with its checks that concern n,
    temperature, top_p and max_tokens (`_verify_args`, `_verify_greedy_sampling`), same messages."""

    def __init__(self, **kwargs):
        unknown = set(kwargs) - {f for f in RECORDED_FIELDS if not f.startswith("_")}
        if unknown:
            raise TypeError(f"SamplingParams got unexpected keyword arguments {sorted(unknown)}")
        self.__dict__.update({"n": 1, "temperature": 1.0, "top_p": 1.0, "max_tokens": 16, "seed": None}, **kwargs)
        if not isinstance(self.n, int) or self.n < 1:
            raise ValueError(f"n must be at least 1, got {self.n}.")
        if not 0.0 <= self.temperature <= 2.0:
            raise ValueError(f"temperature must be in [0, 2], got {self.temperature}.")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}.")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {self.max_tokens}.")
        if self.temperature < SAMPLING_EPS and self.n > 1:
            raise ValueError(f"n must be 1 when using greedy sampling, got {self.n}.")


def sampling_params_class():
    if HAVE_VLLM:
        import vllm

        return vllm.SamplingParams
    return RecordedSamplingParams


def accepted_fields() -> set[str]:
    cls = sampling_params_class()
    names = getattr(cls, "__struct_fields__", None) or RECORDED_FIELDS
    return {n for n in names if not n.startswith("_")}


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


@pytest.mark.parametrize("protocol", sorted(PROTOCOLS))
def test_every_task_and_protocol_passes_vllm_validation(tiny, protocol):
    """Every shipped task's sampling, under each protocol and at temperature 0 (greedy with AIME's
    n=32, which vLLM refuses if sent as is), builds valid SamplingParams."""
    llm = FakeLLM(tiny.tokenizer)
    backend = VLLMBackend("unused", llm=llm, params_cls=sampling_params_class())
    for temperature in (None, 0.0):
        tasks, _ = apply_protocol([load_task(t) for t in available_tasks()], protocol,
                                  {"temperature": temperature})
        out = backend.generate([GenerationRequest("q", t.sampling, seed=i) for i, t in enumerate(tasks)])
        assert [len(g) for g in out] == [t.sampling.n for t in tasks]
    assert any(p.n == 32 for p in llm.calls[0]) and all(p.n == 1 for p in llm.calls[1])


def test_recorded_copy_refuses_greedy_n_like_vllm():
    with pytest.raises(ValueError, match="n must be 1 when using greedy sampling, got 4"):
        RecordedSamplingParams(n=4, temperature=0.0)
    with pytest.raises(TypeError, match="use_beam_search"):
        RecordedSamplingParams(use_beam_search=True)


# ---------------------------------------------------------------- greedy n > 1: once, then repeated

def test_greedy_n_is_drawn_once_and_repeated_on_vllm(tiny):
    llm = FakeLLM(tiny.tokenizer)
    backend = VLLMBackend("unused", llm=llm, params_cls=RecordedSamplingParams)
    out = backend.generate([GenerationRequest("q", Sampling(0.0, 1.0, 10, 4), seed=1),
                            GenerationRequest("q", Sampling(0.6, 1.0, 10, 3), seed=2)])
    assert [p.n for p in llm.calls[0]] == [1, 3]
    assert [g.text for g in out[0]] == ["seed1 s0"] * 4
    assert [g.text for g in out[1]] == ["seed2 s0", "seed2 s1", "seed2 s2"]


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
    backend = VLLMBackend("unused", llm=FakeLLM(tiny.tokenizer, reasons), params_cls=RecordedSamplingParams)
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
