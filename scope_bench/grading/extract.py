"""Final-answer extraction from a model response (pure string work, never sympy).

Rules, in order (the same the peers use, LUFFY/Oat-Zero take the last `\\boxed{}`):

1. Reasoning block: when the response has `</think>`, only the text after the last one counts; an
   opened `<think>` that never closes means the response was cut off while thinking: no answer.
2. The last `\\boxed{...}` (or `\\fbox{...}`) with balanced braces; `\\boxed 5` (no braces) also
   counts. An unclosed last box (a truncated response) is no answer: an earlier box would be a stale
   intermediate result.
   A final statement after the last box (`The final answer is $X$`, `Final Answer: X`, `the answer is X`)
   that states a number or math has the last word.
   Several boxes in a row at the end (`\\boxed{1}, \\boxed{2} and \\boxed{3}`) are one answer, their
   contents joined by commas, when the gold is a list or set of as many items (`gold_items`).
3. Fallbacks when nothing is boxed (or after the last box): the text after the last answer phrase
   (`final answer is X`, `the answer is X`, `Answer: X` or `#### X`; in Minerva's `Final Answer: The final answer is $5$.`
   that is the inner one), up to the end of its line: its first math span or sentence. A sentence
   that is prose (`The largest $n$ is 34`) gives what follows its last `is`/`=`.
4. Policy `unboxed="last_math"` only: with no box and no answer phrase, the last math span or number.

The answer is trimmed of `$`, spaces and trailing punctuation. An "answer" over `MAX_ANSWER_CHARS`
is not a final answer (it would only feed sympy a denial of service).
"""

from __future__ import annotations

import re

from scope_bench.grading.policy import DEFAULT_POLICY, GradingPolicy

MAX_ANSWER_CHARS = 2000

_BOX_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_ANCHOR_RE = re.compile(r"final answer is|the answer is|answer\s*:|####", re.IGNORECASE)
_FINAL_RE = re.compile(r"final answer is|final answer\s*:|the answer is", re.IGNORECASE)
# boxes closer than this (and on the same paragraph) are one run: `\boxed{1}, \boxed{2} and \boxed{3}`
MAX_BOX_GAP = 60
_MATH_SPAN_RE = re.compile(r"\$\$(.+?)\$\$|(?<!\\)\$(.+?)(?<!\\)\$|\\\((.+?)\\\)|\\\[(.+?)\\\]", re.DOTALL)
_NUMBER_RE = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?(?:/\d+)?")
_PROSE_RE = re.compile(r"[A-Za-z]{2,}")
_CHAINED_SPANS_RE = re.compile(r"\$[^$\n]+\$(?:\s*(?:,|and)\s*\$[^$\n]+\$)+")
_VERB_RE = re.compile(r"\s(?:is|are|equals)\s|=")


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


