"""`scope-bench report` from canned runs (tests/golden/runs, made by tests/golden/make_fixtures.py).

The golden test only compares: after an intended change to a report, rewrite tests/golden/report.md with
`make golden` (tests/golden/regenerate.py) and read `git diff tests/golden`.
"""

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from scope_bench.analysis.dynamics import group_by_label, read_metrics, seed_curve
from scope_bench.reports import render
from scope_bench.reports import tables as T
from scope_bench.reports.report import build_tables, write_report
from scope_bench.reports.runs import discover, infer_method

GOLDEN = Path(__file__).parent / "golden"
RUNS = GOLDEN / "runs"


@pytest.fixture(scope="module")
def runs():
    return discover([RUNS])


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    written = write_report([RUNS], out, ["both"])
    return out, written


def test_markdown_report_matches_golden(report_dir):
    """report.md equals tests/golden/report.md; after an intended change, `make golden` rewrites it."""
    out, _ = report_dir
    got = (out / "report.md").read_text()
    assert got == (GOLDEN / "report.md").read_text(), "report changed: if intended, run `make golden`, read the diff"


def test_reference_rows_are_marked_and_never_mixed(runs):
    evals, trains = runs
    tables, _, _ = build_tables(evals, trains)
    labels = {r.label for r in evals}
    for table in tables:
        for block in table.blocks:
            names = [r.name for _, rows in block.sections for r in rows]
            if block.reference:
                assert names and all(n.endswith(" (paper)") for n in names), table.key
            else:
                assert not any("(paper)" in n for n in names), table.key
                assert all(n.split(" (")[0] in labels | {"grpo", "scope"} for n in names), names


def test_table1_averages_and_missing_cells(runs):
    evals, _ = runs
    t1 = T.table1(evals, reference=False)
    rows = {r.name: r.cells for _, rows in t1.blocks[0].sections for r in rows}
    assert set(rows) == {"GRPO", "SCOPE", "Replace Entire Rollout", "SFT"}  # the 1.5B run is in Table 2
    grpo = json.loads((RUNS / "eval" / "grpo" / "summary.json").read_text())["tasks"]
    assert rows["GRPO"]["avg-id"] == pytest.approx(np.mean([grpo[t]["score"] for t in T.benchmarks().groups[0].tasks]))
    assert rows["SFT"]["minerva"] is None and rows["SFT"]["avg-id"] is None  # incomplete group: no average
    assert rows["SFT"]["avg-ood"] is not None
    assert rows["Replace Entire Rollout"]["arc_c"] is None
    md = render.to_markdown(t1)
    assert "| SFT | 17.4 | 5.8 | 53.9 | 75.6 | — | 41.6 | — |" in md
    assert "**45.4**" in md  # SCOPE's OOD average is the best measured one


def test_tables_2_and_3_pick_runs_by_backbone_and_method(runs):
    evals, _ = runs
    t2 = T.table2(evals, reference=False, main=None)
    assert [b.title for b in t2.blocks] == ["Measured: Qwen2.5-1.5B"]
    t3 = T.table3(evals, reference=False)
    assert [r.name for _, rows in t3.blocks[0].sections for r in rows] == ["GRPO", "Replace Entire Rollout", "SCOPE"]
    assert infer_method("RL w/ PRM reward") is None and infer_method("prm-reward-seed1") == "prm-reward"
    assert infer_method("On-policy RL") == "grpo" and infer_method("SCOPE (32B refiner)") == "scope"
    assert infer_method("luffy-seed0") == "luffy" and infer_method("sft_rl") == "sft+rl"
    # the canned summaries name no method: the table says whose was read from the label
    assert "Method read from the run label" in " ".join(t3.notes) and "GRPO -> grpo" in " ".join(t3.notes)


def test_a_recorded_method_keys_the_row_not_the_label(runs):
    """Two summaries under one label, one made by luffy and one by replace (as `scope-bench eval`
    records them): two Table 3 rows, each named with its method, and no guessed-method note."""
    import dataclasses

    evals, _ = runs
    grpo = next(r for r in evals if r.label == "GRPO")
    made = [dataclasses.replace(grpo, label="final", method=m, method_guessed=False,
                                 summary={**grpo.summary, "method": m})
            for m in ("luffy", "replace")]
    t3 = T.table3(made, reference=False)
    assert [r.name for _, rows in t3.blocks[0].sections for r in rows] == ["final (luffy)", "final (replace)"]
    assert not any("read from the run label" in n for n in t3.notes)


def test_table4_medians_equal_reference_libraries_on_the_canned_results(runs):
    sacrebleu = pytest.importorskip("sacrebleu")
    evals, _ = runs
    rows, _ = T.diversity_rows([r for r in evals if r.backbone is None], "aime24")
    by_name = {r.name: r.cells for r in rows}
    assert set(by_name) == {"GRPO (k=4)", "SCOPE (k=4)"}
    for run in evals:
        if run.label not in ("GRPO", "SCOPE") or run.backbone:
            continue
        per_prompt = []
        for samples in run.responses("aime24").values():
            k = len(samples)
            bleu = [sacrebleu.sentence_bleu(samples[i], samples[:i] + samples[i + 1:]).score for i in range(k)]
            per_prompt.append(1 - sum(bleu) / k / 100)
        cell = by_name[f"{run.label} (k=4)"]["1-self-bleu"]
        assert cell[0] == pytest.approx(np.median(per_prompt), abs=1e-9)
        assert cell[1] == pytest.approx(np.percentile(per_prompt, 10), abs=1e-9)
        assert by_name[f"{run.label} (k=4)"]["pass@10"] == run.pass_at("aime24", 10)


