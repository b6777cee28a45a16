"""The grader's policy choices: rules where reasonable graders differ, each with a documented default.

Eval and the training reward use `DEFAULT_POLICY`, so an accuracy and a reward mean the same thing;
`scope-bench grade` takes each choice as an option, and every eval `summary.json` records the policy
and `GRADER_VERSION` under "grading" (docs/grading.md lists the rules and why each default).

- `unboxed` (default "anchored"): where the answer of a response is when nothing is boxed.
  "anchored": only after an answer phrase (`The final answer is`, `Answer:`, `####`); a response
  without one has no answer, so a reward never pays for a number that merely ends the text.
  "last_math": also the last `$...$` span or number of the response (Math-Verify's habit), for
  evaluating models that neither box nor say "the answer is".
- `percent` (default "drop"): "drop" reads `28\\%` as 28 on both sides (the MATH benchmark's own
  normalisation: its golds write `28\\%` and mean 28); "either" also accepts 0.28 for a gold `28\\%`.
- `decimal_comma` (default False): False reads `1,234` as one thousand two hundred thirty-four and
  `1,5` as two items (the English benchmarks' lists); True reads a comma before one or two digits
  (`1,5`, `1000,99`), or after a lone 0 (`0,111`), as a decimal point.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

# raised whenever a rule changes a verdict; recorded with the policy in eval summaries
GRADER_VERSION = "2"

UNBOXED = ("anchored", "last_math")
PERCENT = ("drop", "either")


@dataclass(frozen=True)
class GradingPolicy:
    unboxed: str = "anchored"
    percent: str = "drop"
    decimal_comma: bool = False

    def __post_init__(self):
        if self.unboxed not in UNBOXED:
            raise ValueError(f"grading.unboxed must be one of {UNBOXED}, got {self.unboxed!r}")
        if self.percent not in PERCENT:
            raise ValueError(f"grading.percent must be one of {PERCENT}, got {self.percent!r}")
        if not isinstance(self.decimal_comma, bool):
            msg = f"grading.decimal_comma must be true or false, got {self.decimal_comma!r}"
            raise ValueError(msg)  # noqa: TRY004 - a config value, reported like the others

    @classmethod
    def from_dict(cls, data: dict | None) -> GradingPolicy:
        """From a `grading:` mapping; an unknown key is an error naming it."""
        from scope_bench.core.config import from_dict

        return from_dict(cls, data, "grading")

    def to_dict(self) -> dict:
        return asdict(self)


DEFAULT_POLICY = GradingPolicy()


def grading_record(policy: GradingPolicy = DEFAULT_POLICY) -> dict:
    """What an eval summary records about its grader: version, policy, Math-Verify's version."""
    from importlib import metadata

    try:
        math_verify = metadata.version("math-verify")
    except metadata.PackageNotFoundError:
        math_verify = None
    return {"version": GRADER_VERSION, "policy": policy.to_dict(), "math_verify": math_verify}
