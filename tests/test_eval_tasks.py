"""Task YAMLs and loaders against the real benchmark files in ../shared/data/benchmarks."""

import pytest

from scope_bench.eval.data import fingerprint, load_problems, problems_from_rows, render_prompt
from scope_bench.eval.tasks import available_tasks, load_task, resolve_task_names
from scope_bench.paths import SHARED_DATA_DIR, TASKS_DIR

BENCH = SHARED_DATA_DIR / "benchmarks"
needs_data = pytest.mark.skipif(not BENCH.exists(), reason=f"shared benchmark data not at {BENCH}")

ALL = ["aime24", "aime25", "amc", "math500", "minerva", "olympiad", "arc_c", "gpqa_diamond", "mmlu_pro"]


def test_groups_and_task_files():
    assert set(ALL) <= set(available_tasks())  # others may add tasks (a YAML each)
    assert resolve_task_names("all") == ALL
    assert resolve_task_names("math-id") == ALL[:6]
    assert resolve_task_names("ood,math500,arc_c") == ["arc_c", "gpqa_diamond", "mmlu_pro", "math500"]
    metrics = {n: load_task(n).metric for n in ALL}
    assert {n for n, m in metrics.items() if m == "avg@32"} == {"aime24", "aime25", "amc"}
    assert all(load_task(n).sampling.n == 32 for n in ("aime24", "aime25", "amc"))


def test_unknown_task_and_bad_yaml(tmp_path):
    with pytest.raises(ValueError, match="unknown task 'aime99'.*known tasks"):
        load_task("aime99")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nfields: {problem: q}\nanswer: {kind: math}\nprompt: {user: '{problem}'}\n"
                   "metric: pass@1\nlocal: {path: x.jsonl}\n")
    with pytest.raises(ValueError, match="bad.yaml.*'answer'"):
        load_task(bad)
    bad.write_text(bad.read_text().replace("{problem: q}", "{problem: q, answer: a}").replace("pass@1", "acc"))
    with pytest.raises(ValueError, match="metric 'acc'"):
        load_task(bad)
    bad.write_text(bad.read_text().replace("acc", "pass@1") + "version: 1.5\n")
    with pytest.raises(ValueError, match="bad.yaml: version must be a whole number from 1, got 1.5"):
        load_task(bad)


def test_every_shipped_task_has_a_version():
    assert all("\nversion: " in (TASKS_DIR / f"{n}.yaml").read_text() for n in available_tasks())
    assert all(load_task(n).version >= 1 for n in available_tasks())


@needs_data
@pytest.mark.parametrize("name,count", [("aime24", 30), ("aime25", 30), ("amc", 83), ("math500", 500),
                                        ("minerva", 272), ("olympiad", 675), ("arc_c", 1172),
                                        ("gpqa_diamond", 198)])
def test_local_copies_load(name, count):
    problems, origin = load_problems(load_task(name), BENCH)
    assert len(problems) == count, origin
    assert len({p.id for p in problems}) == count
    assert all(p.problem and p.answer for p in problems)


@needs_data
def test_luffy_duplicates_are_collapsed():
    """LUFFY's parquet repeats each AIME25/AMC problem 32 times; one problem each is kept, in order."""
    import pyarrow.parquet as pq

    rows = pq.read_table(BENCH / "luffy/valid.all.parquet").to_pylist()
    aime25 = [r for r in rows if r["data_source"] == "aime25"]
    assert len(aime25) == 960
    problems = problems_from_rows(load_task("aime25"), aime25, {"data_source": "aime25"}, "test")
    assert len(problems) == 30
    assert problems[0].problem == aime25[0]["prompt"][-1]["content"]
    assert problems[0].answer == aime25[0]["reward_model"]["ground_truth"]
    assert [p.id for p in problems] == [str(i) for i in range(30)]


@needs_data
def test_math500_fields_and_prompt():
    task = load_task("math500")
    problems, _ = load_problems(task, BENCH)
    first = problems[0]
    assert first.id == "test/precalculus/807.json"
    assert first.answer == "\\left( 3, \\frac{\\pi}{2} \\right)"
    chat = render_prompt(task, first, "chat")
    assert [m["role"] for m in chat] == ["system", "user"]
    assert chat[1]["content"].startswith(first.problem) and "\\boxed{}" in chat[1]["content"]
    raw = render_prompt(task, first, "raw")
    assert raw.endswith("<|im_start|>assistant\n") and first.problem in raw
    assert fingerprint(problems) == fingerprint(load_problems(task, BENCH)[0])


