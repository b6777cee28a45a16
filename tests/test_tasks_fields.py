"""Task YAML fields reports read (title, metric kind) and the group file's two forms (scope_bench/eval/tasks.py)."""

from __future__ import annotations

import shutil

import pytest

from scope_bench.eval.tasks import (
    available_tasks,
    load_group_specs,
    load_groups,
    load_task,
    resolve_task_names,
    with_sampling,
)
from scope_bench.paths import TASKS_DIR

TASK = """name: {name}
{title}fields: {{problem: q, answer: a}}
answer: {{kind: math}}
prompt: {{user: "{{problem}}"}}
local: {{path: x.jsonl}}
metric: {metric}
sampling: {{n: {n}}}
"""


def write_task(tmp_path, name="t", metric="avg", n=8, title=""):
    path = tmp_path / f"{name}.yaml"
    path.write_text(TASK.format(name=name, metric=metric, n=n, title=f"title: {title}\n" if title else ""))
    return path


def test_avg_takes_its_number_from_n(tmp_path):
    task = load_task(write_task(tmp_path, metric="avg", n=8))
    assert (task.metric, task.metric_kind, task.metric_label) == ("avg@8", "avg", "Avg@8")
    assert load_task(write_task(tmp_path, metric="avg@8", n=8)).metric == "avg@8"  # the old spelling, agreeing
    with pytest.raises(ValueError, match=r"t\.yaml: metric 'avg@32' disagrees with sampling.n = 8"):
        load_task(write_task(tmp_path, metric="avg@32", n=8))
    passing = load_task(write_task(tmp_path, metric="pass@1", n=10))
    assert (passing.metric, passing.metric_kind, passing.metric_label) == ("pass@1", "pass", "pass@1")
    for bad in ("pass", "avg@", "avg@0", "acc"):
        with pytest.raises(ValueError, match="is not avg, avg@K or pass@K"):
            load_task(write_task(tmp_path, metric=bad))


def test_overriding_n_moves_the_avg_label_only():
    aime = load_task("aime24")
    assert (aime.metric, aime.metric_label) == ("avg@32", "Avg@32")  # as summaries have always said
    four = with_sampling(aime, n=4, temperature=None)
    assert (four.metric, four.metric_label, four.sampling.n) == ("avg@4", "Avg@4", 4)
    assert with_sampling(load_task("math500"), n=4).metric == "pass@1"


def test_titles_are_the_report_headers(tmp_path):
    assert load_task(write_task(tmp_path, title="T-Bench")).header == "T-Bench"
    assert load_task(write_task(tmp_path)).header == "t"  # no title: the name
    headers = {n: load_task(n).header for n in resolve_task_names("all")}
    assert headers == {"aime24": "AIME24", "aime25": "AIME25", "amc": "AMC", "math500": "MATH-500",
                       "minerva": "Minerva", "olympiad": "Olympiad", "arc_c": "ARC-c", "gpqa_diamond": "GPQA*",
                       "mmlu_pro": "MMLU-Pro"}


def test_every_shipped_task_loads_with_a_consistent_metric():
    for name in available_tasks():
        task = load_task(name)
        if task.metric_kind == "avg":
            assert task.metric == f"avg@{task.sampling.n}", name


def test_groups_as_lists_or_mappings(tmp_path):
    specs = load_group_specs()
    assert specs["math-id"].title == "In-distribution" and specs["math-id"].average_column == "avg-id"
    assert specs["ood"].title == "Out-of-distribution" and specs["ood"].average_column == "avg-ood"
    assert specs["all"].title is None and load_groups()["all"] == list(specs["all"].tasks)
    assert all(isinstance(v, list) for v in load_groups().values())  # what evaluation and export read

    tasks_dir = tmp_path / "tasks"
    shutil.copytree(TASKS_DIR, tasks_dir)
    (tasks_dir / "_groups.yaml").write_text("g: {title: G, tasks: [aime24, amc]}\nplain: [amc]\n")
    assert load_groups(tasks_dir) == {"g": ["aime24", "amc"], "plain": ["amc"]}
    assert resolve_task_names("g,plain", tasks_dir) == ["aime24", "amc"]
    assert load_group_specs(tasks_dir)["g"].average_column == "avg-g"  # no `short`: the name
    for bad in ("g: {title: G}\n", "g: {tasks: [a], colour: red}\n", "g: aime24\n"):
        (tasks_dir / "_groups.yaml").write_text(bad)
        with pytest.raises(ValueError, match=r"_groups\.yaml: group 'g'"):
            load_groups(tasks_dir)
