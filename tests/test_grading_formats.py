"""Issue 25's findings, each through `math_reward` (and fresh processes where history could matter):
Minerva's answer format, spaces between numbers, percent words, a trailing ellipsis, several boxes,
Math-Verify's own parse, and verdicts that do not depend on the process's history or load."""

import json
import subprocess
import sys

import pytest

from scope_bench.grading import grade_math_batch, math_reward
from scope_bench.grading.extract import extract_answer


# ---------------------------------------------------------------- 1. Minerva's answer format
@pytest.mark.parametrize("response, gold, expected", [
    ("Final Answer: The final answer is $5$. I hope it is correct.", "5", 1.0),
    ("Final Answer: The final answer is 7.78. I hope it is correct.", "7.78", 1.0),
    ("Final Answer: The final answer is $6$. I hope it is correct.", "5", 0.0),
    ("So $x=3$.\n\nFinal Answer: The final answer is $\\frac{1}{2}$. I hope it is correct.", "0.5", 1.0),
    # a prose answer sentence: what follows its last `is`
    ("Final Answer: The largest $n$ is 34.", "34", 1.0),
    # Minerva's final statement after an intermediate box has the last word
    (("so the interest is $\\boxed{255}$. In all $10,455. Final Answer: The final answer is $10,455$. "
      "I hope it is correct."), "10455", 1.0),
])
def test_minervas_final_answer_format(response, gold, expected):
    assert math_reward(response, gold) == expected


def test_a_box_keeps_its_answer_against_later_chatter():
    text = "Therefore $17^{-1}\\equiv \\boxed{44}\\pmod{83}$.\n\nWe may check our answer: $17\\cdot 44 = 748$."
    assert extract_answer(text) == "44"
    assert extract_answer("\\boxed{5}. Let me check that the answer is correct.") == "5"


# ---------------------------------------------------------------- 2. spaces between numbers
@pytest.mark.parametrize("response, gold, expected", [
    ("\\boxed{4 4/9}", "44/9", 0.0),  # a mixed number is 40/9
    ("\\boxed{4 4/9}", "\\frac{40}{9}", 1.0),
    ("\\boxed{-2 1/2}", "-5/2", 1.0),
    ("\\boxed{2 3}", "23", 0.0),
    ("\\boxed{2 3}", "5", 0.0),  # nor a sum (Math-Verify reads `2 3` as 5)
    ("\\boxed{1 000}", "1000", 1.0),  # a thousands separator
    ("\\boxed{1\\,000}", "1000", 1.0),
])
def test_a_space_between_digits_is_never_deleted(response, gold, expected):
    assert math_reward(response, gold) == expected


@pytest.mark.parametrize("response, gold, expected", [
    ("\\boxed{+11 5/6}", "71/6", 1.0),  # an explicit plus sign
    ("\\boxed{1 000 4/9}", "9004/9", 1.0),  # a spaced-thousands whole part
    ("\\boxed{4 0/9}", "4", 1.0),
    ("\\boxed{11 6/6}", "12", 0.0),  # an improper fraction part: no mixed number, so nothing
    ("\\boxed{11 6/6}", "11", 0.0),
    ("\\boxed{11 7/6}", "73/6", 0.0),
    ("The answer is 11 6/6.", "12", 0.0),
    ("\\boxed{11\n5/6}", "71/6", 0.0),  # a line break is not the space of a mixed number
    ("\\boxed{11\r\n5/6}", "71/6", 0.0),
])
def test_a_mixed_number_is_a_whole_and_a_proper_fraction_on_one_line(response, gold, expected):
    """Math-Verify's own mixed-number tests (its main branch): `+11 5/6` and `1 000 4/9` are mixed
    numbers; `11 6/6` (not 12) and `11` newline `5/6` (not 71/6) are not."""
    assert math_reward(response, gold) == expected


# ---------------------------------------------------------------- 3. percent as a word
@pytest.mark.parametrize("response", ["\\boxed{28 percent}", "\\boxed{28 pct}", "\\boxed{28 percentage}",
                                      "\\boxed{28\\%}", "The answer is 28 percent."])
