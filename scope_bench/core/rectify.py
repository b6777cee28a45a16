"""The SCOPE stage (docs/method.md, steps 1-6): between reward and advantage, salvage one
near-miss rollout per eligible group by keeping its verified prefix and having a refiner rewrite the
rest. Engine-free: an engine supplies the PRM, the refiner, a tokenizer and the reward function.

All PRM work of a batch is one `prm.score` call and all refiner work one `refiner.refine` call, so an
engine can keep every request of a training step in flight at once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

import numpy as np

from .config import ScopeConfig
from .interfaces import ProcessRewardModel, Refiner, RefineRequest
from .prefix import check_scores, error_prefix_length
from .selection import Stats, population_stats, selection_scores
from .steps import STEP_SEPARATOR, split_steps, step_token_spans

# skip reasons that are the refiner's fault (besides "refiner_error:<kind>")
REFINER_FAILURES = ("suffix_wrong", "prefix_rewritten")


@dataclass
class Rollout:
    """One sampled response with its reward. `token_offsets[t]` is token t's character span in `text`."""

    question: str
    ground_truth: str
    text: str
    token_ids: list[int]
    token_offsets: list[tuple[int, int]]
    reward: float

    def __post_init__(self):
        if len(self.token_ids) != len(self.token_offsets):
            raise ValueError(f"rollout has {len(self.token_ids)} token ids but {len(self.token_offsets)} offsets")

    @property
    def failed(self) -> bool:
        return self.reward <= 0.0


@dataclass
class Rectification:
    """The mixed trajectory `o_hat = prefix ++ suffix` (eq. 5) that replaces rollout `index`."""

    index: int
    token_ids: list[int]
    offpolicy_mask: list[int]  # 0 on the policy's prefix tokens, 1 on the refiner's suffix tokens
    text: str
    prefix_tokens: int
    reward: float = 1.0


@dataclass
class GroupRecord:
    """What the stage did to one group, for metrics and debugging."""

    status: str  # "rectified" | "skipped" | "not_gated"
    reason: str | None = None
    n_failures: int = 0
    selected: int | None = None
    prefix_steps: int | None = None
    total_steps: int | None = None
    prefix_tokens: int | None = None
    total_tokens: int | None = None
    # the failures selection weighed (eq. 4), in order: rollout index, prefix/total steps and tokens, score S
    candidates: list[dict] = field(default_factory=list)
    length_stats: dict | None = None  # {"steps": (mean, variance), "tokens": (...)} of eq. 3

    @property
    def keep_ratio(self) -> float | None:
        """Share of the selected rollout's tokens kept as verified prefix."""
        if self.prefix_tokens is None or not self.total_tokens:
            return None
        return self.prefix_tokens / self.total_tokens


@dataclass
class GroupOutcome:
    record: GroupRecord
    rectification: Rectification | None = None
    step_scores: dict[int, list[float]] = field(default_factory=dict)  # PRM scores of scored failures


@dataclass
class _Candidate:
    """A failed rollout of a gated group, measured for selection."""

    group: int
    index: int
    steps: list[str]
    prefix_steps: int = 0
    prefix_tokens: int = 0


