"""`scope-bench demo --quick`: the whole main job (ID and OOD eval sets, training of GRPO and SCOPE in
the demo's world, evaluation, the report with its verdicts) at a smoke budget, with every table and
the figure checked, and a rerun that reuses everything."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from scope_bench.cli import main

TABLES = ("demo-table1", "demo-table3", "demo-table4", "demo-training")


def demo(tmp, *extra) -> int:
    return main(["demo", "--quick", "--threads", "1", "--out", str(tmp / "report"), "--runs", str(tmp / "runs"),
                 *extra])


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("demo")
    assert demo(tmp) == 0
    return tmp


def summary(tmp, name: str, split: str = "id-greedy") -> dict:
    (path,) = (tmp / "runs" / "eval" / split).glob(f"{name}/summary.json")
    return json.loads(path.read_text())


def test_report_opens_with_table1_then_the_verdicts(quick):
    report = quick / "report"
    for key in TABLES:
        assert (report / "tables" / f"{key}.md").read_text().strip(), key
        assert "\\begin{tabular}" in (report / "tables" / f"{key}.tex").read_text(), key
    md = (report / "report.md").read_text()
    # the positive control comes first; one seed cannot show RL learning, so the claims cannot be read
    first = md.split("\n\n")[1]
    assert first.startswith("**RL learns here: within noise. The verdicts on the paper's claims below cannot be read")
    assert md.index("Table 1 (miniature)") < md.index("## Positive control") < md.index("## Verdicts") \
        < md.index("Table 3 (miniature)")
    assert md.count("**Claim ") == 4
    assert "Claim 2: " in md and "not measured" in md  # --quick trains GRPO and SCOPE only: no LUFFY row
    tex = (report / "report.tex").read_text()
    assert tex.count("\\begin{table}") == len(TABLES) and tex.rstrip().endswith("\\end{document}")


def test_table1_holds_the_measured_scores(quick):
    table = (quick / "report" / "tables" / "demo-table1.md").read_text()
    for label, name in (("Initial model", "start"), ("On-policy RL (GRPO)", "grpo-seed0-step2"),
                        ("SCOPE", "scope-seed0-step2")):
        ident, ood = summary(quick, name)["tasks"]["synthetic"], summary(quick, name, "ood-greedy")["tasks"]["synthetic"]
        assert ident["n_problems"] == ood["n_problems"] == 4 and ident["samples_per_problem"] == 1
        assert ident["sampling"]["temperature"] == 0.0  # pass@1 is greedy; samples only for pass@k, diversity
        sampled = summary(quick, name, "id-sampled")["tasks"]["synthetic"]
        assert sampled["samples_per_problem"] == 4 and sampled["sampling"]["temperature"] == 1.0
        row = next(line for line in table.splitlines() if line.startswith(f"| {label} |"))
        cells = [c.strip("* ") for c in row.split("|")[2:4]]
        assert cells == [f"{ident['pass@k']['1']:.1f}", f"{ood['pass@k']['1']:.1f}"]  # one seed: no ± part


def test_training_ran_both_methods_from_the_same_start_in_the_demo_world(quick):
    runs = quick / "runs" / "train"
    rows = {m: [json.loads(x) for x in (runs / f"{m}-seed0" / "metrics.jsonl").read_text().splitlines()]
            for m in ("grpo", "scope")}
    assert [r["step"] for r in rows["grpo"]] == [r["step"] for r in rows["scope"]] == [1, 2]
    # a random-init model fails everything: SCOPE rectifies every group, GRPO never does
    assert all(r["groups_rectified"] == r["groups_total"] for r in rows["scope"])
    assert all(r["groups_rectified"] == 0 and r["all_fail_groups"] == 1.0 for r in rows["grpo"])
    config = (runs / "scope-seed0" / "config.yaml").read_text()
    assert "style: shifted" in config and "- ops5" in config and "fp_rate: 0.05" in config
    from scope_bench.synthetic import tiny_model  # --quick: no warm start, the trainer's random-init model

    assert summary(quick, "start")["checkpoint"] == str(tiny_model())


def test_eval_sets_are_held_out_and_split_by_chain_length(quick):
    from scope_bench.synthetic import generate_split

    seen = {r["question"] for split, n in (("train", 16), ("val", 4)) for r in generate_split(split, n, seed=0)}
    for pattern, n_ops in (("synthetic-hard-ops5-ops6-*.jsonl", {4, 5, 6}), ("synthetic-ops7-*.jsonl", {7})):
        (data,) = (quick / "runs" / "data").glob(pattern)
        rows = [json.loads(x) for x in data.read_text().splitlines()]
        assert len(rows) == len({r["question"] for r in rows}) == 500
        assert not seen & {r["question"] for r in rows}
        assert {r["question"].count(", then") + 1 for r in rows} == n_ops


def test_figure_is_a_non_blank_image_of_the_expected_size(quick):
    from PIL import Image

    from scope_bench.reports.plots import expected_size

    figures = quick / "report" / "figures"
    assert {p.stem for p in figures.glob("*.png")} == {"exploration"}
    img = np.asarray(Image.open(figures / "exploration.png").convert("RGB"))
    assert img.shape[1::-1] == expected_size("exploration")
    assert (img < 250).any(axis=2).mean() > 0.02 and (np.ptp(img.astype(int), axis=2) > 60).mean() > 0.0005
    assert (figures / "exploration.pdf").read_bytes()[:5] == b"%PDF-"


def test_rerun_reuses_training_and_samples(quick, capsys):
    capsys.readouterr()
    results = sorted((quick / "runs" / "eval").glob("*/*/results.jsonl"))
    assert len(results) == 9  # 3 checkpoints x (ID greedy, OOD greedy, ID sampled)
    before = {p: p.read_text() for p in results}
    metrics = {p: p.read_text() for p in (quick / "runs" / "train").glob("*/metrics.jsonl")}
    assert demo(quick) == 0
    out = capsys.readouterr().out
    assert out.count("(finished: reused)") == 2
    assert {p: p.read_text() for p in results} == before  # no sample drawn again
    assert {p: p.read_text() for p in metrics} == metrics
    assert "GRPO" in out and "SCOPE" in out and "report.md" in out and "claim 1:" in out


def test_bad_arguments_fail_before_any_work(tmp_path, capsys):
    assert demo(tmp_path, "--set", "train.nope=1") == 2
    assert "train.nope" in capsys.readouterr().err
    assert demo(tmp_path, "--seeds", "a,b") == 2
    assert "--seeds" in capsys.readouterr().err
    assert demo(tmp_path, "--methods", "grpo,magic") == 2
    assert "magic" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_more_steps_resume_the_finished_runs_and_fewer_are_refused(tmp_path, capsys):
    torch.set_num_threads(1)
    small = ("--methods", "scope", "--samples", "2")  # its own runs: a run dir cannot move (config.yaml names it)
    assert demo(tmp_path, *small) == 0
    assert demo(tmp_path, *small, "--steps", "1") == 2
    assert "already trained 2 steps" in capsys.readouterr().err
    assert demo(tmp_path, *small, "--steps", "3") == 0
    assert "(resuming after step 2)" in capsys.readouterr().out
    metrics = (tmp_path / "runs" / "train" / "scope-seed0" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in metrics] == [1, 2, 3]
    assert summary(tmp_path, "scope-seed0-step3", "ood-greedy")["tasks"]["synthetic"]["n_problems"] == 4


def test_other_tasks_table_means_runs_of_a_label_and_skips_paper_tasks(tmp_path):
    from scope_bench.reports import render
    from scope_bench.reports import tables as T
    from scope_bench.reports.runs import EvalRun

    def run(label, score, k, passes, extra=None):
        tasks = {"toy": {"metric": "pass@1", "score": score, "samples_per_problem": k, "pass@k": passes},
                 "aime24": {"metric": "avg@32", "score": 9.0}, **(extra or {})}
        return EvalRun(tmp_path, label, None, None, {"tasks": tasks})

    runs = [run("A", 10.0, 8, {"1": 10.0, "4": 30.0, "8": 50.0}), run("A", 20.0, 4, {"1": 20.0, "4": 40.0}),
            run("B", 5.0, 4, {"1": 5.0, "4": 7.0}, {"other": {"metric": "avg@4", "score": 1.0}})]
    table = T.other_tasks_table(runs)
    assert T.other_tasks(runs) == ["toy", "other"]
    assert table.columns == ["toy pass@1", "toy pass@4", "other avg@4"]  # k: the largest every run drew
    rows = {r.name: r.cells for r in table.blocks[0].sections[0][1]}
    assert rows["A (mean of 2 runs)"] == {"toy pass@1": 15.0, "toy pass@4": 35.0, "other avg@4": None}
    assert rows["B"] == {"toy pass@1": 5.0, "toy pass@4": 7.0, "other avg@4": 1.0}
    assert "| A (mean of 2 runs) | **15.0** | **35.0** | — |" in render.to_markdown(table)