def test_bold_marks_the_best_within_each_block_only():
    table = T.Table("t", "t", ["a"], [
        T.Block("m", [(None, [T.Row("x", {"a": 1.04}), T.Row("y", {"a": 0.96})])]),
        T.Block("p", [(None, [T.Row("z (paper)", {"a": 5.0}), T.Row("w (paper)", {"a": 2.0})])], reference=True),
    ])
    md = render.to_markdown(table)
    assert "| x | **1.0** |" in md and "| y | **1.0** |" in md  # a tie as printed: both bold
    assert "| z (paper) | **5.0** |" in md and "| w (paper) | 2.0 |" in md
    tex = render.to_latex(table)
    assert r"x & \textbf{1.0} \\" in tex and r"w (paper) & 2.0 \\" in tex


def test_latex_escapes_and_marks_missing():
    table = T.Table("t", "50% & more", ["a", "b"], [T.Block("m_1", [(None, [T.Row("a_b #1", {"a": None, "b": 3.0})])])])
    tex = render.to_latex(table)
    assert r"a\_b \#1 & -- & 3.0 \\" in tex and r"\caption{50\% \& more}" in tex
    assert r"\toprule" in tex and r"\bottomrule" in tex


def test_latex_report_compiles(report_dir, tmp_path):
    if not shutil.which("pdflatex"):
        pytest.skip("no TeX engine: pdflatex not installed (apt-get install texlive-latex-recommended)")
    out, _ = report_dir
    shutil.copy(out / "report.tex", tmp_path / "report.tex")
    proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "report.tex"],
                          check=False, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert (tmp_path / "report.pdf").stat().st_size > 1000


def test_plots_are_non_blank_images_of_the_expected_size(report_dir):
    from PIL import Image

    from scope_bench.reports.plots import expected_size

    _, written = report_dir
    kinds = {"bars_id": "bars", "bars_ood": "bars", "training_dynamics": "dynamics", "near_miss": "near_miss",
             "diversity_quality": "diversity"}
    pngs = {p.stem: p for p in written["figures"] if p.suffix == ".png"}
    assert set(pngs) == set(kinds)
    for stem, kind in kinds.items():
        img = np.asarray(Image.open(pngs[stem]).convert("RGB"))
        assert img.shape[1::-1] == expected_size(kind), stem
        non_white = (img < 250).any(axis=2).mean()
        colored = (np.ptp(img.astype(int), axis=2) > 60).mean()  # saturated pixels: bars, curves, dots
        assert non_white > 0.02 and colored > 0.001, (stem, non_white, colored)
        pdf = pngs[stem].with_suffix(".pdf")
        assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 2000


def test_training_curves_mean_and_band_over_seeds(runs):
    _, trains = runs
    groups = group_by_label(trains)
    assert sorted(groups) == ["grpo", "scope"] and all(len(g) == 2 for g in groups.values())
    curve = seed_curve(groups["scope"], "val_accuracy")
    a, b = ([r["val_accuracy"] for r in run.rows if "val_accuracy" in r] for run in groups["scope"])
    assert list(curve["step"]) == [5, 10, 15, 20]
    assert np.allclose(curve["mean"], (np.array(a) + np.array(b)) / 2)
    assert np.allclose(curve["hi"] - curve["mean"], np.abs(np.array(a) - np.array(b)) / 2)
    assert seed_curve(groups["grpo"], "keep_ratio") is None  # null for GRPO: not logged


def test_metrics_reader_tolerates_a_cut_last_line_only(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "reward_mean": 0.5}\n{"step": 2, "rew')
    assert [r["step"] for r in read_metrics(path)] == [1]
    path.write_text('{"step": 1}\nnot json\n{"step": 3}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl:2"):
        read_metrics(path)


def test_cli_writes_both_formats_with_labels(tmp_path, capsys):
    from scope_bench.cli import main

    out = tmp_path / "rep"
    rc = main(["report", str(RUNS / "eval"), "--format", "both", "--out", str(out), "--no-plots",
               "--no-reference", "--diversity-task", "aime24,amc", "--label", f"{RUNS / 'eval' / 'grpo'}=On-policy GRPO"])
    assert rc == 0
    md = (out / "report.md").read_text()
    assert "| On-policy GRPO | 18.4 |" in md and "(paper)" not in md
    assert (out / "report.tex").exists() and (out / "tables" / "table1.tex").exists()
    assert (out / "tables" / "table4.md").exists() and not (out / "tables" / "table4-amc.md").exists()  # no samples
    assert "Published" not in (out / "tables" / "table4.md").read_text()


def test_cli_names_the_file_and_field_of_bad_input(tmp_path, capsys):
    from scope_bench.cli import main

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "summary.json").write_text(json.dumps({"label": "x", "tasks": {"aime24": {"metric": "avg@32"}}}))
    assert main(["report", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "summary.json" in err and "tasks.aime24.score" in err
    assert main(["report", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