def test_percent_as_a_word(response):
    assert math_reward(response, "28\\%") == 1.0
    assert math_reward(response, "29\\%") == 0.0


# ---------------------------------------------------------------- 4. a trailing ellipsis
def test_a_trailing_ellipsis_is_an_answer_that_goes_on():
    assert math_reward("The answer is $1, 2, 3, \\ldots$", "1, 2, 3") == 0.0
    assert math_reward("\\boxed{1, 2, 3, \\dots}", "1, 2, 3") == 0.0
    assert math_reward("\\boxed{1, 2, 3, ...}", "1, 2, 3") == 0.0
    assert math_reward("The answer is $1, 2, 3, ...$", "\\{1, 2, 3\\}") == 0.0
    assert math_reward("\\boxed{1, 2, 3}", "1, 2, 3, \\ldots") == 0.0
    assert math_reward("\\boxed{1, 2, 3, \\ldots}", "1, 2, 3, \\ldots") == 1.0


# ---------------------------------------------------------------- 5. several boxes
@pytest.mark.parametrize("response, gold, expected", [
    ("\\boxed{1}, \\boxed{2} and \\boxed{3}", "\\{1,2,3\\}", 1.0),
    ("\\boxed{1}, \\boxed{2} and \\boxed{3}", "1, 2, 3", 1.0),
    ("\\boxed{3}, \\boxed{1} and \\boxed{2}", "\\{1,2,3\\}", 1.0),  # a set: any order
    ("\\boxed{1}, \\boxed{2} and \\boxed{4}", "\\{1,2,3\\}", 0.0),
    ("$$\\boxed{(2, 2)} \\quad \\text{and} \\quad \\boxed{(6, 2)}$$", "(2, 2), (6, 2)", 1.0),
    ("$$\\boxed{k = 45} \\quad \\text{and} \\quad \\boxed{n = 2}$$", "k = 45, n = 2", 1.0),
    # a gold of one item: the last box, as before (hedging with several boxes earns nothing)
    ("\\boxed{3} or \\boxed{5}", "3", 0.0),
    ("\\boxed{3} or \\boxed{5}", "5", 1.0),
    # an early box far from the final run is an intermediate result, not an item
    ("First \\boxed{7}." + " We go on." * 20 + " So \\boxed{1} and \\boxed{2}.", "\\{7, 1, 2\\}", 0.0),
])
def test_several_boxes_for_a_list_gold(response, gold, expected):
    assert math_reward(response, gold) == expected


def test_box_runs_and_gold_items():
    from scope_bench.grading.extract import count_items, last_box_run

    assert last_box_run("\\boxed{1}, \\boxed{2} and \\boxed{3}") == ["1", "2", "3"]
    assert last_box_run("\\boxed{1}\n\nthen\n\n\\boxed{2}") == ["2"]
    assert last_box_run("\\boxed{1} and \\boxed{2") == []  # the last box is unclosed: no answer
    assert [count_items(g) for g in ("\\{1,2,3\\}", "{1,2,3}", "(2, 2), (6, 2)", "(1, 2)", "[0, 1)", "5",
                                     "\\frac{1}{2}, 3")] == [3, 3, 2, 1, 1, 1, 2]


# ---------------------------------------------------------------- 6 and 7: Math-Verify's parse, in any history
PROBE = r"""
import json, sys
from scope_bench.grading import grade_math_batch
from scope_bench.grading.equivalence import verify_slow
history = json.loads(sys.argv[1])
if history:  # grade other things first, in this process and in the pool's workers
    grade_math_batch([f"\\boxed{{{h}}}" for h in history], ["x^2+1"] * len(history), workers=int(sys.argv[2]))
cases = [(r"\boxed{0}", r"1 = \zzz = x = 0")] + [(f"The final answer is {p}", "0")
         for p in ("-4 0/0", "0 0/0", "1 000 0/0", "-1 000 0/0")]
grades = grade_math_batch([c[0] for c in cases], [c[1] for c in cases], workers=int(sys.argv[2]))
print(json.dumps([[g.correct, g.method] for g in grades] + [verify_slow("0", r"1 = \zzz = x = 0")]))
"""


