"""Final-answer extraction from a model response (pure string work, never sympy).

Rules, in order (the same the peers use, LUFFY/Oat-Zero take the last `\\boxed{}`):

1. Reasoning block: when the response has `</think>`, only the text after the last one counts; an
   opened `<think>` that never closes means the response was cut off while thinking: no answer.
2. The last `\\boxed{...}` (or `\\fbox{...}`) with balanced braces; `\\boxed 5` (no braces) also
   counts. An unclosed last box (a truncated response) is no answer: an earlier box would be a stale
   intermediate result.
3. Fallbacks when nothing is boxed: the last `final answer is X`, `the answer is X`, `Answer: X` or
   `#### X`, up to the end of its line.

The answer is trimmed of `$`, spaces and trailing punctuation. An "answer" over `MAX_ANSWER_CHARS`
is not a final answer (it would only feed sympy a denial of service).
"""

from __future__ import annotations

import re

MAX_ANSWER_CHARS = 2000

_BOX_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_FALLBACK_RE = re.compile(
    r"(?:final answer is|the answer is|answer\s*:|####)[ \t]*:?[ \t]*([^\n]+)",
    re.IGNORECASE,
)


def strip_reasoning(text: str) -> str | None:
    """The part of `text` after the reasoning block; None if the block never closes."""
    end = text.rfind("</think>")
    if end >= 0:
        return text[end + len("</think>"):]
    if "<think>" in text:
        return None
    return text


def braced(text: str, start: int) -> str | None:
    """Content of the `{...}` group opening at `text[start]`, or None if it never closes."""
    depth, i = 0, start
    while i < len(text):
        c = text[i]
        if c == "\\":  # `\{`, `\}` and `\\` are escapes, not groups
            i += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1:i]
        i += 1
    return None


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{}` / `\\fbox{}`; None when there is none or it is unclosed."""
    matches = list(_BOX_RE.finditer(text))
    if not matches:
        return None
    after = matches[-1].end()
    rest = text[after:].lstrip()  # `\boxed {5}` and `\boxed\n{5}` are `\boxed{5}` in LaTeX
    if rest.startswith("{"):
        return braced(text, len(text) - len(rest))
    token = re.match(r"[^\s$]+", rest)  # `\boxed 5`
    return token.group(0) if token else None


def _first_statement(text: str) -> str:
    """`$x$, so ...` -> `x`; `42. Done` -> `42`: the math span or the sentence after an anchor."""
    text = text.strip()
    for opening, closing in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if text.startswith(opening):
            end = re.search(r"(?<!\\)" + re.escape(closing), text[len(opening):])  # `\$` is a dollar
            return text[len(opening):len(opening) + end.start()] if end else text[len(opening):]
    return re.split(r"\.\s", text, maxsplit=1)[0]


def clean_answer(answer: str) -> str:
    """Trim math delimiters, spaces and trailing sentence punctuation."""
    answer = answer.strip()
    for _ in range(3):
        before = answer
        answer = answer.strip().strip("$").strip()
        answer = re.sub(r"^\\\(|\\\)$|^\\\[|\\\]$", "", answer).strip()
        answer = re.sub(r"^\*\*|\*\*$", "", answer).strip()  # markdown bold
        answer = answer.rstrip(".,;:!").rstrip()
        if answer == before:
            break
    return answer


def extract_answer(text: str) -> str | None:
    """The final answer of a response (rules in the module docstring), or None when it has none."""
    if not text:
        return None
    body = strip_reasoning(text)
    if body is None:
        return None
    answer = last_boxed(body)
    if answer is None and not _BOX_RE.search(body):
        fallbacks = list(_FALLBACK_RE.finditer(body[-20000:]))  # a final answer sits at the end
        if fallbacks:
            answer = _first_statement(fallbacks[-1].group(1))
    if answer is None:
        return None
    answer = clean_answer(answer)
    if not answer or len(answer) > MAX_ANSWER_CHARS:
        return None
    return answer
