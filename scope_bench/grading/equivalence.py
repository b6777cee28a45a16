"""Is an extracted answer equal to the ground truth? Fast exact rules first, Math-Verify for the rest.

An answer is correct when any of these holds (the union of what LUFFY/Oat-Zero/Qwen-Math accept):

1. its normalised string equals the gold's (`normalize_answer`, the Hendrycks MATH rule);
2. both are plain numbers (integer, decimal, `a/b`, `\\frac{a}{b}`, scientific notation) and
   - they are equal as exact rationals (so AIME's `025` is `25`), or
   - one is written as a decimal (`0.5`, not `5e-1`) and both round to the same 6 decimals
     (Math-Verify's rule for floats; so `0.0000001` is `0`, as with the peers), or
   - the gold is written as a decimal or in scientific notation (an approximation, as in Minerva)
     and the answer is within a relative `REL_TOL` of it (Qwen2.5-Math's `math_equal` rule);
3. `math_verify.verify(gold, answer)` (gold first: it is asymmetric).

Rules 1-2 decide in microseconds without sympy (`fast_match`); only what they cannot decide reaches
Math-Verify (`verify_slow`), which can take seconds or hang, so callers bound it (see `batch`).
`fast_match` never says False where Math-Verify could say True (it declines, returning None),
with one deliberate exception: Math-Verify calls any two numbers below about 1e-15 equal (its
`evalf(chop=True)`), so `2.88e-19` would earn the reward for `1.325e-27`; plain numbers here are
compared exactly. (Tiny values inside larger expressions still reach Math-Verify's rule.)
Where it says True and Math-Verify says False, a rule above is deliberately wider: the relative
tolerance, percent and units dropped by rule 1, and exact arithmetic on scientific notation
(Math-Verify compares `1.14e2` or `1.14\\times10^{2}` with `114` in binary floats and says no).

Documented behaviour of the known traps:
- `4.5e33` (58 golds in LUFFY's Minerva copy, and some model answers) is 4.5 * 10^33, never
  4.5 * e * 33 as Math-Verify reads it;
- `\\dfrac`/`\\tfrac` are `\\frac`; `1,000` and `1{,}000` are one thousand, `1, 2` is a set;
- `\\%` (and `percent`, `pct`) and degrees are dropped on both sides (Hendrycks), so `50\\%`
  matches `50`, not `0.5` (policy `percent="either"` accepts `0.5` too);
- `4 4/9` is the mixed number 40/9 and `1 000` is 1000; `2 3` is neither 23 nor 5;
- `1, 2, 3, \\ldots` (an ellipsis at the end) is not `1, 2, 3`;
- intervals vs inequalities follow Math-Verify: a gold inequality `1 < x < 2` accepts `(1, 2)`,
  a gold interval `(1, 2)` does not accept the inequality;
- a gold float with an integral value (AMC's `27.0`) is the integer 27.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction
from functools import lru_cache

from scope_bench.grading.antlr import two_stage_parsing
from scope_bench.grading.normalize import (
    DECIMAL_COMMA_RE,
    SPACED_DIGITS,
    normalize_answer,
    parse_number,
    spaced_numbers,
)
from scope_bench.grading.policy import DEFAULT_POLICY, GradingPolicy

REL_TOL = 1e-4
# Math-Verify rounds floats to this many decimals before comparing
FLOAT_ROUNDING = 6
# Past this magnitude sympy's 15-digit floats, not exact rationals, decide: leave it to Math-Verify
EXACT_MAGNITUDE = 10**12

_PLAIN_SCI_RE = re.compile(r"([-+]?(?:\d+\.?\d*|\.\d+))[eE]([-+]?\d+)")


def gold_text(gold) -> str:
    """The ground truth as a string; an integral float (AMC's 27.0) as an integer."""
    if isinstance(gold, float) and gold.is_integer():
        return str(int(gold))
    text = str(gold).strip()
    if re.fullmatch(r"-?\d+\.0+", text):
        text = text.split(".")[0]
    return text


def sci_to_latex(answer: str) -> str:
    """`4.5e33` -> `4.5\\times10^{33}` (Math-Verify would read 4.5 * e * 33)."""
    sci = _PLAIN_SCI_RE.fullmatch(answer.strip())
    return f"{sci.group(1)}\\times10^{{{sci.group(2)}}}" if sci else answer


@lru_cache(maxsize=1 << 16)
def gold_latex(gold: str) -> str:
    """The gold rewritten as LaTeX Math-Verify reads as intended (the traps in the docstring)."""
    if _PLAIN_SCI_RE.fullmatch(gold):
        return sci_to_latex(gold)
    # numpy names in LUFFY's Minerva copy: np.arcsin(10/13) -> \arcsin(10/13)
    text = re.sub(r"\bnp\.(arcsin|arccos|arctan|sinh|cosh|tanh|sin|cos|tan|exp|log|pi)\b", r"\\\1", gold)
    text = re.sub(r"(\d)\.(?!\d)", r"\1", text)  # Python float literals: -1./3
    return strip_percent(text)


def strip_percent(answer: str) -> str:
    return answer.replace("\\%", "").replace("%", "")


@lru_cache(maxsize=1 << 16)
def _gold_forms(gold: str, decimal_comma: bool = False) -> tuple[str, tuple[Fraction, str] | None]:
    norm = normalize_answer(gold, decimal_comma=decimal_comma)
    return norm, parse_number(norm)


_ELLIPSIS_RE = re.compile(r"(?:\\[lc]?dots|\.\.\.|…)\s*\\?[\]\)\}]?\s*$")
_SPACED_DIGITS_RE = re.compile(r"\d" + re.escape(SPACED_DIGITS) + r"\d")
_ZERO_DENOMINATOR_RE = re.compile(r"-?\\frac\{-?\d+\}\{0+\}")
_PERCENT_RE = re.compile(r"\\?%|\d\s*(?:percentage|percent|pct)\b")


def open_ended(answer: str) -> bool:
    """`1, 2, 3, \\ldots`: an answer that ends in an ellipsis goes on (an infinite sequence)."""
    return bool(_ELLIPSIS_RE.search(answer.strip().strip("$").strip()))


def _near_rounding_tie(x: Fraction) -> bool:
    """True where rounding could go either way between exact and binary-float arithmetic."""
    scaled = abs(x) * 10**FLOAT_ROUNDING
    return abs(scaled - math.floor(scaled) - Fraction(1, 2)) < Fraction(1, 10**6)


def numbers_match(pred: tuple[Fraction, str], gold: tuple[Fraction, str]) -> bool | None:
    """Rule 2 of the module docstring; None where only Math-Verify's float arithmetic can tell."""
    (p, p_form), (g, g_form) = pred, gold
    if p == g:
        return True
    if g_form != "exact" and abs(p - g) <= REL_TOL * abs(g):
        return True
    if "decimal" in (p_form, g_form):
        if max(abs(p), abs(g)) >= EXACT_MAGNITUDE or _near_rounding_tie(p) or _near_rounding_tie(g):
            return None
        scale = 10**FLOAT_ROUNDING
        if round(p * scale) == round(g * scale):
            return True
    return False


def fast_match(pred: str, gold: str, policy: GradingPolicy = DEFAULT_POLICY) -> bool | None:
    """Rules 1-2: True/False when decided exactly without sympy, None when Math-Verify must decide.

    Also False, never Math-Verify's call: an answer that goes on (`1, 2, 3, \\ldots`) for a gold
    that does not; digits with a space between them that is neither a thousands separator nor a mixed
    number (`2 3` is not 23, nor 5 as Math-Verify reads it); a fraction over zero (`4 0/0`)."""
    gold_norm, gold_number = _gold_forms(gold, policy.decimal_comma)
    pred_norm = normalize_answer(pred, decimal_comma=policy.decimal_comma)
    if pred_norm and pred_norm == gold_norm:
        return True
    if open_ended(pred) != open_ended(gold):
        return False
    if _SPACED_DIGITS_RE.search(pred_norm) or _ZERO_DENOMINATOR_RE.fullmatch(pred_norm):
        return False
    if gold_number is not None:
        if not policy.decimal_comma and DECIMAL_COMMA_RE.fullmatch(pred_norm):
            return False  # `0,111` and `1,5` are two items for a number gold (Math-Verify reads 0.111)
        pred_number = parse_number(pred_norm)
        if pred_number is not None:
            if (policy.percent == "either" and _PERCENT_RE.search(gold) and not _PERCENT_RE.search(pred)
                    and pred_number[0] * 100 == gold_number[0]):
                return True
            return numbers_match(pred_number, gold_number)
    return None


def _parse_gold(gold: str) -> list:
    return _parse_boxed(gold_latex(gold))


def _parse_pred(pred: str) -> list:
    return _parse_boxed(strip_percent(sci_to_latex(spaced_numbers(pred))))


@lru_cache(maxsize=1 << 14)
def _parse_boxed(latex: str) -> list:
    """One cache for golds and answers, keyed by the LaTeX parsed: a gold is parsed once per process
    for all its samples, and rollouts of one prompt often end in the same answer (or another gold)."""
    from math_verify import parse

    return parse(f"\\boxed{{{latex}}}", extraction_mode="first_match", parsing_timeout=None)


def verify_slow(pred: str, gold: str, *, disprove_numerically: bool = True) -> bool:
    """Rule 3: Math-Verify with its signal timeouts off. Unbounded: run it under a time limit.

    `first_match`: the answer is already extracted, so a text that fails to parse as a whole stays
    a string (compared as a string) instead of being replaced by a fragment that parses (Math-Verify
    reads Minerva's `\\hbar \\omega(v+1 / 2)-...` as `2` otherwise). Before `verify` (whose
    `simplify` costs up to seconds on a wrong symbolic answer), `evaluates_differently` settles the
    clearly wrong ones by evaluating both sides at one point, or by their shapes (a number is never
    an interval or a tuple; equations unwrapped as `verify` unwraps them).
    """
    from math_verify import verify

    two_stage_parsing()
    gold_parsed = _parse_gold(gold)
    if not gold_parsed:
        return False
    pred_parsed = _parse_pred(pred)
    if not pred_parsed:
        return False
    if disprove_numerically and evaluates_differently(gold_parsed, pred_parsed):
        return False
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=None))


