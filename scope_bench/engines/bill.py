"""The refiner's and the PRM's bill: tokens, latency and dollars per training step, and a budget.

Both engines meter their clients once (`Bill.meter_refiner`, `Bill.meter_prm`), so every call is
billed whoever makes it (the stage, near-miss scoring, SFT steps). Tokens are the server's `usage`
where it sends one (an OpenAI-compatible refiner, vLLM's pooling server); otherwise, as for the
in-process synthetic refiner and PRM, or a reply that was not JSON), they are counted with the
tokenizer the engine passes (the policy's: an estimate of what a remote model would bill). Latency
is each answered call's own (the HTTP client measures it); an in-process refiner answers a batch at
once, so each of its answers waited the batch's wall time.

Dollars come from the price table in the config (`refiner.price_in_usd_per_m`,
`refiner.price_out_usd_per_m`, `prm.price_in_usd_per_m`: USD per million tokens); with none set,
`cost/usd` is null and the bill is tokens only. A budget (`refiner.budget_usd` and/or
`refiner.budget_tokens`) counts the refiner's own tokens or dollars; the step that spends it
finishes as it began, and every later step skips the refiner (the stage does not run, the step
trains on its sampled rows; `budget/skipped_groups` counts them). docs/cost.md.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SUMMARY_FILE = "bill.json"
PRICE_KEYS = {"refiner": ("price_in_usd_per_m", "price_out_usd_per_m"), "prm": ("price_in_usd_per_m",)}
TALLY = ("refiner/prompt_tokens", "refiner/completion_tokens", "refiner/calls", "prm/prompt_tokens")
STEP_TOTALS = ("groups_rectified", "refiner_failures", "budget/skipped_groups")  # step metrics the run totals


@dataclass(frozen=True)
class Prices:
    """USD per million tokens; None where unpriced (priced at 0 once any price is set: a self-hosted
    PRM next to a paid refiner)."""

    refiner_in: float | None = None
    refiner_out: float | None = None
    prm_in: float | None = None

    @property
    def known(self) -> bool:
        return any(p is not None for p in (self.refiner_in, self.refiner_out, self.prm_in))

    def refiner_usd(self, prompt: int, completion: int) -> float:
        return (prompt * (self.refiner_in or 0.0) + completion * (self.refiner_out or 0.0)) / 1e6

    def prm_usd(self, prompt: int) -> float:
        return prompt * (self.prm_in or 0.0) / 1e6


def check_bill_config(refiner, prm) -> None:
    """Price and budget keys of the `refiner` and `prm` blocks, each error naming its key."""
    for block, cfg in (("refiner", refiner), ("prm", prm)):
        for key in PRICE_KEYS[block]:
            value = cfg.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
                raise ValueError(f"{block}.{key} must be a number >= 0 (USD per million tokens) or null, got {value!r}")
    usd, tokens = refiner.get("budget_usd"), refiner.get("budget_tokens")
    if usd is not None and (isinstance(usd, bool) or not isinstance(usd, (int, float)) or usd <= 0):
        raise ValueError(f"refiner.budget_usd must be a number > 0 or null, got {usd!r}")
    if tokens is not None and (isinstance(tokens, bool) or not isinstance(tokens, int) or tokens <= 0):
        raise ValueError(f"refiner.budget_tokens must be an integer > 0 or null, got {tokens!r}")
    if usd is not None and refiner.get("price_in_usd_per_m") is None and refiner.get("price_out_usd_per_m") is None:
        raise ValueError("refiner.budget_usd needs the refiner's prices (refiner.price_in_usd_per_m, "
                         "refiner.price_out_usd_per_m); or budget tokens with refiner.budget_tokens")


def token_counter(tokenizer) -> Callable[[str], int]:
    """Counts a text's tokens with a Hugging Face tokenizer (the bill where a server sends no usage)."""
    return lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (linear interpolation, numpy's default); None for no values."""
    return float(np.percentile(values, q)) if len(values) else None


class Bill:
    """One run's bill: the current step's tally, the run's totals and the budget.

    `count_tokens(text)` counts tokens where a client reports no usage (None: such calls count 0).
    """

    def __init__(self, prices: Prices | None = None, *, budget_usd: float | None = None,
                 budget_tokens: int | None = None, count_tokens: Callable[[str], int] | None = None):
        self.prices = prices or Prices()
        self.budget_usd, self.budget_tokens = budget_usd, budget_tokens
        self.count_tokens = count_tokens
        self.totals = {**dict.fromkeys(STEP_TOTALS, 0), **dict.fromkeys(TALLY, 0)}
        self.usd = 0.0  # all teachers, the run so far
        self.refiner_usd = 0.0
        self.spent_at_step: int | None = None  # the step after which the budget was spent
        self._new_step()

    @classmethod
    def from_config(cls, refiner, prm, count_tokens: Callable[[str], int] | None = None) -> Bill:
        """The bill of the config's `refiner` and `prm` blocks (dict-like; missing keys are null)."""
        return cls(Prices(refiner.get("price_in_usd_per_m"), refiner.get("price_out_usd_per_m"),
                          prm.get("price_in_usd_per_m")),
                   budget_usd=refiner.get("budget_usd"), budget_tokens=refiner.get("budget_tokens"),
                   count_tokens=count_tokens)

    # -------------------------------------------------------------------------------- metering

    def meter_refiner(self, refiner):
        """`refiner` whose every `refine` call is billed (None stays None)."""
        return None if refiner is None else _MeteredRefiner(refiner, self)

    def meter_prm(self, prm):
        """`prm` whose every `score` call is billed (None stays None)."""
        return None if prm is None else _MeteredPRM(prm, self)

    def _new_step(self) -> None:
        self._step = dict.fromkeys(TALLY, 0)
        self._latencies: list[float] = []

    def _count(self, text: str) -> int:
        return int(self.count_tokens(text)) if self.count_tokens is not None and text else 0

    def add_refiner(self, requests, results, wall_s: float) -> None:
        from scope_bench.engines.refiner import refine_messages

        for request, result in zip(requests, results):
            if result.usage is not None:
                prompt, completion = result.usage
            else:
                prompt = self._count(refine_messages(request)[-1]["content"])
                completion = self._count(result.suffix or "")
            self._step["refiner/prompt_tokens"] += prompt
            self._step["refiner/completion_tokens"] += completion
            self._step["refiner/calls"] += 1
            if result.latency_s is not None:  # measured by the HTTP client
                self._latencies.append(result.latency_s)
            elif result.ok:  # answered in process, with its whole batch
                self._latencies.append(wall_s)

    def add_prm(self, questions, steps, reported: Sequence[int | None] | None) -> None:
        from scope_bench.engines.prm import prm_messages

        for i, (question, solution) in enumerate(zip(questions, steps)):
            if not solution:  # nothing to score: no call
                continue
            n = reported[i] if reported is not None and i < len(reported) else None
            if n is None:
                n = self._count("\n".join(m["content"] for m in prm_messages(question, solution)))
            self._step["prm/prompt_tokens"] += n

    # ---------------------------------------------------------------------------------- steps

    @property
    def exhausted(self) -> bool:
        """The budget is spent: the refiner is not asked again in this run."""
        return self.spent_at_step is not None

    def _over_budget(self) -> bool:
        tokens = self.totals["refiner/prompt_tokens"] + self.totals["refiner/completion_tokens"]
        return ((self.budget_tokens is not None and tokens >= self.budget_tokens)
                or (self.budget_usd is not None and self.refiner_usd >= self.budget_usd))

    def close_step(self, step: int, metrics: dict, *, stage_s: float, step_s: float) -> dict:
        """The step's bill as metrics (and its tally added to the run's, with the step's rectified
        groups, refiner failures and budget skips from `metrics`): tokens, the refiner's call latency
        percentiles, the stage's share of the step's wall time, the run's cost so far."""
        tally, latencies = self._step, self._latencies
        self._new_step()
        for key, value in [*tally.items(), *((k, metrics.get(k) or 0) for k in STEP_TOTALS)]:
            self.totals[key] += value
        refiner_usd = self.prices.refiner_usd(tally["refiner/prompt_tokens"], tally["refiner/completion_tokens"])
        self.refiner_usd += refiner_usd
        self.usd += refiner_usd + self.prices.prm_usd(tally["prm/prompt_tokens"])
        if self.spent_at_step is None and self._over_budget():
            self.spent_at_step = step
        return {**tally,
                "refiner/latency_p50_s": percentile(latencies, 50), "refiner/latency_p95_s": percentile(latencies, 95),
                "time/stage_share": stage_s / step_s if step_s > 0 else None,
                "cost/usd": self.usd if self.prices.known else None}

    def restore(self, rows: Sequence[dict]) -> None:
        """The totals of a resumed run from its kept metrics rows (the budget stays spent)."""
        for row in rows:
            if "refiner/prompt_tokens" not in row:
                continue
            for key in self.totals:
                self.totals[key] += row.get(key) or 0
            refiner_usd = self.prices.refiner_usd(row["refiner/prompt_tokens"], row["refiner/completion_tokens"])
            self.refiner_usd += refiner_usd
            self.usd += refiner_usd + self.prices.prm_usd(row["prm/prompt_tokens"])
            if self.spent_at_step is None and self._over_budget():
                self.spent_at_step = row["step"]

    def summary(self) -> dict:
        """The run's bill so far (`bill.json`): totals, prices, budget and when it was spent."""
        return {**self.totals, "cost/usd": self.usd if self.prices.known else None,
                "prices_usd_per_m": {"refiner_in": self.prices.refiner_in, "refiner_out": self.prices.refiner_out,
                                     "prm_in": self.prices.prm_in},
                "budget": {"usd": self.budget_usd, "tokens": self.budget_tokens},
                "budget_spent_at_step": self.spent_at_step}

    def write_summary(self, run_dir: str | Path) -> Path:
        path = Path(run_dir) / SUMMARY_FILE
        path.write_text(json.dumps(self.summary(), indent=2) + "\n")
        return path

    def progress(self) -> dict:
        """The run so far, for a progress bar: rectified groups, refiner failures, cost (or tokens)."""
        out = {"rect": self.totals["groups_rectified"], "fail": self.totals["refiner_failures"]}
        if self.prices.known:
            out["cost"] = f"${self.usd:.4g}"
        else:
            tokens = sum(self.totals[k] for k in TALLY if k.endswith("_tokens"))
            out["tok"] = f"{tokens / 1000:.1f}k" if tokens >= 1000 else str(tokens)
        if self.exhausted:
            out["budget"] = f"spent@{self.spent_at_step}"
        return out

    def budget_note(self, last_step: int) -> str | None:
        """One line for the end of a run whose budget was spent, else None."""
        if self.spent_at_step is None:
            return None
        what = " and ".join(f"{v:g} {unit}" for v, unit in ((self.budget_usd, "USD"), (self.budget_tokens, "tokens"))
                            if v is not None)
        later = (f"rectification skipped on steps {self.spent_at_step + 1}-{last_step} "
                 f"({self.totals['budget/skipped_groups']} groups)" if last_step > self.spent_at_step
                 else "no step ran after it")
        return f"refiner budget ({what}) spent at step {self.spent_at_step}: {later}"


class _MeteredRefiner:
    def __init__(self, inner, bill: Bill):
        self.inner, self.bill = inner, bill

    def refine(self, requests):
        start = time.perf_counter()
        results = self.inner.refine(requests)
        self.bill.add_refiner(requests, results, time.perf_counter() - start)
        return results

    def __getattr__(self, attr):  # the refiner's other attributes (stats, url) as they are
        return getattr(self.inner, attr)


class _MeteredPRM:
    def __init__(self, inner, bill: Bill):
        self.inner, self.bill = inner, bill

    def score(self, questions, steps):
        scores = self.inner.score(questions, steps)
        self.bill.add_prm(questions, steps, getattr(self.inner, "last_prompt_tokens", None))
        return scores

    def __getattr__(self, attr):  # truncated_steps, stats
        return getattr(self.inner, attr)
