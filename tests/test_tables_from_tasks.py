"""Report tables take their benchmarks, groups, headers and metric note from tasks/, not from code.

A copy of tasks/ with one more in-distribution benchmark (a YAML and a line in _groups.yaml) must give
Tables 1-3 a new column, headed by its title, inside the group's span and average, and the metric note
its label; the shipped tasks/ must give exactly the columns the paper's tables (and the golden report) have.
"""

from __future__ import annotations

import json
import shutil

import pytest

from scope_bench.paths import TASKS_DIR
from scope_bench.reports import render
from scope_bench.reports import tables as T
from scope_bench.reports.reference import paper_reference
from scope_bench.reports.runs import EvalRun

PAPER_ID = ("aime24", "aime25", "amc", "math500", "minerva", "olympiad")
PAPER_OOD = ("arc_c", "gpqa_diamond", "mmlu_pro")


def run(label, scores, backbone=None):
    tasks = {t: {"metric": "pass@1", "score": s} for t, s in scores.items()}
    return EvalRun(None, label, None, backbone, {"label": label, "tasks": tasks})


@pytest.fixture
def tasks_dir(tmp_path):
    """tasks/ plus HMMT (Avg@8) in the in-distribution group, before olympiad."""
    out = tmp_path / "tasks"
    shutil.copytree(TASKS_DIR, out)
    (out / "hmmt.yaml").write_text(
        "name: hmmt\ntitle: HMMT-Feb\nlocal: {path: hmmt.jsonl}\nfields: {problem: problem, answer: answer}\n"
        "answer: {kind: math}\nprompt: math\nmetric: avg\nsampling: {n: 8}\n")
    groups = (out / "_groups.yaml").read_text().replace("minerva, olympiad]", "minerva, hmmt, olympiad]", 1)
    (out / "_groups.yaml").write_text(groups)
    return out


def test_shipped_tasks_give_the_paper_columns():
    bench = T.benchmarks()
    assert bench.groups[0].tasks == PAPER_ID and bench.groups[1].tasks == PAPER_OOD
    assert bench.columns() == paper_reference()["table1"]["columns"]
    assert bench.columns(bench.groups[:1]) == paper_reference()["table2"]["columns"]
    assert bench.headers == {"aime24": "AIME24", "aime25": "AIME25", "amc": "AMC", "math500": "MATH-500",
                             "minerva": "Minerva", "olympiad": "Olympiad", "avg-id": "Avg.", "arc_c": "ARC-c",
                             "gpqa_diamond": "GPQA*", "mmlu_pro": "MMLU-Pro", "avg-ood": "Avg."}
    assert bench.metric_note(bench.tasks) == "AIME24, AIME25, AMC: Avg@32; others: pass@1"
    t1 = T.table1([], reference=False)
    assert t1.groups == [("In-distribution", 7), ("Out-of-distribution", 4)]


def test_a_benchmark_added_in_tasks_reaches_every_table(tasks_dir):
    full = {t: 10.0 * (i + 1) for i, t in enumerate(PAPER_ID + PAPER_OOD)}
    runs = [run("A", {**full, "hmmt": 5.0}), run("B", full), run("C", {"hmmt": 7.0}, backbone="small")]
    t1 = T.table1(runs, reference=True, tasks_dir=tasks_dir)
    assert t1.columns[:8] == ["aime24", "aime25", "amc", "math500", "minerva", "hmmt", "olympiad", "avg-id"]
    assert t1.groups == [("In-distribution", 8), ("Out-of-distribution", 4)]
    rows = {r.name: r.cells for _, rs in t1.blocks[0].sections for r in rs}
    assert rows["A"]["avg-id"] == pytest.approx((sum(full[t] for t in PAPER_ID) + 5.0) / 7)
    assert rows["B"]["hmmt"] is None and rows["B"]["avg-id"] is None  # the group is incomplete now
    assert rows["B"]["avg-ood"] == pytest.approx(sum(full[t] for t in PAPER_OOD) / 3)
    md = render.to_markdown(t1)
    assert "In-distribution: AIME24, AIME25, AMC, MATH-500, Minerva, HMMT-Feb, Olympiad, Avg.;" in md
    assert "| Method | AIME24 | AIME25 | AMC | MATH-500 | Minerva | HMMT-Feb | Olympiad | Avg. |" in md
    assert "AIME24, AIME25, AMC: Avg@32; HMMT-Feb: Avg@8; others: pass@1 (as each run's summary reports)." in md
    # the paper's rows have no HMMT number: a missing cell, never a shifted one
    paper = {r.name: r.cells for b in t1.blocks if b.reference for _, rs in b.sections for r in rs}
    assert paper["SCOPE (paper)"].get("hmmt") is None and paper["SCOPE (paper)"]["olympiad"] == 47.0
    assert r"HMMT-Feb & Olympiad & Avg." in render.to_latex(t1)

    t2 = T.table2(runs, reference=False, main=None, tasks_dir=tasks_dir)
    assert "hmmt" in t2.columns and [b.title for b in t2.blocks] == ["Measured: small"]
    t3 = T.table3(runs, reference=False, tasks_dir=tasks_dir)
    assert t3.columns == t1.columns[:8]
    assert T.other_tasks(runs, tasks_dir) == [] and T.other_tasks(runs) == ["hmmt"]  # default tasks/: not a paper task


def test_report_cli_reads_the_tasks_dir(tasks_dir, tmp_path):
    from scope_bench.cli import main

    run_dir = tmp_path / "runs" / "a"
    run_dir.mkdir(parents=True)
    tasks = {t: {"metric": "pass@1", "score": 50.0} for t in (*PAPER_ID, *PAPER_OOD)}
    tasks["hmmt"] = {"metric": "avg@8", "score": 20.0}
    (run_dir / "summary.json").write_text(json.dumps({"label": "A", "tasks": tasks}))
    out = tmp_path / "rep"
    assert main(["report", str(run_dir), "--out", str(out), "--no-plots", "--no-reference",
                 "--diversity-task", "", "--tasks-dir", str(tasks_dir)]) == 0
    table1 = (out / "tables" / "table1.md").read_text()
    assert "| A | 50.0 | 50.0 | 50.0 | 50.0 | 50.0 | 20.0 | 50.0 | 45.7 |" in table1  # (6 * 50 + 20) / 7
    assert not (out / "tables" / "other.md").exists()  # hmmt is a Table 1 column here, not an "other" task


def test_tasks_without_the_table1_groups_are_refused(tmp_path):
    out = tmp_path / "tasks"
    shutil.copytree(TASKS_DIR, out)
    (out / "_groups.yaml").write_text("all: [aime24]\n")
    with pytest.raises(ValueError, match=r"no group\(s\) \['math-id', 'ood'\]"):
        T.table1([], tasks_dir=out)
