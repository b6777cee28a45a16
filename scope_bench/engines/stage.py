"""The method's stage between reward and advantage, shared by every engine.

An engine samples, rewards and turns its batch into groups of `core.Rollout`s; `apply_stage` then
does what the method asks (nothing for GRPO, the SCOPE stage for scope/replace, PRM shaping for
prm-reward, one teacher solution in every group for luffy) and returns the rewards to train on, the rows to rewrite and the step's metrics under the
names every engine logs. The engine only maps the result back into its own batch format.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from scope_bench.analysis.nearmiss import near_miss_of_rollouts
from scope_bench.core.config import ScopeConfig
from scope_bench.core.interfaces import RefineRequest
from scope_bench.core.losses import prm_shaped_reward
from scope_bench.core.rectify import Rectification, Rollout, rectify_groups, stage_metrics
from scope_bench.core.steps import split_steps, step_token_spans

STAGES = ("none", "scope", "prm_reward", "luffy")
PRM_REWARD_FORMS = ("scalar", "step")
NEAR_MISS_K = (1, 2, 3)


class Timer(dict):
    """Seconds per named stage, summed over calls (`time/<name>` in the metrics)."""

    @contextmanager
    def __call__(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self[name] = self.get(name, 0.0) + time.perf_counter() - start

    def wrap(self, name: str, fn: Callable) -> Callable:
        def timed(*args, **kwargs):
            with self(name):
                return fn(*args, **kwargs)
        return timed


@dataclass
class StageResult:
    """Indices are positions in the flat list of the groups' rollouts, group after group."""

    rewards: list[float]  # the rewards to train on (rectified rollouts get 1, prm-reward shapes all)
    rectifications: dict[int, Rectification] = field(default_factory=dict)
    step_scores: dict[int, list[float]] = field(default_factory=dict)  # PRM scores of failed rollouts
    metrics: dict = field(default_factory=dict)
    # prm_reward with form "step": (token end, reward) at each step boundary of each rollout
    step_rewards: dict[int, list[tuple[int, float]]] = field(default_factory=dict)


def apply_stage(
    stage: str,
    groups: Sequence[Sequence[Rollout]],
    *,
    prm=None,
    refiner=None,
    tokenize: Callable[[str], list[int]] | None = None,
    verify: Callable[[str, str], float] | None = None,
    scope_config: ScopeConfig | None = None,
    prm_reward: dict | None = None,
    near_miss: bool = False,
    timer: Timer | None = None,
    traces: Sequence[str | None] | None = None,
) -> StageResult:
    """Run the method's stage on a batch of groups; `near_miss` adds near-miss@k of the sampled
    failures (PRM-scored for every method, so methods compare), reusing the stage's scores.
    `traces` (luffy only): one pre-collected teacher solution per group; None asks the refiner."""
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {', '.join(STAGES)}, got {stage!r}")
    timer = Timer() if timer is None else timer
    flat = [r for group in groups for r in group]
    starts = [sum(len(g) for g in groups[:i]) for i in range(len(groups))]
    result = StageResult(rewards=[r.reward for r in flat], metrics=stage_metrics(None, len(groups)))
    scorer = _Timed(prm, "score", timer, "stage/prm") if prm is not None else None

    with timer("stage"):
        if stage == "scope":
            if refiner is None:
                raise ValueError("stage scope needs a refiner")
            outcomes = rectify_groups(
                groups, prm=scorer, refiner=_Timed(refiner, "refine", timer, "stage/refiner"),
                tokenize=timer.wrap("stage/tokenize", tokenize), verify=timer.wrap("stage/verify", verify),
                config=scope_config or ScopeConfig())
            for start, out in zip(starts, outcomes):
                result.step_scores.update({start + i: s for i, s in out.step_scores.items()})
                if out.rectification is not None:
                    j = start + out.rectification.index
                    result.rectifications[j] = out.rectification
                    result.rewards[j] = out.rectification.reward
            result.metrics = stage_metrics(outcomes, len(groups))
            result.metrics["keep_ratio_steps"] = _keep_ratio_steps(outcomes)
        elif stage == "prm_reward":
            if scorer is None:
                raise ValueError("stage prm_reward needs a PRM")
            _prm_reward(flat, scorer, dict(prm_reward or {}), result)
        elif stage == "luffy":
            if traces is None and refiner is None:
                raise ValueError("stage luffy needs a refiner or a teacher solution per group")
            _luffy(groups, starts, traces, _Timed(refiner, "refine", timer, "stage/refiner") if refiner else None,
                   tokenize, verify, result)
    result.metrics["all_fail_groups"] = sum(all(r.failed for r in g) for g in groups) / max(len(groups), 1)
    if stage == "none":
        del timer["stage"]
    else:
        timer["stage/selection"] = max(0.0, timer["stage"] - sum(
            timer.get(f"stage/{k}", 0.0) for k in ("prm", "refiner", "tokenize", "verify")))

    result.metrics.update({f"near_miss@{k}": None for k in NEAR_MISS_K})
    if near_miss and prm is not None:
        tau = (scope_config or ScopeConfig()).tau
        with timer("near_miss"):
            result.metrics.update(near_miss_of_rollouts(flat, prm, tau, result.step_scores, NEAR_MISS_K))
    return result


