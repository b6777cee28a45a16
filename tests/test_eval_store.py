"""The results store survives a killed write and never keeps duplicates."""

import json

from scope_bench.eval.store import ResultStore


def rec(pid, sample, correct=1, task="t"):
    return {"checkpoint": "ck", "task": task, "problem_id": pid, "sample": sample, "response": "r",
            "prediction": None, "ground_truth": "1", "correct": correct, "n_tokens": 3, "finish_reason": "stop"}


def test_truncated_last_line_is_dropped(tmp_path):
    path = tmp_path / "results.jsonl"
    store = ResultStore(path)
    store.append([rec("p0", 0), rec("p0", 1)])
    with path.open("a") as f:
        f.write(json.dumps(rec("p1", 0))[:25])  # a write cut short
    store = ResultStore(path)
    assert store.is_done("ck", "t", "p0", 2) and not store.samples("ck", "t", "p1")
    store.append([rec("p1", 0), rec("p1", 1)])
    lines = path.read_text().splitlines()
    assert len(lines) == 4 and all(json.loads(x) for x in lines)


def test_incomplete_problems_are_removed_from_the_file(tmp_path):
    path = tmp_path / "results.jsonl"
    ResultStore(path).append([rec("p0", 0), rec("p0", 1), rec("p1", 0), rec("q", 0, task="other")])
    store = ResultStore(path)
    assert store.drop_incomplete({"t": 2}) == 1
    kept = [json.loads(x) for x in path.read_text().splitlines()]
    assert [(r["task"], r["problem_id"], r["sample"]) for r in kept] == [("t", "p0", 0), ("t", "p0", 1),
                                                                         ("other", "q", 0)]
    assert not store.is_done("ck", "t", "p1", 2)


def test_corrupt_middle_line_is_an_error(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps(rec("p0", 0)) + "\n{not json\n" + json.dumps(rec("p1", 0)) + "\n")
    try:
        ResultStore(path)
    except ValueError as err:
        assert "results.jsonl:2" in str(err)
    else:
        raise AssertionError("a corrupt line must be reported")