def _probe(history, workers):
    out = subprocess.run([sys.executable, "-c", PROBE, json.dumps(history), str(workers)],
                         capture_output=True, text=True, timeout=300, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_verdicts_do_not_depend_on_what_the_process_parsed_before():
    """`1 = \\zzz = x = 0` answered `0` is right for Math-Verify (its LL parse); the grader's parse is
    that one in a fresh process, after other parses, in the pool and in-process. The undefined mixed
    numbers `-4 0/0` ... are wrong for gold 0, decided without the time limit."""
    from math_verify import parse, verify

    gold = parse("\\boxed{1 = \\zzz = x = 0}", extraction_mode="first_match")
    assert verify(gold, parse("\\boxed{0}", extraction_mode="first_match"))  # plain Math-Verify's verdict
    expected = [[True, "math_verify"]] + [[False, "fast"]] * 4 + [True]
    history = ["x^2_1", "x^{2}+1", "\\zzz", "1 = \\zzz", "a^2+b^2", "(x^2, y^2_1)", "2x^2=y^2"]
    runs = [_probe([], 0), _probe(history, 0), _probe([], 1), _probe(history[::-1], 2)]
    assert runs == [expected] * 4


def test_a_timeout_is_recorded_as_such():
    """A grade the time limit decides says so (never a silent verdict)."""
    (grade,) = grade_math_batch(["\\boxed{9^{9^{9^{9}}}+x}"], ["x+1"], timeout_s=0.5, workers=1)
    assert (grade.correct, grade.method, grade.timed_out) == (False, "timeout", True)


# ---------------------------------------------------------------- the policy: same in eval, reward and `grade`
def test_the_reward_follows_the_default_policy_unless_told():
    from scope_bench.grading import compute_score

    unboxed = "So we get 9 in the end."
    assert compute_score("math500", unboxed, "9") == math_reward(unboxed, "9") == 0.0
    assert compute_score("math500", unboxed, "9", grading={"unboxed": "last_math"}) == 1.0
    with pytest.raises(ValueError, match="grading.percent"):
        compute_score("math500", "\\boxed{5}", "5", grading={"percent": "ratio"})


def test_grade_command_takes_the_policy_and_records_it(tmp_path):
    rows = [{"response": "So we get 9 in the end.", "ground_truth": "9"},
            {"response": "\\boxed{0.28}", "ground_truth": "28\\%"},
            {"response": "\\boxed{0,5}", "ground_truth": "0.5"}]
    data = tmp_path / "responses.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))

    def grade(*options):
        out = tmp_path / ("out" + "".join(options))
        subprocess.run([sys.executable, "-m", "scope_bench.cli", "grade", str(data), "--out-dir", str(out),
                        "--workers", "1", *options], check=True, capture_output=True, text=True, timeout=300)
        labels = [json.loads(x)["correct"] for x in (out / "labels.jsonl").read_text().splitlines()]
        return labels, json.loads((out / "summary.json").read_text())["grading"]

    labels, grading = grade()
    assert labels == [0, 0, 0]
    assert grading["policy"] == {"unboxed": "anchored", "percent": "drop", "decimal_comma": False}
    assert grading["version"] == "2"
    labels, grading = grade("--unboxed", "last_math", "--percent", "either", "--decimal-comma")
    assert labels == [1, 1, 1]
    assert grading["policy"] == {"unboxed": "last_math", "percent": "either", "decimal_comma": True}
    help_text = subprocess.run([sys.executable, "-m", "scope_bench.cli", "grade", "--help"], check=True,
                               capture_output=True, text=True).stdout
    assert "--unboxed" in help_text and "--percent" in help_text and "--decimal-comma" in help_text
