"""A step-verifiable task for CPU runs: chained arithmetic, one operation per step.

Question: "Start with 7. Add 5, then multiply by 3, then subtract 4."
Solution (steps separated by a blank line, as `split_steps` expects):

    7 + 5 = 12

    12 * 3 = 36

    36 - 4 = 32

    The answer is \\boxed{32}.

Every step can be checked exactly (right running value, right operation, right result), so a
rule-based PRM and a programmatic refiner are exact, and a tiny model gets some problems right and
many nearly right: the regime SCOPE is built for.

A "careless" step (`careless_step_text`) compresses the next two operations into one line,
"12 * 3 - 4 = 32" (a chain, read left to right). It is still a valid step (it is judged by its equation, and covers two
operations), but a small model computes two operations at once much less reliably. A warm start
that writes such a step with some chance at each line (`careless_rate`) gives RL a behaviour shared
across problems to reinforce (write one operation per line), while its failures keep a verified
prefix of careful steps: near misses, as in the paper's regime.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass

# difficulty -> number of operations; operands stay in 1..20 (learnable by a ~1M-param model).
# DIFFICULTIES is the warm start's world; LONGER_CHAINS go beyond it: ops5/ops6 are the RL regime
# (one and two steps longer than anything the warm start saw, where it rarely succeeds) and ops7 is
# the out-of-distribution split (a chain longer than anything trained, RL included).
DIFFICULTIES = {"easy": 2, "medium": 3, "hard": 4}
LONGER_CHAINS = {"ops5": 5, "ops6": 6, "ops7": 7}
ALL_DIFFICULTIES = {**DIFFICULTIES, **LONGER_CHAINS}
MAX_OPERAND = 20
MAX_FACTOR = 5  # multiplications use a small factor so values stay short

OP_WORDS = {"+": "add", "-": "subtract", "*": "multiply by"}
WORD_OPS = {w: op for op, w in OP_WORDS.items()}

_QUESTION = re.compile(r"Start with (\d+)\.\s*(.*?)\.?\s*$", re.DOTALL)
_CLAUSE = re.compile(r"(add|subtract|multiply by) (\d+)", re.IGNORECASE)


@dataclass(frozen=True)
class Problem:
    """One problem: the starting value and the operations to apply in order."""

    start: int
    ops: tuple[tuple[str, int], ...]  # (op symbol, operand)
    difficulty: str

    @property
    def question(self) -> str:
        clauses = [f"{OP_WORDS[op]} {x}" for op, x in self.ops]
        text = ", then ".join(clauses)
        return f"Start with {self.start}. {text[0].upper()}{text[1:]}."

    @property
    def values(self) -> list[int]:
        """Running values after each operation (the last one is the answer)."""
        out, v = [], self.start
        for op, x in self.ops:
            v = apply_op(v, op, x)
            out.append(v)
        return out

    @property
    def answer(self) -> str:
        return str(self.values[-1])

    def to_row(self) -> dict:
        return {"question": self.question, "answer": self.answer, "difficulty": self.difficulty}


def apply_op(value: int, op: str, operand: int) -> int:
    if op == "+":
        return value + operand
    if op == "-":
        return value - operand
    if op == "*":
        return value * operand
    raise ValueError(f"unknown operation {op!r}")


def parse_question(question: str) -> tuple[int, list[tuple[str, int]]]:
    """Inverse of `Problem.question`; the PRM and refiner read problems back from the text alone."""
    m = _QUESTION.search(question.strip())
    if not m:
        raise ValueError(f"not a synthetic arithmetic question: {question[:80]!r}")
    ops = [(WORD_OPS[w.lower()], int(x)) for w, x in _CLAUSE.findall(m.group(2))]
    if not ops:
        raise ValueError(f"no operations in synthetic question: {question[:80]!r}")
    return int(m.group(1)), ops


def step_text(value: int, op: str, operand: int) -> str:
    return f"{value} {op} {operand} = {apply_op(value, op, operand)}"


def careless_step_text(value: int, ops: list[tuple[str, int]]) -> str:
    """Two operations on one line, read left to right as a chain (as typed into a calculator):
    "12 * 3 - 4 = 32", "7 + 5 * 3 = 36". No new symbols: parentheses, which the tokenizer never saw
    in the warm start's data, made the continued SFT break the model (garbage tokens, measured)."""
    (op1, x1), (op2, x2) = ops
    return f"{value} {op1} {x1} {op2} {x2} = {apply_op(apply_op(value, op1, x1), op2, x2)}"


