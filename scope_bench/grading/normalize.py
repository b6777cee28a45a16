"""String normalisation of math answers (Hendrycks-style) and exact parsing of plain numbers.

This is what decides most answers without sympy: two answers equal after `normalize_answer` are the
same answer (the MATH benchmark's own rule), and two plain numbers are compared with exact rational
arithmetic in `parse_number`.
"""

from __future__ import annotations

import re
from fractions import Fraction

# sizing and spacing commands that never change an answer
_DROP_RE = re.compile(r"\\(?:left|right|displaystyle|quad|qquad|big|Big)(?![A-Za-z])|\\[!,;: ]|~")
_TEXT_RE = re.compile(r"\\(?:text|textbf|textrm|mbox|mathrm|operatorname)\{([^{}]*)\}")
# degrees, with an optional temperature scale: 90^\circ, 90^{\circ}, 1950^\circ C, 90°
_DEGREE_RE = re.compile(r"(?:\^\s*\{?\s*\\circ\s*\}?|°|\\circ|\\degree)(?:\s*(?:\\mathrm\{[CFK]\}|[CFK]\b))?")
_UNIT_TAIL_RE = re.compile(r"^(.*?\d)\s*\\(?:text|mbox|mathrm)\{\s*[A-Za-z][A-Za-z .]*\}$")
_THOUSANDS_RE = re.compile(r"-?[1-9]\d{0,2}(?:,\d{3})+(?:\.\d+)?")
_SPACED_THOUSANDS_RE = re.compile(r"-?[1-9]\d{0,2}(?: \d{3})+(?:\.\d+)?")
# a mixed number: an optionally signed whole part (`1 000` spaced thousands allowed), a space (never
# a line break) and a fraction; the fraction must be proper (`11 6/6` is not 12) or over zero
_MIXED_RE = re.compile(r"([-+]?)([1-9]\d{0,2}(?: \d{3})+|\d+)[ \t]+"
                       r"(?:(\d+)[ \t]*/[ \t]*(\d+)|\\[dt]?frac\{(\d+)\}\{(\d+)\})")
# a line break between two digits: kept as `SPACED_DIGITS`, never a mixed number nor thousands
_LINE_BREAK_DIGITS_RE = re.compile(r"(?<=\d)[ \t]*\r?\n\s*(?=\d)")
_LINE_BREAK_MARK = "\x00"
_PERCENT_WORD_RE = re.compile(r"(?<=[\d}])\s*(?:percentage|percent|pct)\.?$")
DECIMAL_COMMA_RE = re.compile(r"-?(?:\d+,\d{1,2}|0,\d+)")
# marks a space between two digits that is neither a thousands separator nor a mixed number
SPACED_DIGITS = "\\,"
_ASSIGN_RE = re.compile(r"^[A-Za-z](?:_\{?\w+\}?)?\s*=\s*(?!=)(.+)$")


def _fix_fracs(s: str) -> str:
    """`\\frac12` -> `\\frac{1}{2}`, `\\frac1{2}` -> `\\frac{1}{2}`, `\\sqrt2` -> `\\sqrt{2}`."""
    s = re.sub(r"\\frac\s*(\d)\s*(\d)", r"\\frac{\1}{\2}", s)
    s = re.sub(r"\\frac\s*(\d)\s*\{", r"\\frac{\1}{", s)
    s = re.sub(r"\\frac\s*\{([^{}]*)\}\s*(\d)", r"\\frac{\1}{\2}", s)
    return re.sub(r"\\sqrt\s*(\d)", r"\\sqrt{\1}", s)


def spaced_numbers(s: str) -> str:
    """A whole answer that is a spaced number as one: `1 000` -> `1000`, the mixed number `4 4/9` (or
    `4 \\frac{4}{9}`, `+11 5/6`, `1 000 4/9`) -> `\\frac{40}{9}` (a zero denominator stays `\\frac{..}{0}`:
    undefined). An improper fraction part (`11 6/6`) or a line break (`11\\n5/6`) is no mixed number."""
    text = s.strip()
    if _SPACED_THOUSANDS_RE.fullmatch(text):
        return text.replace(" ", "")
    mixed = _MIXED_RE.fullmatch(text)
    if mixed:
        sign, whole = "-" if mixed.group(1) == "-" else "", int(mixed.group(2).replace(" ", ""))
        num, den = int(mixed.group(3) or mixed.group(5)), int(mixed.group(4) or mixed.group(6))
        if den and num >= den:  # `11 6/6`, `11 7/6`: not a mixed number (nor 12, 11, 1 or 73/6)
            return s
        return f"{sign}\\frac{{{whole * den + num}}}{{{den}}}"
    return s


