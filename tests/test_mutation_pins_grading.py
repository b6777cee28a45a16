"""Hand-computed pins for grading/ behaviour that the mutation run found unchecked (.notes/mut_grading.md).

Each case is an extracted answer, a normalised form or a grade whose right value is known by hand; where
the grade is one Math-Verify also decides, it agrees with `verify(parse(gold), parse(answer))`, and where
it deliberately differs (scientific notation, percent) the module docstring of `equivalence` says why.
"""

from __future__ import annotations

from fractions import Fraction

import pytest

from scope_bench.grading import answers_match, extract_answer, fast_match, math_rewards
from scope_bench.grading.equivalence import gold_text
from scope_bench.grading.extract import clean_answer, last_boxed, strip_reasoning
from scope_bench.grading.normalize import normalize_answer, parse_number


# ---------------------------------------------------------------- extraction
@pytest.mark.parametrize(
    "text, expected",
    [
        (r"\boxed{1} then \boxed{2} and finally \boxed{3}", "3"),  # the last of three boxes
        (r"\boxed{1} then \boxed{2}", "2"),
        (r"\boxed {5}", "5"),  # a space before the brace
        (r"\boxed X", "X"),  # the unbraced form keeps its token
        (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}"),  # nested groups
        (r"\boxed{f(x) = \left\{ x \right.} and more}", r"f(x) = \left\{ x \right."),  # `\{` is no group
        (r"\boxed{\{1, 2\}}", r"\{1, 2\}"),
        (r"\boxed{a \\ b}", r"a \\ b"),  # `\\` escapes nothing after it
        (r"\boxed{x}", "x"),
        (r"\boxed{\frac{1}{2}", None),  # never closes
        (r"no box here", None),
        (r"\boxed $", None),  # nothing after the command
    ],
)
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("a</think>b</think>c", "c"),  # after the last closing tag
        ("</think>x", "x"),  # a closing tag at position 0 still ends the block
        ("</think> so <think> is a tag", " so <think> is a tag"),
    ],
)
def test_strip_reasoning(text, expected):
    assert strip_reasoning(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        (r"a</think>\boxed{1}</think> Answer: 2", "2"),  # the text after the LAST </think>
        (r"<think>\fbox{1}</think> Answer: 2", "2"),
        ("Answer: **$5$**", "5"),  # bold around math: two trimming passes
        (r"\boxed{XX}", "XX"),  # a Roman numeral is not trailing punctuation
        (r"\boxed{\(x+1\)}", "x+1"),
        ("\\boxed{" + "1" * 2000 + "}", "1" * 2000),  # exactly MAX_ANSWER_CHARS is still an answer
        ("\\boxed{" + "1" * 2001 + "}", None),
        (r"\boxed{1} \boxed{2} \boxed{3}.", "3"),
    ],
)
def test_extract_answer_pins(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    "answer, expected",
    [
        ("$42$", "42"),
        (r"\(x+1\)", "x+1"),
        (r"\[x+1\]", "x+1"),
        ("**42**", "42"),
        ("**$5$**", "5"),
        ("$5$.", "5"),
        ("XX", "XX"),
        ("2X.", "2X"),
    ],
)
def test_clean_answer(answer, expected):
    assert clean_answer(answer) == expected


# ---------------------------------------------------------------- normalisation
@pytest.mark.parametrize(
    "answer, expected",
    [
        ("x = 1 +\n2", "1+2"),  # a line break is a space, so the `x =` prefix still goes
        (r"\dfrac{1}{2}", r"\frac{1}{2}"),
        (r"\tfrac{1}{2}", r"\frac{1}{2}"),
        ("1{,}000", "1000"),
        ("1,000", "1000"),
        ("-12,345.5", "-12345.5"),
        (r"50\%", "50"),
        ("50%", "50"),
        (r"5\text{ cm}", "5"),  # a trailing unit
        (r"\text{(A)}", "(A)"),
        (r"\$36", "36"),
        ("$5$", "5"),
        ("x+1.", "x+1"),
        ("XX", "XX"),
        ("x = 5", "5"),
        ("x = y = 5", "x=y=5"),  # a chain of equations is not an `x =` prefix
        ("E_A", "E_{A}"),
        ("x^n", "x^{n}"),
        ("E_1", "E_{1}"),
        (".5", "0.5"),
        ("-.5", "-0.5"),
        ("3/4", r"\frac{3}{4}"),
        ("-3/4", r"\frac{-3}{4}"),
        (r"\frac12", r"\frac{1}{2}"),
        (r"\frac1{2}", r"\frac{1}{2}"),
        (r"\frac{1}2", r"\frac{1}{2}"),
        (r"\sqrt2", r"\sqrt{2}"),
    ],
)
def test_normalize_answer_pins(answer, expected):
    assert normalize_answer(answer) == expected