_EQUATION = re.compile(r"^\s*(-?\d+)((?:\s*[+\-*]\s*-?\d+){1,2})\s*=\s*(-?\d+)\s*\.?\s*$")
_OPERATION = re.compile(r"([+\-*])\s*(-?\d+)")


def parse_step(step: str) -> tuple[int, list[tuple[str, int]], int] | None:
    """(start value, operations, result) of a careful ("12 * 3 = 36") or careless ("12 * 3 - 4 = 32",
    read left to right) step; None for anything else (a teacher-style step is read through
    `canonical_step` first)."""
    m = _EQUATION.match(canonical_step(step))
    if not m:
        return None
    return int(m.group(1)), [(op, int(x)) for op, x in _OPERATION.findall(m.group(2))], int(m.group(3))


def ops_covered(steps: list[str], n_ops: int) -> int:
    """How many of the problem's operations `steps` cover (a careless step covers two; a step that is
    not an equation counts as one), at most `n_ops`: where a continuation resumes."""
    return min(n_ops, sum(len(eq[1]) if (eq := parse_step(s)) else 1 for s in steps))


def answer_text(answer: int | str) -> str:
    return f"The answer is \\boxed{{{answer}}}."


# The teacher's own style (`refiner.style=shifted`): the same arithmetic in another layout, as a
# stronger model writes differently from the student: a word before each step and compact equations
# ("Next: 12*3=36" where the student writes "12 * 3 = 36"), another closing line. A PRM judges a step
# by its content (`canonical_step`); the student finds the text unlikely. The length stays close to
# the student's, so the shift is in the distribution, not in the cost.
_LEADS = ("First", "Next", "Then")
_TEACHER_STEP = re.compile(r"^(?:First|Next|Then): (.*)$")
_TEACHER_ANSWER = "Final answer: \\boxed{{{}}}"


def teacher_step_text(value: int, op: str, operand: int, index: int) -> str:
    lead = _LEADS[min(index, len(_LEADS) - 1)]
    return f"{lead}: {value}{op}{operand}={apply_op(value, op, operand)}"


def teacher_answer_text(answer: int | str) -> str:
    return _TEACHER_ANSWER.format(answer)


def canonical_step(step: str) -> str:
    """A teacher-style step reduced to its equation (any other step unchanged)."""
    m = _TEACHER_STEP.match(step.strip())
    return m.group(1) if m else step


def solution_steps(start: int, ops: list[tuple[str, int]], style: str = "student", first_index: int = 0,
                   slip_at: int | None = None, careless_rate: float = 0.0,
                   rng: random.Random | None = None, careless_from: int = 1) -> list[str]:
    """The reference solution as a list of steps (one per operation, then the answer).

    `style` is "student" (the warm start's format) or "shifted" (the teacher's, see `teacher_step_text`);
    `first_index` numbers the steps when continuing a prefix; `slip_at` makes step `slip_at` (0-based)
    an arithmetic slip (result off by one) that is carried forward, as a weaker teacher's mistake.
    `careless_rate` (student style): at each line from line `careless_from` (0-based) on with two or
    more operations left, the chance (drawn from `rng`) that it is a careless step covering the next
    two (`careless_step_text`); earlier lines stay careful, so a careless slip follows a verified prefix."""
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}; choose from {', '.join(STYLES)}")
    if careless_rate and (style != "student" or slip_at is not None or rng is None):
        raise ValueError("careless_rate needs style='student', no slip_at and an rng")
    steps, v, j = [], start, 0
    while j < len(ops):
        if careless_rate and len(steps) >= careless_from and j + 1 < len(ops) and rng.random() < careless_rate:
            steps.append(careless_step_text(v, ops[j:j + 2]))
            v = apply_op(apply_op(v, *ops[j]), *ops[j + 1])
            j += 2
            continue
        op, x = ops[j]
        step = step_text(v, op, x) if style == "student" else teacher_step_text(v, op, x, first_index + j)
        v = apply_op(v, op, x)
        if j == slip_at:
            step, v = re.sub(r"-?\d+$", str(v + 1), step), v + 1
        steps.append(step)
        j += 1
    return steps + [answer_text(v) if style == "student" else teacher_answer_text(v)]