# symbol values for the numeric disproof: irrational-looking, away from 0, 1 and small integers
_PROBE_VALUES = (0.4142135, 0.7320508, 1.2360679, 0.5772156, 1.6487212, 0.8414709, 1.1892071, 0.6931471)


def evaluates_differently(gold_parsed: list, pred_parsed: list) -> bool:
    """True only where `math_verify.verify(gold, pred)` must be False, proven by evaluation or shape.

    `verify` compares every (gold, pred) pair of the parse results: strings by equality; sympy pairs
    (`sympy_expr_eq`) after unwrapping equations the way it does (`_as_verify_compares`), then by
    structure, sets and tuples as sets, rounding floats to 6 decimals, and `simplify(gold - pred) == 0`.
    A pair is proven different when, after that unwrapping, either
    - one side is a plain expression (no relation, set, tuple, matrix, lone symbol or undefined
      function) and the other an interval or union of intervals of positive length, or a tuple or
      set of two or more elements: `verify` compares the expression as a one-element set, and no
      rule it has makes that equal to an infinite set or to two or more elements; or
    - both are plain expressions and they differ at one real point by more than the rounding can
      absorb: every rule `verify` has for plain expressions implies equal values wherever both are
      defined. An undefined function (Minerva's `u(t)`) stands for any function, so an identity
      `simplify` proves holds for one concrete function too: it is replaced by one
      (`_concrete_functions`) before evaluating.
    Every pair must be proven different; anything else returns False (no proof), and `verify` decides.
    """
    gold_strings = {x.strip() for x in gold_parsed if isinstance(x, str)}
    if any(isinstance(x, str) and x.strip() in gold_strings for x in pred_parsed):
        return False
    pairs = [(g, p) for g in gold_parsed if not isinstance(g, str)
             for p in pred_parsed if not isinstance(p, str)]
    return bool(pairs) and all(_pair_differs(g, p) for g, p in pairs)


