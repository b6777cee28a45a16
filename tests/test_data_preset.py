"""The `math-l3to5` preset reads SimpleRL-Zoo's MATH level 3-5 file (the paper's 8,523 problems): its
columns, the Hub file it names, and the count check, on local files only (no network in tests)."""

from __future__ import annotations

import pandas as pd

from scope_bench.cli import main as cli_main
from scope_bench.engines.verl import data_cli

ROWS = [  # SimpleRL-Zoo's columns: question, gt_answer, level, subject
    {"question": "What is $2+3$?", "gt_answer": "5", "level": 3, "subject": "Algebra"},
    {"question": "Find $x$ if $x^2=4$, $x>0$.", "gt_answer": "2", "level": 5, "subject": "Algebra"},
]


def _prepare(tmp_path, extra):
    out = tmp_path / "out"
    assert cli_main(["data", "prepare", "--preset", "math-l3to5", *extra, "--out", str(out)]) == 0
    return pd.read_parquet(out / "train.parquet")


def test_preset_reads_a_local_copy_and_checks_the_count(tmp_path, capsys):
    src = tmp_path / "train.parquet"
    pd.DataFrame(ROWS).to_parquet(src)
    frame = _prepare(tmp_path, ["--dataset", str(src)])
    assert [r["ground_truth"] for r in frame.reward_model] == ["5", "2"]
    assert [e["question"] for e in frame.extra_info] == [r["question"] for r in ROWS]
    assert [e["level"] for e in frame.extra_info] == [3, 5] and set(frame.data_source) == {"math"}
    assert "has 8,523 problems in the paper, this source gave 2" in capsys.readouterr().err


def test_preset_fetches_one_file_of_the_hub_repository(tmp_path, monkeypatch, capsys):
    src = tmp_path / "cached.parquet"
    pd.DataFrame(ROWS * 2).to_parquet(src)
    asked = []

    def fake_hub_file(repo_id, filename):  # what hf_hub_download would be asked for; the cached copy
        asked.append((repo_id, filename))
        return str(src)

    monkeypatch.setattr(data_cli, "_hub_file", fake_hub_file)
    frame = _prepare(tmp_path, ["--limit", "3"])
    assert asked == [("hkust-nlp/SimpleRL-Zoo-Data", "simplelr_qwen_level3to5/train.parquet")]
    assert len(frame) == 3 and "8,523" not in capsys.readouterr().err  # a limit is not a wrong count
