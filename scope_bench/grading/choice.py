"""Multiple-choice grading: which option letter did the response choose?

Accepted final-answer forms (after the reasoning block, as for math): `\\boxed{C}`,
`\\boxed{\\text{C}}`, `\\boxed{(C)}`, `\\boxed{C) 42}`, `ANSWER: C` (GPQA's own prompt),
`Answer: (C)`, `the answer is (C)`, `the correct option is C`, `**Answer:** C`. The last such
statement in the response is its answer.

Several letters: when that last statement names more than one option (`\\boxed{A, C}`,
`ANSWER: A or B`, `\\boxed{AC}`) the response has no single choice and scores 0, so hedging is
never rewarded. Letters run from A to J (MMLU-Pro's ten options); `n_options` narrows that.
"""

from __future__ import annotations

import re

from scope_bench.grading.extract import last_boxed, strip_reasoning

LETTERS = "ABCDEFGHIJ"
_WRAPPERS_RE = re.compile(r"\\(?:text|textbf|mathrm|mathbf|mbox)\{([^{}]*)\}")
# one option: C, (C), [C], **C**; optional closing `)`, `.` or `:` after it
_OPTION = r"[\(\[]?\*{0,2}([A-J])\*{0,2}[\)\]]?"
_LIST_RE = re.compile(rf"^{_OPTION}((?:\s*(?:,|/|&|\band\b|\bor\b)\s*{_OPTION})*)(?![A-Za-z0-9])")
_ANCHOR_RE = re.compile(
    r"(?:\banswer\s*(?:is|:)|\bcorrect\s+(?:option|choice|answer)\s+is|\boption\s+is|\bchoice\s+is)"
    r"\s*[:\-]?\s*(?:\*\*)?\s*(?:option|choice)?\s*\$?\s*",
    re.IGNORECASE,
)


def _letters_at_start(text: str, allowed: str) -> list[str] | None:
    """Option letters listed at the start of `text` (`C`, `(C) 42`, `A or C`); None if none."""
    text = _WRAPPERS_RE.sub(r"\1", text).strip().lstrip("$").strip()
    glued = re.fullmatch(r"[A-J]{2,10}", text)  # \boxed{AC}
    if glued:
        return list(text)
    match = _LIST_RE.match(text)
    if not match:
        return None
    letters = [match.group(1)] + re.findall(r"([A-J])", match.group(2))
    letters = [letter for letter in letters if letter in allowed]
    return letters or None


def extract_choice(text: str, n_options: int = 10) -> str | None:
    """The single option letter a response chose, or None (no answer, or several letters)."""
    if not 2 <= n_options <= len(LETTERS):
        raise ValueError(f"n_options must be 2..{len(LETTERS)}, got {n_options}")
    allowed = LETTERS[:n_options]
    body = strip_reasoning(text or "")
    if not body:
        return None
    candidates: list[tuple[int, list[str]]] = []  # (position, letters) of each final-answer form
    boxed = last_boxed(body)
    if boxed is not None:
        letters = _letters_at_start(boxed, allowed)
        if letters:
            candidates.append((body.rfind("\\boxed"), letters))
    for anchor in _ANCHOR_RE.finditer(body):
        letters = _letters_at_start(body[anchor.end():anchor.end() + 200].split("\n")[0], allowed)
        if letters:
            candidates.append((anchor.start(), letters))
    if not candidates:
        return None
    _, letters = max(candidates, key=lambda c: c[0])
    return letters[0] if len(set(letters)) == 1 else None


def choice_reward(response: str, gold_letter: str, n_options: int = 10) -> float:
    """1.0 if the response chose `gold_letter` (`C`, `(C)` or `c` accepted as gold), else 0.0."""
    gold = re.sub(r"[^A-Za-z]", "", str(gold_letter)).upper()
    if len(gold) != 1 or gold not in LETTERS:
        raise ValueError(f"gold letter must be one of A-J, got {gold_letter!r}")
    return 1.0 if extract_choice(response, n_options) == gold else 0.0
