"""The lm-evaluation-harness export: YAML structure, the generated utils.py, and (when lm-eval is
installed) lm-eval itself building the task, keeping every repeat and grading with scope_bench."""

import importlib.util
import json

import pytest
import yaml

from scope_bench.eval import export_lm_eval, load_task
from scope_bench.paths import SHARED_DATA_DIR


class FunctionLoader(yaml.SafeLoader):
    """Reads lm-eval's `!function module.name` tags as strings."""


FunctionLoader.add_constructor("!function", lambda loader, node: f"fn:{loader.construct_scalar(node)}")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("lm_eval_tasks")
    export_lm_eval(out)
    return out


def test_task_yamls(exported):
    cfg = yaml.load((exported / "scope_aime24.yaml").read_text(), Loader=FunctionLoader)
    task = load_task("aime24")
    assert cfg["task"] == "scope_aime24" and cfg["dataset_path"] == task.hub["path"]
    assert cfg["output_type"] == "generate_until" and cfg["repeats"] == 32
    assert cfg["generation_kwargs"]["temperature"] == task.sampling.temperature
    assert cfg["generation_kwargs"]["max_gen_toks"] == task.sampling.max_tokens
    assert cfg["doc_to_text"] == "fn:utils.doc_to_text_aime24"
    assert cfg["process_results"] == "fn:utils.process_results_aime24"
    assert cfg["filter_list"][0]["filter"] == [{"function": "custom", "filter_fn": "fn:utils.keep_all"}]
    gpqa = yaml.load((exported / "scope_gpqa_diamond.yaml").read_text(), Loader=FunctionLoader)
    assert (gpqa["dataset_name"], gpqa["repeats"]) == ("gpqa_diamond", 1)
    group = yaml.safe_load((exported / "scope_math_id.yaml").read_text())
    assert group["task"] == [f"scope_{n}" for n in ("aime24", "aime25", "amc", "math500", "minerva", "olympiad")]
    assert len(yaml.safe_load((exported / "scope_all.yaml").read_text())["task"]) == 9


def test_utils_module_renders_and_grades(exported):
    spec = importlib.util.spec_from_file_location("scope_lm_eval_utils", exported / "utils.py")
    utils = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(utils)
    doc = {"unique_id": "x", "problem": "What is $1+1$?", "answer": "2"}
    assert utils.doc_to_text_math500(doc).startswith("What is $1+1$?\nPlease reason step by step")
    assert utils.doc_to_target_math500(doc) == "2"
    assert utils.process_results_math500(doc, ["\\boxed{2}", "\\boxed{3}", "so $\\boxed{2}$", "no"]) == {"acc": 0.5}
    arc = {"id": "a", "question": "Which?", "answerKey": "B",
           "choices": {"text": ["x", "y", "z", "w"], "label": ["A", "B", "C", "D"]}}
    assert "\nB) y\n" in utils.doc_to_text_arc_c(arc)
    assert utils.process_results_arc_c(arc, ["\\boxed{B}"]) == {"acc": 1.0}
    assert utils.keep_all([["a", "b"]], [arc]) == [["a", "b"]]


@pytest.mark.skipif(importlib.util.find_spec("lm_eval") is None, reason="lm-eval is not installed")
@pytest.mark.skipif(not (SHARED_DATA_DIR / "benchmarks").exists(), reason="shared benchmark data absent")
def test_lm_eval_builds_the_task_and_keeps_all_repeats(exported, tmp_path):
    from lm_eval.api.task import ConfigurableTask
    from lm_eval.tasks._yaml_loader import load_yaml

    rows = (SHARED_DATA_DIR / "benchmarks/qwen/math500.jsonl").read_text().splitlines()[:2]
    data = tmp_path / "m.jsonl"
    data.write_text("\n".join(rows) + "\n")
    cfg = load_yaml(exported / "scope_math500.yaml")
    cfg.update(dataset_path="json", dataset_name=None, dataset_kwargs={"data_files": {"test": str(data)}},
               repeats=8)
    task = ConfigurableTask(config=cfg)
    task.build_all_requests(limit=2, rank=0, world_size=1)
    for inst in task.instances:
        inst.resps = [f"\\boxed{{{inst.doc['answer']}}}"] * 3 + ["\\boxed{-1}"] * 5
    task.apply_filters()
    inst = task.instances[0]
    assert len(inst.filtered_resps["all_repeats"]) == 8
    assert task.process_results(inst.doc, inst.filtered_resps["all_repeats"]) == {"acc": 3 / 8}
    assert task.doc_to_text(inst.doc).startswith(json.loads(rows[0])["problem"] + "\nPlease reason")
