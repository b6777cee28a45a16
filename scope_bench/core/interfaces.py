"""What an engine must provide to the SCOPE stage: a process reward model and a refiner.

Both are batch interfaces so that an engine can keep every call of a training step in flight at once
(an HTTP refiner waits for the slowest call, not for the sum). The core never imports an engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


@runtime_checkable
class ProcessRewardModel(Protocol):
    """Scores every step of every solution: `p_j` = probability that step j is correct."""

    def score(self, questions: Sequence[str], steps: Sequence[Sequence[str]]) -> list[list[float]]:
        """One list of step probabilities per (question, steps) pair, same lengths as `steps[i]`."""
        ...


@dataclass(frozen=True)
class RefineRequest:
    """A continuation-only request: the refiner writes what follows `prefix` (eq. 5)."""

    question: str
    prefix: str  # the verified prefix as text, context only; may be empty
    ground_truth: str


@dataclass(frozen=True)
class RefineResult:
    """The refiner's continuation, or why there is none (`error` is a short kind, e.g. "timeout")."""

    suffix: str | None
    error: str | None = None
    # the call's bill where the client knows it (an HTTP refiner): (prompt, completion) tokens as the
    # server's `usage` reported them, also for a failed reply it answered (one cut at max_tokens), and
    # the seconds the call took; not part of the result's identity
    usage: tuple[int, int] | None = field(default=None, compare=False)
    latency_s: float | None = field(default=None, compare=False)

    @property
    def ok(self) -> bool:
        return self.suffix is not None and self.error is None


@runtime_checkable
class Refiner(Protocol):
    """Writes the correct continuation of a verified prefix. Must not raise for one bad item:
    failures come back as `RefineResult(None, error=kind)` so training never stops on them."""

    def refine(self, requests: Sequence[RefineRequest]) -> list[RefineResult]:
        ...