@needs_data
def test_mmlu_pro_has_no_local_copy():
    with pytest.raises(FileNotFoundError, match="mmlu_pro.*Hub only.*--data mmlu_pro=PATH"):
        load_problems(load_task("mmlu_pro"), BENCH)


def test_hub_shaped_rows_for_choice_tasks():
    """Rows as the Hub gives them: ARC's choices dict, GPQA's correct/incorrect answers, MMLU-Pro's list."""
    arc = {"id": "q1", "question": "Which?", "answerKey": "2",
           "choices": {"text": ["red", "blue", "green", "white"], "label": ["1", "2", "3", "4"]}}
    p = problems_from_rows(load_task("arc_c"), [arc], None, "hub")[0]
    assert (p.id, p.answer, p.options) == ("q1", "B", ("red", "blue", "green", "white"))
    assert "\nB) blue\n" in render_prompt(load_task("arc_c"), p, "chat")[-1]["content"]

    gpqa_task = load_task("gpqa_diamond")
    rows = [{"Record ID": f"r{i}", "Question": f"Q{i}?", "Correct Answer": f"right{i}",
             "Incorrect Answer 1": "w1", "Incorrect Answer 2": "w2", "Incorrect Answer 3": "w3"}
            for i in range(20)]
    problems = problems_from_rows(gpqa_task, rows, None, "hub")
    assert problems == problems_from_rows(gpqa_task, rows, None, "hub")  # the shuffle is seeded
    assert all(p.options["ABCD".index(p.answer)] == f"right{i}" for i, p in enumerate(problems))
    assert len({p.answer for p in problems}) > 1  # the correct answer is not always in one place

    mmlu = {"question_id": 7, "question": "Q", "options": [f"o{i}" for i in range(10)], "answer": "J",
            "answer_index": 9}
    p = problems_from_rows(load_task("mmlu_pro"), [mmlu], None, "hub")[0]
    assert (p.id, p.answer, len(p.options)) == ("7", "J", 10)


def test_missing_field_names_row_and_field(tmp_path):
    data = tmp_path / "m.jsonl"
    data.write_text('{"problem": "1+1", "answer": "2", "unique_id": "a"}\n{"problem": "2+2", "unique_id": "b"}\n')
    with pytest.raises(ValueError, match=r"m.jsonl row 1: missing field 'answer'"):
        load_problems(load_task("math500"), path=data)
    data.write_text('{"problem": "1+1", "answer": 2.0, "unique_id": "a"}\n')
    assert load_problems(load_task("math500"), path=data)[0][0].answer == "2"


@needs_data
def test_file_in_the_benchmarks_own_format(tmp_path, capsys):
    """`--data olympiad=OlympiadBench.jsonl` with the official fields (`question`, `final_answer` as a
    list, `id`) loads with the Hub's map and keeps the file's ids; the local copy's format still loads."""
    import json

    task = load_task("olympiad")
    local, _ = load_problems(task, BENCH)
    official = tmp_path / "OlympiadBench.jsonl"
    official.write_text("".join(json.dumps({"id": 1606 + i, "question": p.problem, "final_answer": [p.answer],
                                            "solution": ["..."], "unit": None}) + "\n"
                                for i, p in enumerate(local[:5])))
    problems, origin = load_problems(task, path=official)
    assert [p.id for p in problems] == [str(1606 + i) for i in range(5)]
    assert [(p.problem, p.answer) for p in problems] == [(p.problem, p.answer) for p in local[:5]]
    assert origin == f"{official} (fields: hub)"
    assert "read with the hub field map" in capsys.readouterr().err

    local_format = tmp_path / "olympiad_local.jsonl"  # the local map has no id: the file's own are kept
    local_format.write_text("".join(json.dumps({"id": f"q{i}", "problem": p.problem, "answer": p.answer}) + "\n"
                                    for i, p in enumerate(local[:3])))
    problems, origin = load_problems(task, path=local_format)
    assert [p.id for p in problems] == ["q0", "q1", "q2"] and origin.endswith("(fields: local)")


def test_file_fitting_no_field_map_names_both(tmp_path):
    data = tmp_path / "o.jsonl"
    data.write_text('{"q": "1+1", "a": "2"}\n')
    with pytest.raises(ValueError, match=r"o.jsonl row 0: its fields \['a', 'q'\] fit no field map of task "
                                         r"'olympiad': the local map .* lacks \['problem', 'answer'\]; "
                                         r"the hub map .* lacks \['id', 'question', 'final_answer'\]"):
        load_problems(load_task("olympiad"), path=data)
