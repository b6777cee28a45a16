"""The one JSON-lines reader (scope_bench/io.py) and what each of its callers does with a torn last line.

Callers: dataset rows (`read_rows`), training metrics (`analysis.dynamics.read_metrics`), the results store
(`eval.store.ResultStore`) and the report's reading of results.jsonl (`reports.runs.EvalRun.responses`).
"""

from __future__ import annotations

import json

import pytest

from scope_bench.analysis.dynamics import read_metrics
from scope_bench.eval.store import ResultStore
from scope_bench.io import drop_torn_end, iter_jsonl, read_jsonl, read_rows
from scope_bench.reports.runs import EvalRun


def test_values_with_line_numbers_blank_lines_skipped(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\n\n  \n[2]\n"three"\n')
    assert list(iter_jsonl(path)) == [(1, {"a": 1}), (4, [2]), (5, "three")]
    assert read_jsonl(path) == [{"a": 1}, [2], "three"] == read_rows(path)
    path.write_text("")
    assert read_jsonl(path) == []


@pytest.mark.parametrize("torn_end", ["error", "skip"])
def test_a_bad_line_names_file_and_line(tmp_path, torn_end):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\n{"a": 2,\n{"a": 3}\n')
    with pytest.raises(ValueError, match=r"rows\.jsonl:2: not valid JSON \(.* at line 2, column \d+\)"):
        read_jsonl(path, torn_end=torn_end)  # a bad line before the last is an error either way


def test_a_torn_last_line_is_an_error_or_skipped(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"step": 2, "rew')
    with pytest.raises(ValueError, match=r"metrics\.jsonl:2"):
        read_jsonl(path)
    assert read_jsonl(path, torn_end="skip") == [{"step": 1}]
    path.write_text('{"step": 1}\n{"step": 2, "rew\n')  # cut after its newline: still the last line
    assert read_jsonl(path, torn_end="skip") == [{"step": 1}]
    path.write_text('{"step": 1}\n{"step": 2, "rew\n\n')  # a blank line after it: no longer the last
    with pytest.raises(ValueError, match=r"metrics\.jsonl:2"):
        read_jsonl(path, torn_end="skip")
    with pytest.raises(ValueError, match="torn_end"):
        read_jsonl(path, torn_end="drop")


def test_unicode_line_separators_inside_strings_stay_on_their_line(tmp_path):
    """json.dumps(ensure_ascii=False) writes U+2028, U+0085 or U+001C raw; str.splitlines() would cut the line
    there. The reader splits on "\\n" only."""
    path = tmp_path / "results.jsonl"
    rows = [{"response": "a\u2028b\u2029c\x85d\x1ce\rf"}, {"response": "plain"}]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    assert len(path.read_text(encoding="utf-8").splitlines()) > 2  # what the old readers split on
    assert read_jsonl(path) == rows


def test_drop_torn_end(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_bytes(b'{"a": 1}\n{"a": 2}\n{"a": 3')
    assert drop_torn_end(path) == len(b'{"a": 3') and path.read_bytes() == b'{"a": 1}\n{"a": 2}\n'
    assert drop_torn_end(path) == 0 and path.read_bytes() == b'{"a": 1}\n{"a": 2}\n'
    path.write_bytes(b'{"a": 1}\n{"a": 2}')  # valid JSON, but no newline: the write did not finish
    assert drop_torn_end(path) == 8 and read_jsonl(path) == [{"a": 1}]
    path.write_bytes(b"x" * 200_000)  # a long torn line and nothing before it
    assert drop_torn_end(path) == 200_000 and path.read_bytes() == b""
    assert drop_torn_end(path) == 0


# --- each caller keeps its behaviour ------------------------------------------------------------


def rec(pid, sample, response="r"):
    return {"checkpoint": "ck", "task": "t", "problem_id": pid, "sample": sample, "response": response,
            "correct": 1, "finish_reason": "stop"}


def test_dataset_rows_are_strict(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text('{"q": 1}\n{"q": 2')
    with pytest.raises(ValueError, match=r"data\.jsonl:2: not valid JSON .*line 2"):
        read_rows(path)


def test_training_metrics_skip_a_torn_last_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"step": 2}\n{"step": 3, "rew')
    assert [r["step"] for r in read_metrics(path)] == [1, 2]
    path.write_text('{"step": 1}\n{"step": "two"}\n')
    with pytest.raises(ValueError, match=r"metrics\.jsonl:2: each row must be an object with an integer 'step'"):
        read_metrics(path)


def test_results_store_cuts_a_torn_last_line_and_reloads_raw_unicode(tmp_path):
    path = tmp_path / "results.jsonl"
    store = ResultStore(path)
    store.append([rec("p0", 0, "x\u2028y"), rec("p0", 1)])  # the store writes ensure_ascii=False
    with path.open("a") as f:
        f.write(json.dumps(rec("p1", 0))[:30])
    store = ResultStore(path)  # cuts the partial line off the file and keeps the rest
    assert store.samples("ck", "t", "p0")[0]["response"] == "x\u2028y"
    assert not store.samples("ck", "t", "p1") and path.read_text(encoding="utf-8").endswith("}\n")
    path.write_text(json.dumps(rec("p0", 0)) + "\n{oops\n" + json.dumps(rec("p1", 0)) + "\n")
    with pytest.raises(ValueError, match=r"results\.jsonl:2: not valid JSON .*; fix it or rerun with --force"):
        ResultStore(path)
    path.write_text(json.dumps(rec("p0", 0)) + "\n" + json.dumps({"task": "t"}) + "\n")
    with pytest.raises(ValueError, match=r"results\.jsonl:2: not a results line .*--force"):
        ResultStore(path)


def test_report_reads_results_strictly(tmp_path):
    run = EvalRun(tmp_path, "L", None, None, {"checkpoint": "ck", "tasks": {}})
    lines = [json.dumps(rec("p0", j, f"answer {j}\u2028line"), ensure_ascii=False) for j in range(2)]
    (tmp_path / "results.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert run.responses("t") == {"p0": ["answer 0\u2028line", "answer 1\u2028line"]}
    (tmp_path / "results.jsonl").write_text(lines[0] + "\n" + lines[1][:20], encoding="utf-8")
    with pytest.raises(ValueError, match=r"results\.jsonl:2: not valid JSON"):
        run.responses("t")  # a finished run's results are complete: a torn line is an error
    (tmp_path / "results.jsonl").write_text(json.dumps({"task": "t", "problem_id": "p0"}) + "\n")
    with pytest.raises(ValueError, match=r"results\.jsonl:1: missing field 'sample'"):
        run.responses("t")
