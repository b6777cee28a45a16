"""A rule-based process reward model for the synthetic task (implements `ProcessRewardModel`).

Steps are read in order, each covering the operations its equation applies (one, or two for a
careless step "v op x op' x' = r", read left to right; a step that is not an equation covers one). A step that starts
at operation i (0-based) of a problem with operations op_1..op_n is correct iff
- i < n: its equation starts from the true running value before op_{i+1}, applies the problem's next
  operations in order, and its result is right (a careless step that gets both right is correct:
  the PRM judges what a step claims, not how much it claims at once);
- all n operations covered: the first such step holds \\boxed{answer} with the true final value;
  any later step is wrong (the solution should have ended).
Steps are judged against the true running value, so a step that carries an earlier mistake forward
is wrong too; a teacher-style step is judged by its equation (`canonical_step`), as a PRM judges
content, not wording. Correct steps score `p_correct`, wrong ones `p_wrong` (probabilities, as a real
PRM). `fp_rate` / `fn_rate` make it a noisy PRM: that share of wrong steps is scored as correct
(false positives) and of correct steps as wrong (false negatives), chosen by a hash of (seed,
question, step index, step text), so the same step always gets the same score.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

from scope_bench.synthetic.task import apply_op, parse_question, parse_step

_BOXED = re.compile(r"\\boxed\{\s*(-?\d+)\s*\}")


def check_steps(question: str, steps: Sequence[str]) -> list[bool]:
    """Exact correctness of each step (see the module docstring)."""
    start, ops = parse_question(question)
    values = [start]
    for op, x in ops:
        values.append(apply_op(values[-1], op, x))
    out, i, answered = [], 0, False
    for step in steps:
        if i < len(ops):
            eq = parse_step(step)
            k = len(eq[1]) if eq else 1
            ok = bool(eq) and i + k <= len(ops) and (eq[0], eq[1], eq[2]) == (values[i], ops[i:i + k], values[i + k])
            i += k
        elif not answered:
            boxed = _BOXED.findall(step)
            ok, answered = len(boxed) == 1 and int(boxed[0]) == values[-1], True
        else:
            ok = False
        out.append(ok)
    return out


class RuleBasedPRM:
    """Exact step checks turned into PRM-style probabilities, optionally with judgement noise."""

    def __init__(self, p_correct: float = 0.9, p_wrong: float = 0.1, fp_rate: float = 0.0, fn_rate: float = 0.0,
                 seed: int = 0):
        for name, rate in (("fp_rate", fp_rate), ("fn_rate", fn_rate)):
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {rate}")
        self.p_correct, self.p_wrong = p_correct, p_wrong
        self.fp_rate, self.fn_rate, self.seed = fp_rate, fn_rate, seed

    def score(self, questions: Sequence[str], steps: Sequence[Sequence[str]]) -> list[list[float]]:
        if len(questions) != len(steps):
            raise ValueError(f"{len(questions)} questions but {len(steps)} step lists")
        return [[self.p_correct if self._judged(q, j, step, ok) else self.p_wrong
                 for j, (step, ok) in enumerate(zip(s, check_steps(q, s)))]
                for q, s in zip(questions, steps)]

    def _judged(self, question: str, j: int, step: str, ok: bool) -> bool:
        """The PRM's verdict on one step: the truth, flipped at the configured error rate."""
        rate = self.fn_rate if ok else self.fp_rate
        if rate and random.Random(f"{self.seed}|{question}|{j}|{step}").random() < rate:
            return not ok
        return ok
