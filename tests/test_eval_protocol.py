"""The sampling protocol: LUFFY's settings by default on the paper's benchmarks, explicit flags over it,
recorded per task in summary.json, and a report table that mixes protocols says so."""

import json

import pytest

from scope_bench.cli import main
from scope_bench.eval import evaluate, load_task
from scope_bench.eval.backends import Generation
from scope_bench.eval.protocol import DEFAULT_PROTOCOL, apply_protocol
from scope_bench.reports.runs import load_eval_run
from scope_bench.reports.tables import table1


def resolved(names, protocol=DEFAULT_PROTOCOL, **overrides):
    tasks, labels = apply_protocol([load_task(n) for n in names], protocol, overrides)
    return {t.name: t.sampling.to_dict() for t in tasks}, labels


def test_luffy_is_the_default_on_the_paper_benchmarks_only():
    sampling, labels = resolved(["math500", "aime24", "synthetic"])
    assert DEFAULT_PROTOCOL == "luffy"
    assert sampling["math500"] == {"temperature": 0.6, "top_p": 1.0, "max_tokens": 8192, "n": 1}
    assert sampling["aime24"] == {"temperature": 0.6, "top_p": 1.0, "max_tokens": 8192, "n": 32}  # n: the task's
    assert sampling["synthetic"] == load_task("synthetic").sampling.to_dict()  # the demo's task keeps its own
    assert labels == {"math500": "luffy", "aime24": "luffy",
                      "synthetic": "temperature=1.0, top_p=1.0, max_tokens=128"}


def test_yaml_settings_are_replaced_and_flags_override_the_protocol(tmp_path):
    tasks_dir = tmp_path / "tasks"
    tasks_dir.mkdir()
    (tasks_dir / "_groups.yaml").write_text("all: [t]\n")
    (tasks_dir / "t.yaml").write_text(
        "local: {path: t.jsonl}\nfields: {problem: q, answer: a}\nanswer: {kind: math}\nmetric: pass@1\n"
        "prompt: {user: '{problem}'}\nsampling: {temperature: 0.6, top_p: 0.95, max_tokens: 512, n: 4}\n")

    def resolve(protocol, **overrides):
        [task], labels = apply_protocol([load_task("t", tasks_dir)], protocol, overrides, tasks_dir)
        return task.sampling.to_dict(), labels["t"]

    assert resolve("luffy") == ({"temperature": 0.6, "top_p": 1.0, "max_tokens": 8192, "n": 4}, "luffy")
    assert resolve("luffy", top_p=0.95, n=None) == ({"temperature": 0.6, "top_p": 0.95, "max_tokens": 8192, "n": 4},
                                                    "temperature=0.6, top_p=0.95, max_tokens=8192")
    assert resolve("luffy", top_p=1.0)[1] == "luffy"  # the protocol's own value changes nothing
    assert resolve("task") == ({"temperature": 0.6, "top_p": 0.95, "max_tokens": 512, "n": 4},
                               "temperature=0.6, top_p=0.95, max_tokens=512")
    with pytest.raises(ValueError, match="unknown sampling protocol 'lufy'"):
        resolve("lufy")


class Recorder:
    name = "recorder"

    def __init__(self):
        self.sampling = []

    def has_chat_template(self):
        return True

    def generate(self, requests):
        self.sampling += [r.sampling for r in requests]
        return [[Generation("\\boxed{2}", 3, "stop")] * r.sampling.n for r in requests]


def run(tmp_path, name, **kw):
    data = tmp_path / "math500.jsonl"
    data.write_text("".join(json.dumps({"unique_id": f"u{i}", "problem": f"{i}+2-{i}?", "answer": "2"}) + "\n"
                            for i in range(2)))
    backend = Recorder()
    evaluate(name, "math500", backend=backend, out_dir=tmp_path / name, data_paths={"math500": str(data)},
             progress=False, grading_workers=1, **kw)
    return backend, json.loads((tmp_path / name / "summary.json").read_text())


def test_summary_records_the_protocol_and_the_report_flags_a_mix(tmp_path):
    backend, summary = run(tmp_path, "scope-a")
    assert {(s.temperature, s.top_p, s.max_tokens) for s in backend.sampling} == {(0.6, 1.0, 8192)}
    assert summary["protocol"]["name"] == "luffy" and summary["protocol"]["overrides"] == {}
    assert summary["tasks"]["math500"]["sampling"]["protocol"] == "luffy"
    run(tmp_path, "grpo-a")
    same = table1([load_eval_run(tmp_path / d) for d in ("scope-a", "grpo-a")], reference=False)
    assert not any("protocol" in note for note in same.notes)

    _, summary = run(tmp_path, "grpo-b", top_p=0.95)
    assert summary["tasks"]["math500"]["sampling"]["top_p"] == 0.95
    mixed = table1([load_eval_run(tmp_path / d) for d in ("scope-a", "grpo-a", "grpo-b")], reference=False)
    [note] = [n for n in mixed.notes if "protocol" in n]
    assert "luffy: scope-a, grpo-a" in note and "top_p=0.95, max_tokens=8192: grpo-b" in note


def test_cli_help_documents_protocol_and_data_parallel(capsys):
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for flag in ("--protocol", "--dp", "--ray-address", "temperature 0.6, top_p 1.0, 8192"):
        assert flag in text
