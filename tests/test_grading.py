"""Answer extraction, math equivalence (each known trap), multiple choice, verl routing, the CLI."""

from __future__ import annotations

import json
from fractions import Fraction

import pytest

from scope_bench.grading import (
    answers_match,
    choice_reward,
    compute_score,
    extract_answer,
    extract_choice,
    fast_match,
    math_rewards,
)
from scope_bench.grading.normalize import normalize_answer, parse_number


# ---------------------------------------------------------------- extraction
@pytest.mark.parametrize(
    "text, expected",
    [
        (r"so $\boxed{\frac{1}{2}}$.", r"\frac{1}{2}"),
        (r"first \boxed{3}, then \boxed{\sqrt{\frac{4}{9}}}", r"\sqrt{\frac{4}{9}}"),  # the last box
        (r"\boxed{\{1, 2\}}", r"\{1, 2\}"),  # escaped braces do not close the box
        (r"\boxed 7 is it", "7"),
        (r"\fbox{12}", "12"),
        (r"<think>maybe \boxed{1}</think> The answer is \boxed{2}.", "2"),  # after the reasoning block
        (r"<think>thinking \boxed{1} and never stop", None),  # cut off while thinking
        ("The final answer is $42$.", "42"),  # documented fallbacks when nothing is boxed
        ("so the answer is 3/4.", "3/4"),
        ("The answer is $\\frac{1}{2}$, which is half.", r"\frac{1}{2}"),
        ("The final answer is 42. I hope it is correct.", "42"),
        (r"The final answer is $\$36$.", r"\$36"),
        ("Answer: 17", "17"),
        ("#### 1,000", "1,000"),
        ("I cannot solve this.", None),  # no answer
        ("", None),
        (r"the answer is \boxed{\frac{1}{2}", None),  # unbalanced: the last box never closes
        (r"\boxed{1} and later \boxed{2", None),  # an earlier box does not stand in for it
        (r"\boxed{}", None),
        ("so \\boxed\n{5}.", "5"),  # whitespace before the brace, a newline included, as in LaTeX
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_extract_answer_huge_response():
    filler = "lorem ipsum dolor sit amet { " * 36000  # ~1 MB, with unbalanced braces
    assert len(filler) > 1_000_000
    assert extract_answer(filler + r" so \boxed{5}") == "5"
    assert extract_answer(filler) is None
    assert extract_answer(r"\boxed{" + "x+" * 600_000 + "1}") is None  # an "answer" of 1 MB is none
    assert math_rewards([filler + r"\boxed{5}", filler], ["5", "5"], workers=0) == [1.0, 0.0]


# ---------------------------------------------------------------- normalisation and the traps
@pytest.mark.parametrize(
    "pred, gold",
    [
        (r"\dfrac{3}{4}", r"\frac{3}{4}"),
        (r"\tfrac34", "0.75"),
        ("25", "025"),  # AIME leading zeros
        ("7", "007"),
        ("1,000", "1000"),  # thousands separators
        ("1{,}000", "1000"),
        (r"1\,000", "1000"),
        (r"4.5 \times 10^{33}", "4.5e33"),  # Minerva gold in plain scientific notation
        (r"4.5\cdot10^{33}", "4.5e33"),
        ("4.5e33", "4.5e33"),
        ("0.00001", "1e-5"),
        (r"-\frac{1}{3}", "-1./3"),  # Python float literal in LUFFY's copy
        (r"\arcsin(10/13)", "np.arcsin(10/13)"),
        (r"90^\circ", "90"),  # degrees
        (r"90^{\circ}", r"90^\circ"),
        (r"1950^\circ C", "1950"),
        (r"50\%", "50"),  # percent dropped on both sides
        (r"5\text{ cm}", "5"),  # units
        (r"\text{Evelyn}", "Evelyn"),  # \text{}
        ("42.", "42"),  # trailing punctuation
        ("x = 5", "5"),
        ("27", 27.0),  # AMC gold stored as a float
        ("0.56131", "0.5613"),  # within the relative tolerance of an approximate gold
        ("3.0000001", "3"),  # Math-Verify's 6-decimal rounding
        (r"\frac{\sqrt{12}}{2}", r"\sqrt{3}"),  # needs sympy
        ("(1,2)", "1 < x < 2"),  # gold inequality accepts the interval
        ("E_1, E_2", "E_{1},E_{2}"),
    ],
)
def test_equivalent(pred, gold):
    assert math_rewards([rf"\boxed{{{pred}}}"], [gold], workers=0) == [1.0]


@pytest.mark.parametrize(
    "pred, gold",
    [
        ("4.5*e*33", "4.5e33"),  # the wrong reading of 4.5e33 is not the gold
        ("4.4", "4.5e33"),
        (r"4.49 \times 10^{33}", "4.5e33"),  # outside the tolerance
        ("0.5", "50"),  # 50% is 50, not 0.5 (documented)
        ("25.001", "25"),  # an exact gold gets no relative tolerance
        ("1", "1000"),
        ("1, 000", "1"),
        ("1, 234", "1234"),  # a list of two numbers, not 1,234 (Math-Verify: {1, 234})
        ("1 < x < 2", "(1,2)"),  # gold interval does not accept the inequality (Math-Verify)
        (r"\frac{1}{3}", "0.33"),
        ("7.4e-12", "0"),  # tiny numbers in scientific notation are not rounded to 6 decimals
        (r"1.325 \times 10^{-27}", "2.55e-10"),
        ("2.88e-19", "1.325e-27"),  # Math-Verify's evalf(chop=True) would call these equal
        ("2", r"\hbar \omega(v+1 / 2)-\frac{E_{0}^{2} e^{2}}{2 m \omega^{2}}"),  # no fragment match
    ],
)
def test_not_equivalent(pred, gold):
    assert math_rewards([rf"\boxed{{{pred}}}"], [gold], workers=0) == [0.0]


def test_parse_number_is_exact():
    assert parse_number("0.1")[0] * 3 == parse_number(r"\frac{3}{10}")[0]
    assert parse_number("025") == (25, "exact")
    assert parse_number("2.50") == (Fraction(5, 2), "decimal")
    assert parse_number(r"2.5\times10^{-3}") == (Fraction(25, 10000), "scientific")
    assert parse_number("4.5e33")[0] == 45 * 10**32
    assert parse_number("1e999999") is None  # huge literals go to the bounded slow path
    assert parse_number(r"\frac{1}{0}") is None
    assert parse_number("x") is None


def test_fast_path_declines_what_it_cannot_prove():
    assert fast_match("3", "3") is True
    assert fast_match("4", "3") is False
    assert fast_match(r"\sqrt{9}", "3") is None  # sympy must decide
    assert fast_match("0.0000005", "0.000001") is None  # a rounding tie at 6 decimals
    assert answers_match(r"\sqrt{9}", "3") is True


def test_normalize_is_idempotent():
    for s in [r"\left( 3, \frac{\pi}{2} \right)", r"\$1,000.50", r"x = \dfrac12", r"90^\circ"]:
        assert normalize_answer(normalize_answer(s)) == normalize_answer(s)


# ---------------------------------------------------------------- multiple choice
@pytest.mark.parametrize(
    "response, expected",
    [
        (r"\boxed{C}", "C"),
        (r"\boxed{\text{C}}", "C"),
        (r"\boxed{\textbf{(C)}}", "C"),
        (r"\boxed{C) 42 meters}", "C"),
        (r"\boxed{(C)}", "C"),
        ("Thinking...\nANSWER: C", "C"),
        ("ANSWER: $C$", "C"),
        ("So the answer is (C).", "C"),
        ("The correct option is D because ...", "D"),
        ("**Answer:** B", "B"),
        ("the answer is (A). On reflection, ANSWER: J", "J"),  # the last statement counts
        (r"<think>the answer is A</think> \boxed{B}", "B"),
        ("ANSWER: A or B", None),  # several letters: no single choice
        (r"\boxed{A, C}", None),
        (r"\boxed{AC}", None),
        ("The answer is Ammonia", None),  # a word, not a letter
        ("no idea", None),
        ("", None),
    ],
)
def test_extract_choice(response, expected):
    assert extract_choice(response) == expected


def test_choice_options_range_and_gold_forms():
    assert extract_choice("ANSWER: E", n_options=4) is None  # only A-D exist
    assert extract_choice("ANSWER: J", n_options=10) == "J"  # MMLU-Pro has A-J
    assert choice_reward("ANSWER: C", "(C)") == 1.0
    assert choice_reward("ANSWER: C", "c") == 1.0
    assert choice_reward("ANSWER: B", "C") == 0.0
    with pytest.raises(ValueError, match="gold letter"):
        choice_reward("ANSWER: C", "K")


def test_real_gpqa_prompt_format():
    from scope_bench.paths import SHARED_DATA_DIR

    path = SHARED_DATA_DIR / "benchmarks" / "luffy" / "valid.gpqa.parquet"
    if not path.exists():
        pytest.skip(f"real rows not found at {path}")
    import pandas as pd

    row = pd.read_parquet(path).iloc[0]
    assert "ANSWER: $LETTER" in row.prompt[-1]["content"]
    gold = row.reward_model["ground_truth"]
    assert choice_reward(f"Reasoning.\nANSWER: {gold}", gold) == 1.0


# ---------------------------------------------------------------- verl and CLI
def test_compute_score_routes_by_source():
    assert compute_score("math", r"so \boxed{\dfrac{1}{2}}", "0.5") == 1.0
    assert compute_score("minerva", r"\boxed{4.5\times10^{33}}", "4.5e33") == 1.0
    assert compute_score("gpqa", "ANSWER: A", "A") == 1.0
    assert compute_score("arc_c", r"\boxed{B}", "A") == 0.0
    assert compute_score("mmlu_pro", "the answer is (J)", "J") == 1.0


def test_grade_cli(tmp_path):
    from scope_bench.cli import main

    rows = [
        {"response": r"\boxed{42}", "ground_truth": "42"},
        {"response": "ANSWER: C", "ground_truth": "C", "data_source": "gpqa"},
        {"response": "nothing", "ground_truth": "1"},
        {"response": r"\boxed{4.5 \times 10^{33}}", "ground_truth": "4.5e33"},
    ]
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    assert main(["grade", str(path), "--out-dir", str(out), "--workers", "1"]) == 0
    labels = [json.loads(line) for line in (out / "labels.jsonl").read_text().splitlines()]
    assert [label["correct"] for label in labels] == [1, 1, 0, 1]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n"] == 4 and summary["correct"] == 3 and summary["no_answer"] == 1
    assert summary["by_source"]["gpqa"]["accuracy"] == 100.0
    # resuming grades nothing twice
    assert main(["grade", str(path), "--out-dir", str(out)]) == 0
    assert len((out / "labels.jsonl").read_text().splitlines()) == 4

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"resp": "x"}) + "\n")
    assert main(["grade", str(bad), "--out-dir", str(tmp_path / "o2")]) == 2  # error names row and field


def test_compute_score_from_verl_threads():
    """verl 0.9's reward loop calls the function from an executor thread, with extra kwargs."""
    from concurrent.futures import ThreadPoolExecutor

    calls = [("math", r"\boxed{\sqrt{16}}", "4"), ("math", r"\boxed{5}", "4"), ("gpqa", "ANSWER: B", "B")]
    with ThreadPoolExecutor(3) as pool:
        scores = list(pool.map(lambda c: compute_score(
            data_source=c[0], solution_str=c[1], ground_truth=c[2], extra_info={}, reward_router_address=None,
        ), calls))
    assert scores == [1.0, 0.0, 1.0]