@pytest.mark.parametrize(
    "s, expected",
    [
        ("1" * 60, (Fraction(int("1" * 60)), "exact")),  # MAX_DIGITS characters is still a number
        ("1" * 61, None),
        (r"3\times10^5", (Fraction(300000), "scientific")),  # single-digit exponent without braces
        ("1e400", (Fraction(10) ** 400, "scientific")),  # MAX_EXPONENT itself is allowed
        ("1e401", None),
        (".5e3", (Fraction(500), "scientific")),
        ("5.", (Fraction(5), "decimal")),
        (r"-\frac{1}{2}", (Fraction(-1, 2), "exact")),
        (r"\frac{1}{2}", (Fraction(1, 2), "exact")),
    ],
)
def test_parse_number_pins(s, expected):
    assert parse_number(s) == expected


# ---------------------------------------------------------------- grades
@pytest.mark.parametrize(
    "pred, gold, expected",
    [
        (r"-\frac{1}{2}", r"\frac{1}{2}", False),  # the sign of a fraction counts (Math-Verify: False)
        (r"\frac{1}{2}", r"-\frac{1}{2}", False),
        ("0.33333", r"\frac{1}{3}", False),  # an exact gold gets no relative tolerance (Math-Verify: False)
        (r"\frac13", "0.33333", True),  # a decimal gold does (rule 2, Qwen-Math's math_equal)
        (r"\dfrac{1}{3}", "0.33333", True),
        (r"\tfrac{1}{3}", "0.33333", True),
        (r"\frac1{3}", "0.33333", True),
        (r"\frac{1}3", "0.33333", True),
        ("2.50025", "2.5", True),  # REL_TOL away (float REL_TOL: just inside)
        ("0", "0.0000005", False),  # a rounding tie goes to Math-Verify, which says False
        ("0.000010", "0.0000095", False),  # (exact half-even rounding would say True)
        (r"50\%", "50", True),  # percent dropped on both sides (documented trap)
        ("50%", "50", True),
        ("3/4", "0.75", True),
        ("4.5e33", r"\frac{9}{2}\times10^{33}", True),  # 4.5 * 10^33, not 4.5 * e * 33
        ("4.5e33", r"\frac{9}{3}\times10^{33}", False),
        ("2^{1/2}", r"\sqrt{2}\%", True),  # slow path: percent dropped from the gold
        ("2^{1/2}", r"\sqrt{2}%", True),
        (r"2^{1/2}\%", r"\sqrt{2}", True),  # and from the answer
        ("2^{1/2}%", r"\sqrt{2}", True),
    ],
)
def test_answers_match_pins(pred, gold, expected):
    assert answers_match(pred, gold) is expected


def test_gold_text_integral_float_string():
    assert gold_text("27.00") == "27"
    assert gold_text("-3.0") == "-3"
    assert gold_text("2.50") == "2.50"


def test_integral_float_gold_is_an_integer():
    """AMC's `27.0` is the integer 27: no relative tolerance for 27.001 (Math-Verify: False as well)."""
    assert math_rewards([r"\boxed{27.001}", r"\boxed{27}"], ["27.0", "27.0"], workers=0) == [0.0, 1.0]


def test_fast_match_fraction_forms():
    assert fast_match(r"\frac12", "0.5") is True
    assert fast_match(r"\sqrt2", r"\sqrt{2}") is True


# ---------------------------------------------------------------- the two-stage parser patch
def test_two_stage_parsing_install(monkeypatch):
    """A fresh install (as in a new worker process) wraps the parser once and grades as plain LL does."""
    from latex2sympy2_extended.latex2sympy2 import _Latex2Sympy

    from scope_bench.grading import antlr, equivalence

    antlr.two_stage_parsing()
    monkeypatch.setattr(_Latex2Sympy, "create_parser", _Latex2Sympy.create_parser)
    monkeypatch.setitem(antlr._TWO_STAGE, "installed", False)
    monkeypatch.setitem(antlr._TWO_STAGE, "enabled", True)
    before = _Latex2Sympy.create_parser
    antlr.two_stage_parsing()
    installed = _Latex2Sympy.create_parser
    assert installed is not before and callable(installed)
    assert antlr._TWO_STAGE["installed"] is True
    antlr.two_stage_parsing()
    assert _Latex2Sympy.create_parser is installed  # installed once
    equivalence._parse_boxed.cache_clear()
    # slow-path grades (not plain numbers), parsed through the new patch; both need x^2 (an LL fallback)
    assert equivalence.verify_slow(r"\frac{3}{\sqrt{3}}", r"\sqrt{3}") is True
    assert equivalence.verify_slow(r"(x+1)^2", r"x^2+2x+1") is True
    assert equivalence.verify_slow(r"(x+1)^2", r"x^2+2x+2") is False
