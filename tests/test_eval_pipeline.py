"""The whole harness: canned generations graded for real, resume after a kill, the CLI end to end."""

import json

import pytest
import torch
from _tiny_model import build_tiny_model

from scope_bench.cli import main
from scope_bench.eval import HFBackend, evaluate, load_problems, load_task
from scope_bench.eval.backends import Generation
from scope_bench.eval.metrics import pass_at_k
from scope_bench.paths import SHARED_DATA_DIR

torch.set_num_threads(1)
BENCH = SHARED_DATA_DIR / "benchmarks"
pytestmark = pytest.mark.skipif(not BENCH.exists(), reason=f"shared benchmark data not at {BENCH}")


class CannedBackend:
    """Answers each prompt with responses looked up by the problem text inside it."""

    name = "canned"

    def __init__(self, responses):
        self.responses = responses  # problem text -> list of responses, one per sample
        self.calls = 0

    def has_chat_template(self):
        return True

    def generate(self, requests):
        self.calls += 1
        out = []
        for r in requests:
            user = r.prompt[-1]["content"]
            texts = next(v for k, v in self.responses.items() if user.startswith(k))
            out.append([Generation(texts[j], 10, "stop") for j in range(r.sampling.n)])
        return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return HFBackend(str(build_tiny_model(tmp_path_factory.mktemp("tiny"))), batch_size=16)


def read_results(path):
    return sorted((r["task"], r["problem_id"], r["sample"], r["response"], r["correct"])
                  for r in map(json.loads, path.read_text().splitlines()))


