"""A method's name travels from `scope-bench train --method M` through the checkpoint's run to the eval
summary and the report: a luffy run and a replace run land in different rows even under one label,
whatever their folders are called. Training and evaluation go through the CLI's `main` in this
process (torch loads once), the report through `scope-bench report` in a subprocess; seconds-long
runs of the tiny model."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def cli(*args) -> None:
    from scope_bench.cli import main

    assert main(list(map(str, args))) == 0


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """Two training runs (luffy, replace) in folders named "a" and "b", each evaluated under one label."""
    from scope_bench.synthetic import generate_split, tiny_model

    root = tmp_path_factory.mktemp("identity")
    data = root / "synthetic.jsonl"
    data.write_text("".join(json.dumps({"id": f"s{i}", **r}) + "\n" for i, r in enumerate(generate_split("test", 2))))
    small = [f"model.path={tiny_model()}", "threads=1", "train.batch_size=2", "rollout.n=2", "rollout.max_new_tokens=8",
             "data.n_train=4", "data.val=null"]
    evals = {}
    for folder, method in (("a", "luffy"), ("b", "replace")):
        cli("train", "--method", method, "--steps", "1", "--run-dir", root / folder, *small)
        evals[method] = root / f"eval-{folder}"
        cli("eval", "--ckpt", root / folder / "final", "--tasks", "synthetic", "--data", f"synthetic={data}",
            "--n", "1", "--max-tokens", "8", "--device", "cpu", "--grading-workers", "1", "--label", "same",
            "--out", evals[method])
    return root, evals


def test_the_eval_summary_records_the_runs_method_and_backbone(made):
    root, evals = made
    for method, out in evals.items():
        summary = json.loads((out / "summary.json").read_text())
        assert summary["method"] == method and summary["backbone"] == "synthetic"
        assert summary["training_run"] == str(root / {"luffy": "a", "replace": "b"}[method])


def test_a_luffy_run_and_a_replace_run_land_in_different_rows(made):
    root, evals = made
    done = subprocess.run([sys.executable, "-m", "scope_bench.cli", "report", evals["luffy"], evals["replace"],
                           "--out", root / "report", "--no-plots"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    report = (root / "report" / "report.md").read_text()
    assert "| same (luffy) |" in report and "| same (replace) |" in report
    assert "read from the run label" not in report


def test_the_default_label_is_the_training_runs_folder(made):
    from scope_bench.eval.runner import default_label

    root, _ = made
    assert default_label(str(root / "a" / "final")) == "a"
    assert default_label(str(root / "a" / "checkpoints" / "step_1")) == "a-step_1"


def test_a_changed_task_definition_is_flagged_in_the_report(made, tmp_path):
    """The summary records the task's version; a report made against task files where that task has
    moved on (version 2) names the cells measured under the old one, and the same report against the
    shipped tasks/ does not."""
    import shutil

    from scope_bench.eval.tasks import load_task
    from scope_bench.paths import TASKS_DIR

    _, evals = made
    summary = json.loads((evals["luffy"] / "summary.json").read_text())
    assert summary["tasks"]["synthetic"]["task_version"] == load_task("synthetic").version == 1
    newer = tmp_path / "tasks"
    shutil.copytree(TASKS_DIR, newer)
    text = (newer / "synthetic.yaml").read_text()
    (newer / "synthetic.yaml").write_text(text.replace("\nversion: 1 ", "\nversion: 2 ", 1))
    for tasks, flagged in ((newer, True), (TASKS_DIR, False)):
        done = subprocess.run([sys.executable, "-m", "scope_bench.cli", "report", evals["luffy"], "--out",
                               tmp_path / "report", "--no-plots", "--tasks-dir", tasks],
                              capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr[-3000:]
        report = (tmp_path / "report" / "report.md").read_text()
        assert ("synthetic of same (v1, tasks/ has v2)" in report) is flagged, report
