"""A programmatic refiner for the synthetic task (implements `Refiner`).

It plays the stronger model of the paper: given a question and the verified prefix (k steps), it
writes the correct remaining steps and the boxed answer, one operation per line (a careless prefix
step covers two operations, so it resumes after both). Two settings make it a realistic teacher:
`style="shifted"` writes in its own words (a distribution shift from the student's text, which is
what the paper says makes whole teacher solutions hard to learn from) and `error_rate` makes it a
weaker teacher that slips on one step of that share of its answers (the slip is carried forward, so
the answer is wrong and verification rejects it). For tests it can also be told to misbehave the ways
a real endpoint does: fail, time out, answer wrongly, or restart the solution.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence

from scope_bench.core.interfaces import RefineRequest, RefineResult
from scope_bench.core.steps import split_steps
from scope_bench.synthetic.task import STYLES, apply_op, ops_covered, parse_question, solution_steps

FAILURES = ("error", "timeout", "wrong", "rewrite", "raise")


class ProgrammaticRefiner:
    """Exact continuation of any prefix: the prefix's step count says where to resume.

    `failure` (one of FAILURES or None) is applied to a `failure_rate` share of requests, chosen by a
    hash of (seed, question, prefix) so the choice does not depend on call history (a resumed run
    sees the same failures): "error"/"timeout" return `RefineResult(None, kind)` ("timeout" after `delay_s`),
    "wrong" boxes a wrong answer, "rewrite" repeats the prefix before continuing, "raise" raises
    (a refiner breaking its contract; the trainer must survive that too).
    """

    def __init__(self, failure: str | None = None, failure_rate: float = 1.0, seed: int = 0,
                 delay_s: float = 0.0, style: str = "student", error_rate: float = 0.0):
        if failure is not None and failure not in FAILURES:
            raise ValueError(f"unknown refiner failure {failure!r}; choose from {', '.join(FAILURES)}")
        for name, rate in (("failure_rate", failure_rate), ("error_rate", error_rate)):
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {rate}")
        if style not in STYLES:
            raise ValueError(f"unknown refiner style {style!r}; choose from {', '.join(STYLES)}")
        self.failure, self.failure_rate, self.delay_s, self.seed = failure, failure_rate, delay_s, seed
        self.style, self.error_rate = style, error_rate
        self.calls = 0

    def refine(self, requests: Sequence[RefineRequest]) -> list[RefineResult]:
        self.calls += 1
        failing = [self.failure is not None and self._fails(r) for r in requests]
        if self.failure == "raise" and any(failing):
            raise RuntimeError("programmatic refiner told to raise")
        return [self._one(r, fail) for r, fail in zip(requests, failing)]

    def _fails(self, request: RefineRequest) -> bool:
        return random.Random(f"{self.seed}|{request.question}|{request.prefix}").random() < self.failure_rate

    def _slip(self, request: RefineRequest, n_steps: int) -> int | None:
        """Which remaining step the weaker teacher gets wrong (None: it answers right)."""
        rng = random.Random(f"slip|{self.seed}|{request.question}|{request.prefix}")
        return rng.randrange(n_steps) if n_steps and rng.random() < self.error_rate else None

    def _one(self, request: RefineRequest, fail: bool) -> RefineResult:
        try:
            start, ops = parse_question(request.question)
        except ValueError:
            return RefineResult(None, "bad_question")
        prefix_steps = split_steps(request.prefix)
        k = ops_covered(prefix_steps, len(ops))  # a careless prefix step covers two operations
        value = start
        for op, x in ops[:k]:
            value = apply_op(value, op, x)
        steps = solution_steps(value, ops[k:], style=self.style, first_index=k,
                               slip_at=self._slip(request, len(ops) - k))
        if fail and self.failure in ("error", "timeout"):
            if self.failure == "timeout" and self.delay_s:
                time.sleep(self.delay_s)
            return RefineResult(None, self.failure)
        if fail and self.failure == "wrong":
            steps[-1] = steps[-1].replace(f"{{{_final(start, ops)}}}", f"{{{_final(start, ops) + 1}}}")
        continuation = _joiner(request.prefix) + "\n\n".join(steps)
        if fail and self.failure == "rewrite":  # repeats the prefix it was given, then continues
            return RefineResult(request.prefix + continuation)
        return RefineResult(continuation)


def _final(start: int, ops) -> int:
    for op, x in ops:
        start = apply_op(start, op, x)
    return start


def _joiner(prefix: str) -> str:
    """What must follow `prefix` so that the suffix starts a new step (blank-line separated)."""
    if not prefix.strip() or prefix.endswith("\n\n"):
        return ""
    return "\n" if prefix.endswith("\n") else "\n\n"