def test_canned_math500_solutions_give_the_expected_accuracy(tmp_path):
    """Every MATH-500 reference solution is right, except on every fourth problem where it is replaced
    by a wrong boxed answer: the pipeline must score exactly 75%."""
    problems, _ = load_problems(load_task("math500"), BENCH)
    rows = {json.loads(x)["problem"]: json.loads(x) for x in (BENCH / "qwen/math500.jsonl").open()}
    canned = {p.problem: [rows[p.problem]["solution"] if i % 4 else "So the answer is $\\boxed{-987654}$."]
              for i, p in enumerate(problems)}
    summary = evaluate("canned", "math500", backend=CannedBackend(canned), out_dir=tmp_path,
                       data_dir=BENCH, progress=False, chunk_size=128)
    task = summary["tasks"]["math500"]
    assert (task["metric"], task["n_problems"], task["samples_per_problem"]) == ("pass@1", 500, 1)
    assert task["score"] == pytest.approx(75.0)
    results = [json.loads(x) for x in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert len(results) == 500 and {r["sample"] for r in results} == {0}
    first = next(r for r in results if r["problem_id"] == problems[1].id)
    assert first["correct"] == 1 and first["prediction"] and first["ground_truth"] == problems[1].answer


def test_canned_avg_at_k_and_choice_tasks(tmp_path):
    """Problem i of AIME24 gets i % 5 correct samples out of 4 (capped): Avg@4 and pass@k follow."""
    aime, _ = load_problems(load_task("aime24"), BENCH)
    arc, _ = load_problems(load_task("arc_c"), BENCH)
    arc = arc[:40]
    canned = {}
    for i, p in enumerate(aime):
        c = min(i % 5, 4)
        canned[p.problem] = [f"\\boxed{{{p.answer}}}" if j < c else "\\boxed{1000001}" for j in range(4)]
    for i, p in enumerate(arc):
        wrong = "A" if p.answer != "A" else "B"
        canned[p.problem] = [f"The answer is \\boxed{{{p.answer if i % 2 else wrong}}}"] * 4
    summary = evaluate("canned", "aime24,arc_c", backend=CannedBackend(canned), out_dir=tmp_path,
                       data_dir=BENCH, limit=40, n=4, progress=False)
    counts = [min(i % 5, 4) for i in range(len(aime))]
    t = summary["tasks"]["aime24"]
    assert t["metric"] == "avg@4"
    assert t["score"] == pytest.approx(100 * sum(c / 4 for c in counts) / len(counts))
    for k in (1, 2, 3, 4):
        expected = 100 * sum(pass_at_k(4, c, k) for c in counts) / len(counts)
        assert t["pass@k"][str(k)] == pytest.approx(expected)
    assert summary["tasks"]["arc_c"]["score"] == pytest.approx(50.0)
    assert summary["groups"]["math-id"]["tasks"] == ["aime24"]
    assert summary["groups"]["all"]["score"] == pytest.approx((t["score"] + 50.0) / 2)


class KilledAfter:
    """Wraps a backend and dies (like Ctrl-C) on its `calls`-th generate call."""

    def __init__(self, inner, calls):
        self.inner, self.left = inner, calls

    def has_chat_template(self):
        return self.inner.has_chat_template()

    def generate(self, requests):
        self.left -= 1
        if self.left == 0:
            raise KeyboardInterrupt
        return self.inner.generate(requests)


def test_killed_evaluation_resumes_to_the_same_results(tmp_path, tiny):
    kw = {"data_dir": BENCH, "limit": 5, "n": 3, "max_tokens": 6, "temperature": 1.0, "chunk_size": 2,
          "progress": False}
    full = tmp_path / "full"
    evaluate("tiny", "aime24,math500", backend=tiny, out_dir=full, **kw)

    part = tmp_path / "part"
    with pytest.raises(KeyboardInterrupt):
        evaluate("tiny", "aime24,math500", backend=KilledAfter(tiny, 3), out_dir=part, **kw)
    with (part / "results.jsonl").open("a") as f:
        f.write('{"checkpoint": "tiny", "task": "math500", "problem_id": "x", "sam')  # a write cut by the kill
    lines_before = len((part / "results.jsonl").read_text().splitlines())
    assert 0 < lines_before - 1 < 2 * 5 * 3

    counter = KilledAfter(tiny, 10**6)
    summary = evaluate("tiny", "aime24,math500", backend=counter, out_dir=part, **kw)
    # 6 chunks in all (3 per task); the kill came on the 3rd, so only the 4 unfinished ones run again
    assert counter.left == 10**6 - 4
    assert read_results(part / "results.jsonl") == read_results(full / "results.jsonl")
    keys = [(t, p, s) for t, p, s, _, _ in read_results(part / "results.jsonl")]
    assert len(keys) == len(set(keys)) == 2 * 5 * 3
    assert summary["tasks"] == json.loads((full / "summary.json").read_text())["tasks"]

    # a rerun with everything done generates nothing; --force starts again
    idle = KilledAfter(tiny, 1)
    evaluate("tiny", "aime24,math500", backend=idle, out_dir=part, **kw)
    with pytest.raises(KeyboardInterrupt):
        evaluate("tiny", "aime24,math500", backend=KilledAfter(tiny, 1), out_dir=part, force=True, **kw)
    # other sampling settings into the same results are refused
    evaluate("tiny", "aime24", backend=tiny, out_dir=tmp_path / "s", **kw)
    with pytest.raises(ValueError, match="other settings.*temperature"):
        evaluate("tiny", "aime24", backend=tiny, out_dir=tmp_path / "s", **{**kw, "temperature": 0.5})


def test_cli_all_tasks_end_to_end(tmp_path, capsys):
    ckpt = build_tiny_model(tmp_path / "tiny-ckpt")
    out = tmp_path / "run"
    rc = main(["eval", "--ckpt", str(ckpt), "--tasks", "all", "--data-dir", str(BENCH), "--limit", "2",
               "--n", "2", "--max-tokens", "4", "--out", str(out), "--batch-size", "8", "--grading-workers", "1"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["label"] == "tiny-ckpt" and summary["checkpoint"] == str(ckpt)
    assert sorted(summary["tasks"]) == sorted(["aime24", "aime25", "amc", "math500", "minerva", "olympiad",
                                               "arc_c", "gpqa_diamond"])
    assert "Hub only" in summary["skipped"]["mmlu_pro"]
    assert summary["groups"]["ood"]["missing"] == ["mmlu_pro"]
    for t in summary["tasks"].values():
        assert t["n_problems"] == 2 and t["samples_per_problem"] == 2 and 0 <= t["score"] <= 100
        assert t["sampling"]["max_tokens"] == 4 and len(t["data_fingerprint"]) == 16
    lines = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert len(lines) == 8 * 2 * 2
    assert set(lines[0]) == {"checkpoint", "task", "problem_id", "sample", "response", "prediction",
                             "ground_truth", "correct", "n_tokens", "finish_reason"}
    assert "math-id" in capsys.readouterr().out

    assert main(["eval", "--ckpt", str(ckpt), "--tasks", "aime2024", "--out", str(out)]) == 2
    assert "unknown task 'aime2024'" in capsys.readouterr().err
    assert main(["eval", "--ckpt", str(tmp_path / "missing"), "--tasks", "math500", "--data-dir", str(BENCH),
                 "--out", str(tmp_path / "x"), "--limit", "1"]) == 2
    assert "no such folder" in capsys.readouterr().err  # at once, before any model loading


def test_bad_data_dir_is_an_error_not_a_skip(tmp_path):
    with pytest.raises(FileNotFoundError, match="qwen/math500.jsonl does not exist"):
        evaluate("canned", "math500,mmlu_pro", backend=CannedBackend({}), out_dir=tmp_path, data_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="none of the tasks can run"):
        evaluate("canned", "mmlu_pro", backend=CannedBackend({}), out_dir=tmp_path, data_dir=BENCH)


def test_changed_settings_leave_the_results_untouched(tmp_path):
    problems, _ = load_problems(load_task("aime24"), BENCH)
    canned = {p.problem: [f"\\boxed{{{p.answer}}}"] * 8 for p in problems}
    evaluate("canned", "aime24", backend=CannedBackend(canned), out_dir=tmp_path, data_dir=BENCH, limit=3, n=2,
             progress=False)
    before = (tmp_path / "results.jsonl").read_text()
    with pytest.raises(ValueError, match="other settings.*n"):
        evaluate("canned", "aime24", backend=CannedBackend(canned), out_dir=tmp_path, data_dir=BENCH, limit=3,
                 n=4, progress=False)
    assert (tmp_path / "results.jsonl").read_text() == before
    summary = evaluate("canned", "aime24", backend=CannedBackend(canned), out_dir=tmp_path, data_dir=BENCH,
                       limit=5, n=2, progress=False)  # more problems, same settings: only the new ones run
    assert summary["tasks"]["aime24"]["n_problems"] == 5 and summary["tasks"]["aime24"]["score"] == 100.0