def _box_at(text: str, match: re.Match) -> tuple[str | None, int]:
    """(content, end position) of the box whose command `match` found; content None if unclosed."""
    after = match.end()
    rest = text[after:].lstrip()  # `\boxed {5}` and `\boxed\n{5}` are `\boxed{5}` in LaTeX
    start = len(text) - len(rest)
    if rest.startswith("{"):
        content = braced(text, start)
        return content, (start + len(content) + 2 if content is not None else len(text))
    token = re.match(r"[^\s$]+", rest)  # `\boxed 5`
    return (token.group(0), start + token.end()) if token else (None, len(text))


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{}` / `\\fbox{}`; None when there is none or it is unclosed."""
    matches = list(_BOX_RE.finditer(text))
    if not matches:
        return None
    return _box_at(text, matches[-1])[0]


def last_box_run(text: str) -> list[str]:
    """Contents of the boxes that end `text` one after another (gaps under `MAX_BOX_GAP` characters,
    no blank line): `\\boxed{1}, \\boxed{2} and \\boxed{3}` -> ["1", "2", "3"]; [] if the last is unclosed."""
    matches = list(_BOX_RE.finditer(text))
    run: list[str] = []
    next_start = None
    for match in reversed(matches):
        content, end = _box_at(text, match)
        if content is None:
            return [] if not run else run
        if next_start is not None:
            gap = text[end:next_start]
            if len(gap) > MAX_BOX_GAP or "\n\n" in gap or _BOX_RE.search(gap):
                break
        run.insert(0, content)
        next_start = match.start()
    return run


def count_items(gold: str) -> int:
    """How many items a gold lists at its top level: `\\{1,2,3\\}` 3, `(2, 2), (6, 2)` 2, `(1, 2)` 1."""
    text = gold.strip().strip("$").strip()
    for opening, closing in (("\\{", "\\}"), ("\\left\\{", "\\right\\}"), ("{", "}")):
        if text.startswith(opening) and text.endswith(closing):
            inner = text[len(opening):-len(closing)]
            if _one_group(inner):  # `{1,2,3}`, not `{a}+{b}` or `\\{1\\} \\cup \\{2\\}`
                text = inner
    depth, items = 0, 1
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\":
            if text.startswith("\\{", i) or text.startswith("\\}", i):
                depth += 1 if text[i + 1] == "{" else -1
            i += 2
            continue
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif c in ",;" and depth == 0:
            items += 1
        i += 1
    return items


def _one_group(inner: str) -> bool:
    """True if `inner` closes no bracket it did not open (so its wrapper is one group)."""
    depth = 0
    for token in re.findall(r"\\[{}]|[{}]", inner):
        depth += 1 if token[-1] == "{" else -1
        if depth < 0:
            return False
    return depth == 0


def _first_statement(text: str) -> str:
    """`$x$, so ...` -> `x`; `42. Done` -> `42`: the math span or the sentence after an anchor."""
    text = text.strip()
    chained = _CHAINED_SPANS_RE.match(text)  # `$12$ and $13$`: one answer in two spans
    if chained:
        return chained.group(0)[1:-1]
    for opening, closing in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if text.startswith(opening):
            end = re.search(r"(?<!\\)" + re.escape(closing), text[len(opening):])  # `\$` is a dollar
            return text[len(opening):len(opening) + end.start()] if end else text[len(opening):]
    return re.split(r"\.\s", text, maxsplit=1)[0]


def _answer_in_sentence(statement: str) -> str | None:
    """`The largest $n$ is 34` -> `34`: what follows the last `is`/`are`/`=` of a prose sentence."""
    parts = _VERB_RE.split(statement)
    if len(parts) < 2:
        return None
    tail = _first_statement(parts[-1])
    return None if _is_prose(tail) else tail


def _is_prose(text: str) -> bool:
    """Words outside math: two or more runs of letters outside `$...$` and LaTeX commands."""
    outside = _MATH_SPAN_RE.sub(" ", text)
    outside = re.sub(r"\\[A-Za-z]+(?:\{[^{}]*\})?", " ", outside)
    return len(_PROSE_RE.findall(outside)) >= 2


def _last_math(body: str) -> str | None:
    """The last math span (`$...$`, `\\(...\\)`, `\\[...\\]`) or plain number of a text."""
    best, best_end = None, -1
    for match in _MATH_SPAN_RE.finditer(body):
        best, best_end = next(g for g in match.groups() if g is not None), match.end()
    for match in _NUMBER_RE.finditer(body):
        if match.end() > best_end:
            best, best_end = match.group(0), match.end()
    return best


def clean_answer(answer: str) -> str:
    """Trim math delimiters, spaces and trailing sentence punctuation."""
    answer = answer.strip()
    for _ in range(3):
        before = answer
        answer = answer.strip().strip("$").strip()
        answer = re.sub(r"^\\\(|\\\)$|^\\\[|\\\]$", "", answer).strip()
        answer = re.sub(r"^\*\*|\*\*$", "", answer).strip()  # markdown bold
        if not answer.endswith("..."):  # an ellipsis is part of the answer (`1, 2, 3, ...`)
            answer = answer.rstrip(".,;:!").rstrip()
        if answer == before:
            break
    return answer


def extract_answer(text: str, *, gold_items: int = 1, policy: GradingPolicy = DEFAULT_POLICY) -> str | None:
    """The final answer of a response (rules in the module docstring), or None when it has none."""
    if not text:
        return None
    body = strip_reasoning(text)
    if body is None:
        return None
    answer = last_boxed(body)
    if answer is not None and gold_items >= 2:
        run = last_box_run(body)
        if len(run) == gold_items:
            answer = ", ".join(clean_answer(box) for box in run)
    boxes = list(_BOX_RE.finditer(body))
    after_box = _box_at(body, boxes[-1])[1] if boxes else 0
    tail = body[max(after_box, len(body) - 20000):]  # a final answer sits at the end
    anchors = list(_ANCHOR_RE.finditer(tail))
    if boxes and answer is not None:  # after a box, only a final statement has the last word
        anchors = [a for a in anchors if _FINAL_RE.fullmatch(a.group(0))]
    if anchors and (answer is not None or not boxes):
        line = tail[anchors[-1].end():].split("\n", 1)[0]
        stated = _first_statement(re.sub(r'^[\s:]*(?:\\"|["\'])?', "", line))  # `is \"$12$\"`
        if _is_prose(stated):
            stated = _answer_in_sentence(stated) or stated
        if answer is None or re.search(r"[\d$\\]", stated):  # `\boxed{5}; the answer is correct.`
            answer = stated if clean_answer(stated) else answer
    elif answer is None and not boxes and policy.unboxed == "last_math":
        answer = _last_math(tail)
    if answer is None:
        return None
    answer = clean_answer(answer)
    if not answer or len(answer) > MAX_ANSWER_CHARS:
        return None
    return answer