def _as_verify_compares(gold, pred):
    """(gold, pred) as `math_verify.grader.sympy_expr_eq` compares them, equations unwrapped with its
    own helpers: an equation answer to a non-equation gold is its right-hand side, and an assignment
    gold (`x = 5`, `SRMC = LRMC`) to a non-equation answer is its right-hand side."""
    from math_verify import grader

    gold_equation, pred_equation = grader.is_equation(gold), grader.is_equation(pred)
    if pred_equation and not gold_equation:
        pred = grader.take_last_relation(pred).rhs
    elif grader.is_assignment_relation(gold) and not pred_equation:
        gold = grader.take_last_relation(gold).rhs
    return gold, pred  # two equations stay relations, compared as such (no proof here)


def _is_plain(x) -> bool:
    import sympy
    from sympy.core.function import AppliedUndef

    return (isinstance(x, sympy.Expr)
            and not isinstance(x, (sympy.Symbol, sympy.MatrixExpr, AppliedUndef))
            and not x.has(sympy.UnevaluatedExpr))


def _is_many(x) -> bool:
    """An interval of positive length, a union of such, or a tuple or set of two or more elements."""
    import sympy

    if isinstance(x, sympy.Union):
        return bool(x.args) and all(_is_many(a) for a in x.args)
    if isinstance(x, sympy.Interval):
        start, end = x.start, x.end
        return bool(start.is_comparable and end.is_comparable and (start < end) is sympy.true)
    if isinstance(x, (sympy.Tuple, sympy.FiniteSet)):
        return len(x.args) >= 2
    return False


