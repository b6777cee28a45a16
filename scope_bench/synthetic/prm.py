"""A rule-based process reward model for the synthetic task (implements `ProcessRewardModel`).

Step j (0-based) of a solution to a problem with operations op_1..op_n is correct iff
- j < n: it reads "v op x = r" with v the true running value before op_{j+1}, (op, x) = op_{j+1}
  and r computed right;
- j = n: it holds \\boxed{answer} with the true final value;
- j > n: never (the solution should have ended).
Steps are judged against the true running value, so a step that carries an earlier mistake forward
is wrong too. Correct steps score `p_correct`, wrong ones `p_wrong` (probabilities, as a real PRM).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from scope_bench.synthetic.task import apply_op, parse_question

_STEP = re.compile(r"^\s*(-?\d+)\s*([+\-*])\s*(-?\d+)\s*=\s*(-?\d+)\s*\.?\s*$")
_BOXED = re.compile(r"\\boxed\{\s*(-?\d+)\s*\}")


def check_steps(question: str, steps: Sequence[str]) -> list[bool]:
    """Exact correctness of each step (see the module docstring)."""
    start, ops = parse_question(question)
    values = [start]
    for op, x in ops:
        values.append(apply_op(values[-1], op, x))
    out = []
    for j, step in enumerate(steps):
        if j < len(ops):
            m = _STEP.match(step)
            ok = bool(m) and (int(m.group(1)), m.group(2), int(m.group(3)), int(m.group(4))) == (
                values[j], ops[j][0], ops[j][1], values[j + 1])
        elif j == len(ops):
            boxed = _BOXED.findall(step)
            ok = len(boxed) == 1 and int(boxed[0]) == values[-1]
        else:
            ok = False
        out.append(ok)
    return out


class RuleBasedPRM:
    """Exact step checks turned into PRM-style probabilities."""

    def __init__(self, p_correct: float = 0.9, p_wrong: float = 0.1):
        self.p_correct, self.p_wrong = p_correct, p_wrong

    def score(self, questions: Sequence[str], steps: Sequence[Sequence[str]]) -> list[list[float]]:
        if len(questions) != len(steps):
            raise ValueError(f"{len(questions)} questions but {len(steps)} step lists")
        return [[self.p_correct if ok else self.p_wrong for ok in check_steps(q, s)]
                for q, s in zip(questions, steps)]
