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
    assert cfg["process_docs"] == "fn:utils.process_docs_aime24"
    assert cfg["process_results"] == "fn:utils.process_results_aime24"
    assert cfg["filter_list"][0]["filter"] == [{"function": "custom", "filter_fn": "fn:utils.keep_all"}]
    gpqa = yaml.load((exported / "scope_gpqa_diamond.yaml").read_text(), Loader=FunctionLoader)
    assert (gpqa["dataset_name"], gpqa["repeats"]) == ("gpqa_diamond", 1)
    group = yaml.safe_load((exported / "scope_math_id.yaml").read_text())
    assert group["task"] == [f"scope_{n}" for n in ("aime24", "aime25", "amc", "math500", "minerva", "olympiad")]
    assert len(yaml.safe_load((exported / "scope_all.yaml").read_text())["task"]) == 9


def _load_utils(folder):
    spec = importlib.util.spec_from_file_location(f"scope_lm_eval_utils_{folder.name}", folder / "utils.py")
    utils = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(utils)
    return utils


def test_utils_module_renders_and_grades(exported):
    from datasets import Dataset

    utils = _load_utils(exported)
    raw = {"unique_id": "x", "problem": "What is $1+1$?", "answer": "2", "solution": "..."}
    doc = utils.process_docs_math500(Dataset.from_list([raw]))[0]  # Hub rows, normalised as the harness does
    assert (doc["id"], doc["answer"]) == ("x", "2")
    assert utils.doc_to_text_math500(doc).startswith("What is $1+1$?\nPlease reason step by step")
    assert utils.doc_to_target(doc) == "2"
    assert utils.process_results_math500(doc, ["\\boxed{2}", "\\boxed{3}", "so $\\boxed{2}$", "no"]) == {"acc": 0.5}
    arc = {"id": "a", "question": "Which?", "answerKey": "B",
           "choices": {"text": ["x", "y", "z", "w"], "label": ["A", "B", "C", "D"]}}
    arc_doc = utils.process_docs_arc_c(Dataset.from_list([arc]))[0]
    assert "\nB) y\n" in utils.doc_to_text_arc_c(arc_doc)
    assert utils.process_results_arc_c(arc_doc, ["\\boxed{B}"]) == {"acc": 1.0}
    assert utils.keep_all([["a", "b"]], [arc_doc]) == [["a", "b"]]


@pytest.mark.skipif(not (SHARED_DATA_DIR / "benchmarks").exists(), reason="shared benchmark data absent")
def test_export_over_the_local_copies(tmp_path):
    """With a data folder every task with a local copy reads it (MMLU-Pro has none and is left out),
    and process_docs gives the problems `scope-bench eval` loads, ids included."""
    import datasets

    from scope_bench.eval import load_problems

    bench = SHARED_DATA_DIR / "benchmarks"
    export_lm_eval(tmp_path, "all", data_dir=bench)
    assert not (tmp_path / "scope_mmlu_pro.yaml").exists()
    assert "scope_mmlu_pro" not in yaml.safe_load((tmp_path / "scope_all.yaml").read_text())["task"]
    utils = _load_utils(tmp_path)
    for name in ("aime25", "minerva", "arc_c"):  # verl parquet, save_to_disk folder, verl choices
        cfg = yaml.load((tmp_path / f"scope_{name}.yaml").read_text(), Loader=FunctionLoader)
        assert cfg["dataset_path"] in ("parquet", "arrow") and cfg["test_split"] == "test"
        rows = datasets.load_dataset(cfg["dataset_path"], split="test", **cfg["dataset_kwargs"])
        docs = getattr(utils, f"process_docs_{name}")(rows)
        problems, _ = load_problems(load_task(name), bench)
        assert [(d["id"], d["problem"], d["answer"]) for d in docs] == [(p.id, p.problem, p.answer)
                                                                        for p in problems]


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


def test_exported_sampling_follows_the_protocol_and_overrides(tmp_path):
    """lm-eval users sample as `scope-bench eval` would: the protocol's settings on the tasks it
    governs (LUFFY's top_p 1.0 and 8192 tokens on the math tasks), then the command-line overrides."""
    from scope_bench.eval.protocol import PROTOCOLS, apply_protocol

    export_lm_eval(tmp_path / "luffy", "aime24,gpqa_diamond")
    (expected,), _ = apply_protocol([load_task("aime24")], "luffy", {})
    cfg = yaml.load((tmp_path / "luffy" / "scope_aime24.yaml").read_text(), Loader=FunctionLoader)
    assert cfg["generation_kwargs"]["top_p"] == PROTOCOLS["luffy"].settings["top_p"] == expected.sampling.top_p
    assert cfg["generation_kwargs"]["max_gen_toks"] == PROTOCOLS["luffy"].settings["max_tokens"]
    assert cfg["metadata"]["scope_bench_protocol"] == "luffy"

    export_lm_eval(tmp_path / "greedy", "aime24", overrides={"temperature": 0.0, "n": 1, "top_p": None})
    cfg = yaml.load((tmp_path / "greedy" / "scope_aime24.yaml").read_text(), Loader=FunctionLoader)
    assert cfg["generation_kwargs"]["do_sample"] is False and cfg["repeats"] == 1
    assert cfg["metadata"]["scope_bench_protocol"] != "luffy"  # the label says how it was really sampled