def _pair_differs(g, p) -> bool:
    """One (gold, pred) pair of sympy objects proven unequal for `verify` (see `evaluates_differently`)."""
    g, p = _as_verify_compares(g, p)
    if (_is_plain(g) and _is_many(p)) or (_is_many(g) and _is_plain(p)):
        return True
    if not (_is_plain(g) and _is_plain(p)):
        return False
    g, p = _concrete_functions(g, p)
    symbols = sorted(g.free_symbols | p.free_symbols, key=str)
    n = len(_PROBE_VALUES)
    point = {s: _PROBE_VALUES[i % n] + i // n for i, s in enumerate(symbols)}
    try:
        g_value = complex(g.evalf(30, subs=point))
        p_value = complex(p.evalf(30, subs=point))
    except (TypeError, ValueError, ArithmeticError):
        return False  # not a number at that point (undefined there, or not evaluable)
    if not all(map(math.isfinite, (g_value.real, g_value.imag, p_value.real, p_value.imag))):
        return False
    # round-to-6-decimals equality needs |g - p| < 1e-6; sympy floats carry 15 digits
    return abs(g_value - p_value) > 1e-6 + 1e-9 * max(abs(g_value), abs(p_value))


def _concrete_functions(gold, pred):
    """Both expressions with each undefined function `f(a, b, ...)` replaced by the same concrete
    function of its arguments, `c_f + sin(a + b + ... + c_f)`, `c_f` a probe value per name."""
    import sympy
    from sympy.core.function import AppliedUndef

    names = sorted({type(a).__name__ for x in (gold, pred) for a in x.atoms(AppliedUndef)})
    if not names:
        return gold, pred
    constants = {name: _PROBE_VALUES[-1 - i % len(_PROBE_VALUES)] + i // len(_PROBE_VALUES)
                 for i, name in enumerate(names)}

    def concrete(applied):
        c = constants[type(applied).__name__]
        return c + sympy.sin(sympy.Add(*applied.args) + c)

    return tuple(x.replace(lambda e: isinstance(e, AppliedUndef), concrete) for x in (gold, pred))


def answers_match(pred: str, gold: str, policy: GradingPolicy = DEFAULT_POLICY) -> bool:
    """Rules 1-3 in one call, unbounded (the batch module adds the time limit)."""
    verdict = fast_match(pred, gold, policy)
    return verify_slow(pred, gold) if verdict is None else verdict


@lru_cache(maxsize=1)
def quiet_math_verify() -> None:
    """Silence Math-Verify's per-call warnings (we disable its timeouts on purpose); once per process."""
    import logging

    import math_verify.grader
    import math_verify.parser

    for module in (math_verify.parser, math_verify.grader):
        module.TIMEOUT_WARNING_SHOWN = True
    for name in ("math_verify", "math_verify.parser", "math_verify.grader", "latex2sympy2_extended"):
        logging.getLogger(name).setLevel(logging.ERROR)