def rectify_groups(
    groups: Sequence[Sequence[Rollout]],
    *,
    prm: ProcessRewardModel | None,
    refiner: Refiner,
    tokenize: Callable[[str], list[int]],
    verify: Callable[[str, str], float],
    config: ScopeConfig | None = None,
) -> list[GroupOutcome]:
    """Run the SCOPE stage over the groups of a batch; one outcome per group, in order."""
    config = config or ScopeConfig()
    outcomes = [_gate(group, config) for group in groups]
    gated = [g for g, out in enumerate(outcomes) if out.record.status != "not_gated"]

    # Steps of every rollout of the batch: the length statistics of eq. 3 need them all.
    steps = [[split_steps(r.text) for r in group] for group in groups]
    candidates = {g: [_Candidate(g, i, steps[g][i]) for i, r in enumerate(groups[g]) if r.failed] for g in gated}
    if config.prefix_source == "prm":
        to_score = [c for g in gated for c in candidates[g]]
        if config.score_all_failures:
            to_score += [
                _Candidate(g, i, steps[g][i])
                for g, group in enumerate(groups) if g not in candidates
                for i, r in enumerate(group) if r.failed
            ]
        _score_prefixes(groups, to_score, prm, outcomes, config)

    requests, chosen = [], []
    for g in gated:
        stats = _stats(groups, steps, g, config)
        scores = _scores(groups[g], candidates[g], stats)
        cand = candidates[g][int(np.argmax(scores))]  # step 5: the largest S (ties: the first)
        rollout = groups[g][cand.index]
        record = outcomes[g].record
        record.candidates = [{"index": c.index, "prefix_steps": c.prefix_steps, "total_steps": len(c.steps),
                              "prefix_tokens": c.prefix_tokens, "total_tokens": len(groups[g][c.index].token_ids),
                              "score": float(s)} for c, s in zip(candidates[g], scores)]
        record.length_stats = {"steps": stats[0], "tokens": stats[1]}
        record.selected, record.prefix_steps, record.total_steps = cand.index, cand.prefix_steps, len(cand.steps)
        record.prefix_tokens, record.total_tokens = cand.prefix_tokens, len(rollout.token_ids)
        requests.append(RefineRequest(rollout.question, _prefix_text(rollout, cand.prefix_tokens), rollout.ground_truth))
        chosen.append((g, cand))

    results = refiner.refine(requests) if requests else []
    if len(results) != len(requests):
        raise ValueError(f"refiner returned {len(results)} results for {len(requests)} requests")
    for (g, cand), request, result in zip(chosen, requests, results):
        rollout = groups[g][cand.index]
        reason = _reject_reason(result, request, cand, verify, config)
        mixed = None if reason else _mix(rollout, cand, request.prefix, result.suffix, tokenize)
        if mixed is not None and config.max_response_tokens and len(mixed.token_ids) > config.max_response_tokens:
            reason, mixed = "too_long", None
        outcomes[g].record.status = "skipped" if reason else "rectified"
        outcomes[g].record.reason = reason
        outcomes[g].rectification = mixed
    sink = _RECORDER.get()
    if sink is not None:
        sink.append((list(groups), outcomes))
    return outcomes


_RECORDER: ContextVar[list | None] = ContextVar("rectify_recorder", default=None)


@contextmanager
def recording_outcomes() -> Iterator[list[tuple[list, list[GroupOutcome]]]]:
    """Collect `(groups, outcomes)` of every `rectify_groups` call made inside the block, so an engine
    can log what the stage did to each group (the rollout record) without the stage's API carrying it."""
    sink: list = []
    token = _RECORDER.set(sink)
    try:
        yield sink
    finally:
        _RECORDER.reset(token)


def stage_metrics(outcomes: Sequence[GroupOutcome] | None, n_groups: int) -> dict:
    """Per-step metrics of the stage, the same names in every engine: groups gated, rectified and
    skipped (with `skip/<reason>` counts), refiner failures, and the mean keep ratio of rectified rollouts."""
    out = {"groups_total": n_groups, "groups_gated": 0, "groups_rectified": 0, "groups_skipped": 0,
           "refiner_failures": 0, "keep_ratio": None}
    if outcomes is None:
        return out
    records = [o.record for o in outcomes]
    reasons = Counter(r.reason for r in records if r.status == "skipped")
    keep = [r.keep_ratio for r in records if r.status == "rectified" and r.keep_ratio is not None]
    out.update({
        "groups_gated": sum(r.status != "not_gated" for r in records),
        "groups_rectified": sum(r.status == "rectified" for r in records),
        "groups_skipped": sum(r.status == "skipped" for r in records),
        "refiner_failures": sum(n for reason, n in reasons.items() if is_refiner_failure(reason)),
        "keep_ratio": sum(keep) / len(keep) if keep else None,
        **{f"skip/{reason}": n for reason, n in sorted(reasons.items(), key=lambda kv: str(kv[0]))},
    })
    return out


def is_refiner_failure(reason: str | None) -> bool:
    """A skip that is the refiner's fault: a failed call, a wrong suffix or a rewritten prefix."""
    return reason in REFINER_FAILURES or str(reason).startswith("refiner_error")


def rectify_group(group: Sequence[Rollout], **kwargs) -> GroupOutcome:
    """The SCOPE stage for a single group (see `rectify_groups`)."""
    return rectify_groups([group], **kwargs)[0]