STYLES = ("student", "shifted")


def solution(problem: Problem, careless_rate: float = 0.0, rng: random.Random | None = None,
             careless_from: int = 1) -> str:
    """The student-style reference solution; with `careless_rate`, some lines careless (see
    `solution_steps`)."""
    return "\n\n".join(solution_steps(problem.start, list(problem.ops), careless_rate=careless_rate, rng=rng,
                                       careless_from=careless_from))


def random_problem(rng: random.Random, difficulty: str) -> Problem:
    """Operations keep values non-negative (a subtraction never exceeds the running value)."""
    if difficulty not in ALL_DIFFICULTIES:
        raise ValueError(f"unknown difficulty {difficulty!r}; choose from {sorted(ALL_DIFFICULTIES)}")
    start = rng.randint(1, MAX_OPERAND)
    v, ops = start, []
    for _ in range(ALL_DIFFICULTIES[difficulty]):
        op = rng.choice("+-*")
        if op == "-" and v < 1:
            op = "+"
        if op == "*":
            x = rng.randint(2, MAX_FACTOR)
        elif op == "-":
            x = rng.randint(1, min(v, MAX_OPERAND))
        else:
            x = rng.randint(1, MAX_OPERAND)
        ops.append((op, x))
        v = apply_op(v, op, x)
    return Problem(start, tuple(ops), difficulty)


def generate_problems(n: int, seed: int, difficulties: tuple[str, ...] = ("easy", "medium", "hard")):
    """`n` problems, difficulties cycled in order, fully determined by `seed` (any split)."""
    rng = random.Random(seed)
    return [random_problem(rng, difficulties[i % len(difficulties)]) for i in range(n)]


SPLITS = {"train": (0, 80), "val": (80, 90), "test": (90, 100)}  # percent buckets of the problem space
_SEED_OFFSETS = {"train": 0, "val": 1_000_003, "test": 2_000_003}


def split_of(question: str) -> str:
    """The split a question belongs to, by a stable hash of its text: splits are disjoint by
    construction, so no validation or test problem is ever trained on (the SFT warm start included)."""
    bucket = int(hashlib.sha256(question.encode()).hexdigest(), 16) % 100
    return next(name for name, (lo, hi) in SPLITS.items() if lo <= bucket < hi)


def split_problems(split: str, n: int, seed: int = 0, difficulties=("easy", "medium", "hard")) -> list[Problem]:
    """`n` problems of `split`, difficulties cycled in order; held-out splits never repeat a question."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose from {sorted(SPLITS)}")
    rng, out, seen = random.Random(seed + _SEED_OFFSETS[split]), [], set()
    while len(out) < n:
        problem = random_problem(rng, difficulties[len(out) % len(difficulties)])
        if split_of(problem.question) == split and (split == "train" or problem.question not in seen):
            out.append(problem)
            seen.add(problem.question)
    return out


def generate_split(split: str, n: int, seed: int = 0, difficulties=("easy", "medium", "hard")) -> list[dict]:
    """Rows {question, answer, difficulty} of `split` (see `split_of`)."""
    return [p.to_row() for p in split_problems(split, n, seed, tuple(difficulties))]