def normalize_answer(answer: str, *, decimal_comma: bool = False) -> str:
    """Canonical string form: the Hendrycks MATH normalisation, plus units, `\\text{}`, thousands.

    Drops `\\left`/`\\right`, spacing, `$`, degrees, percent signs and words, a trailing `\\text{unit}`,
    a short `x =` prefix, thousands separators, spaces and trailing punctuation; `\\dfrac`/`\\tfrac`
    become `\\frac`, `a/b` of integers becomes `\\frac{a}{b}` and `.5` becomes `0.5`. A mixed number
    `4 4/9` is `\\frac{40}{9}`; any other space between two digits is kept (as `SPACED_DIGITS`): `2 3`
    is not 23. `decimal_comma` reads `1,5` and `0,111` as decimals (the `decimal_comma` policy).
    """
    s = _LINE_BREAK_DIGITS_RE.sub(_LINE_BREAK_MARK, answer.strip()).replace("\n", " ")
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("{,}", "")
    s = s.replace("\\%", "").replace("%", "")
    s = _DEGREE_RE.sub("", s)
    unit = _UNIT_TAIL_RE.match(s)
    if unit:
        s = unit.group(1)
    s = _TEXT_RE.sub(r"\1", s)
    s = _DROP_RE.sub(" ", s).replace("\\$", "").replace("$", "")
    s = s.strip().rstrip(".,;!").strip()
    s = _PERCENT_WORD_RE.sub("", s).strip()  # `28 percent`, `28 pct`: the `%` dropped above
    assign = _ASSIGN_RE.match(s)
    if assign and "=" not in assign.group(1):
        s = assign.group(1)
    if decimal_comma and DECIMAL_COMMA_RE.fullmatch(s):
        s = s.replace(",", ".")
    elif _THOUSANDS_RE.fullmatch(s):  # `1,234` is a number; `1, 234` is two (a list, as for Math-Verify)
        s = s.replace(",", "")
    s = spaced_numbers(s)
    s = re.sub(r"(?<=\d)\s+(?=\d)", SPACED_DIGITS, s)
    s = s.replace(_LINE_BREAK_MARK, SPACED_DIGITS)
    s = re.sub(r"\s+", "", s)
    s = _fix_fracs(s)
    s = re.sub(r"([_^])([A-Za-z0-9])", r"\1{\2}", s)  # E_1 -> E_{1}, x^2 -> x^{2}
    s = re.sub(r"(^|[^\d])\.(\d)", r"\g<1>0.\2", s)
    simple = re.fullmatch(r"(-?\d+)/(\d+)", s)
    if simple:
        s = f"\\frac{{{simple.group(1)}}}{{{simple.group(2)}}}"
    return s


# plain numbers: integer, decimal, scientific notation, integer fraction (all after normalize_answer)
_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)"
_INT = r"[-+]?\d+"
_SCI_RE = re.compile(rf"({_NUM})(?:[eE]([-+]?\d+)|(?:\\times|\\cdot|\*)10\^(?:\{{({_INT})\}}|(\d)))")
_FRAC_RE = re.compile(rf"(-?)\\frac\{{({_INT})\}}\{{({_INT})\}}")
MAX_DIGITS = 60
MAX_EXPONENT = 400


def parse_number(s: str) -> tuple[Fraction, str] | None:
    """(exact value, how it is written) of a normalised plain number, or None if it is not one.

    How: "exact" (integer or fraction), "decimal" (Math-Verify makes it a float and compares floats
    to 6 decimals) or "scientific" (`4.5e33`, `4.5\\times10^{33}`: a product for Math-Verify, compared
    exactly). A gold written as a decimal or in scientific notation is an approximation. Huge
    literals are not numbers here (they go to the slow path, which has a time limit).
    """
    if len(s) > MAX_DIGITS:
        return None
    if re.fullmatch(_INT, s):
        return Fraction(int(s)), "exact"
    if re.fullmatch(_NUM, s):
        return Fraction(s.rstrip(".") if s.endswith(".") else s), "decimal"
    sci = _SCI_RE.fullmatch(s)
    if sci:
        mantissa, exponent = sci.group(1), sci.group(2) or sci.group(3) or sci.group(4)
        if abs(int(exponent)) > MAX_EXPONENT:
            return None
        return Fraction(mantissa.rstrip(".")) * Fraction(10) ** int(exponent), "scientific"
    frac = _FRAC_RE.fullmatch(s)
    if frac and int(frac.group(3)) != 0:
        value = Fraction(int(frac.group(2)), int(frac.group(3)))
        return (-value if frac.group(1) else value), "exact"
    return None