def _gate(group: Sequence[Rollout], config: ScopeConfig) -> GroupOutcome:
    """Step 1: only groups with at least `min_failures` failures are touched (one failure repaired
    would leave the group without reward variance)."""
    n_failures = sum(r.failed for r in group)
    if n_failures < config.min_failures:
        return GroupOutcome(GroupRecord("not_gated", "too_few_failures", n_failures))
    return GroupOutcome(GroupRecord("skipped", None, n_failures))


def _score_prefixes(groups, candidates: list[_Candidate], prm, outcomes, config: ScopeConfig) -> None:
    """Steps 3-4: PRM step scores -> verified prefix length in steps and in tokens."""
    if prm is None:
        raise ValueError("scope.prefix_source='prm' needs a process reward model")
    with_steps = [c for c in candidates if c.steps]
    scores = prm.score([groups[c.group][c.index].question for c in with_steps], [c.steps for c in with_steps])
    if len(scores) != len(with_steps):
        raise ValueError(f"PRM returned {len(scores)} score lists for {len(with_steps)} rollouts")
    for cand, step_scores in zip(with_steps, scores):
        if len(step_scores) != len(cand.steps):
            raise ValueError(
                f"PRM returned {len(step_scores)} scores for a rollout of {len(cand.steps)} steps "
                f"(group {cand.group}, rollout {cand.index})"
            )
        outcomes[cand.group].step_scores[cand.index] = check_scores(step_scores)
        cand.prefix_steps = error_prefix_length(step_scores, config.tau)
        if cand.prefix_steps:
            rollout = groups[cand.group][cand.index]
            cand.prefix_tokens = step_token_spans(rollout.text, rollout.token_offsets)[cand.prefix_steps - 1][1]


def _stats(groups, steps, g: int, config: ScopeConfig) -> tuple[Stats, Stats]:
    """Mean and variance of step and token counts over the batch or over group `g` (eq. 3)."""
    pool = range(len(groups)) if config.stats_scope == "batch" else [g]
    step_counts = [len(s) for h in pool for s in steps[h]]
    token_counts = [len(r.token_ids) for h in pool for r in groups[h]]
    return population_stats(step_counts), population_stats(token_counts)


def _scores(group, candidates: list[_Candidate], stats: tuple[Stats, Stats]):
    """Step 5: the selection score S of each failure (eq. 4)."""
    return selection_scores(
        [c.prefix_steps for c in candidates],
        [len(c.steps) for c in candidates],
        [c.prefix_tokens for c in candidates],
        [len(group[c.index].token_ids) for c in candidates],
        step_stats=stats[0],
        token_stats=stats[1],
    )


def _prefix_text(rollout: Rollout, prefix_tokens: int) -> str:
    return rollout.text[: rollout.token_offsets[prefix_tokens - 1][1]] if prefix_tokens else ""


def _reject_reason(result, request: RefineRequest, cand: _Candidate, verify, config: ScopeConfig) -> str | None:
    """Step 6's checks: a failed call, an empty or prefix-repeating suffix, or a wrong answer."""
    if not result.ok:
        return f"refiner_error:{result.error or 'unknown'}"
    if not result.suffix.strip():
        return "refiner_error:empty"
    if config.reject_prefix_rewrite and cand.prefix_steps and _restarts(result.suffix, cand.steps[0]):
        return "prefix_rewritten"
    if verify(result.suffix, request.ground_truth) < 1.0:
        return "suffix_wrong"
    return None


def _restarts(suffix: str, first_step: str) -> bool:
    """True when the refiner repeated the solution from its first step instead of continuing."""
    return " ".join(suffix.split()).startswith(" ".join(first_step.split()))


def _mix(rollout: Rollout, cand: _Candidate, prefix: str, suffix: str, tokenize) -> Rectification:
    """Eq. 5: the policy's prefix tokens as sampled, then the refiner's suffix tokens (off-policy)."""
    suffix = suffix.lstrip("\n")
    if prefix and not prefix.endswith(STEP_SEPARATOR):
        suffix = ("\n" if prefix.endswith("\n") else STEP_SEPARATOR) + suffix
    suffix_ids = list(tokenize(suffix))
    prefix_ids = list(rollout.token_ids[: cand.prefix_tokens])
    return Rectification(
        index=cand.index,
        token_ids=prefix_ids + suffix_ids,
        offpolicy_mask=[0] * len(prefix_ids) + [1] * len(suffix_ids),
        text=prefix + suffix,
        prefix_tokens=len(prefix_ids),
    )