def _prm_reward(flat: Sequence[Rollout], scorer, options: dict, result: StageResult) -> None:
    """RL with PRM reward. Scalar: `R + weight * agg_j p_j` on every rollout. Step (dense, the paper's
    wording): the outcome stays the rollout's reward and `weight * p_j` is given at the last token of
    step j (`result.step_rewards`), for the engine's process advantages."""
    form = options.pop("form", "scalar")
    if form not in PRM_REWARD_FORMS:
        raise ValueError(f"prm_reward.form must be one of {', '.join(PRM_REWARD_FORMS)}, got {form!r}")
    steps = [split_steps(r.text) for r in flat]
    scored = [j for j, s in enumerate(steps) if s]
    got = dict(zip(scored, scorer.score([flat[j].question for j in scored], [steps[j] for j in scored])))
    result.step_scores = {j: s for j, s in got.items() if flat[j].failed}
    if form == "scalar":
        result.rewards = [prm_shaped_reward(r.reward, got.get(j, []), **options) for j, r in enumerate(flat)]
        return
    weight = options.get("weight", 0.5)
    for j, scores in got.items():
        ends = [end for _, end in step_token_spans(flat[j].text, flat[j].token_offsets)]
        result.step_rewards[j] = [(end, weight * float(p)) for end, p in zip(ends, scores)]


def _luffy(groups, starts, traces, refiner, tokenize, verify, result: StageResult) -> None:
    """LUFFY's mixing: every group (no gate) gets one whole teacher solution in place of its last
    rollout, all of it off-policy, rewarded by verification. Traces come from the data (`traces`) or
    the refiner (one request per group, no prefix); a missing or wrong solution leaves the group as
    sampled and counts as a refiner failure (LUFFY's traces are verified before training)."""
    if traces is None:
        got = refiner.refine([RefineRequest(g[0].question, "", g[0].ground_truth) for g in groups])
        traces = [r.suffix if r.ok else None for r in got]
    mixed = failures = 0
    for start, group, trace in zip(starts, groups, traces):
        if not trace or not trace.strip() or verify(trace, group[0].ground_truth) < 1.0:
            failures += 1
            continue
        ids = list(tokenize(trace.strip()))
        j = start + len(group) - 1
        result.rectifications[j] = Rectification(len(group) - 1, ids, [1] * len(ids), trace.strip(), 0)
        result.rewards[j] = 1.0
        mixed += 1
    result.metrics.update({"groups_gated": len(groups), "groups_rectified": mixed, "refiner_failures": failures,
                           "groups_skipped": failures, "keep_ratio": 0.0 if mixed else None,
                           "keep_ratio_steps": 0.0 if mixed else None})


def _keep_ratio_steps(outcomes) -> float | None:
    """Mean share of the selected rollout's steps kept as verified prefix (the paper's Fig. 4 unit)."""
    kept = [o.record.prefix_steps / o.record.total_steps for o in outcomes
            if o.record.status == "rectified" and o.record.total_steps]
    return sum(kept) / len(kept) if kept else None


class _Timed:
    """Times one method of a wrapped object (the stage's PRM / refiner share of the step)."""

    def __init__(self, inner, method: str, timer: Timer, name: str):
        self._inner, self._method, self._timer, self._name = inner, method, timer, name

    def __getattr__(self, attr):
        value = getattr(self._inner, attr)
        return self._timer.wrap(self._name, value) if attr == self._method else value


def tokenize_with_eos(tokenizer, text: str) -> list[int]:
    """Refiner text as policy tokens, ending with end-of-sequence (the policy must learn to stop)."""
    return tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
