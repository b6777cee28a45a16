"""The method's stage between reward and advantage: one registry, read by every engine and config.

A method is `trainers/<method>.yaml`, which names a stage; a stage is one registered function. An
engine samples, rewards and groups its batch into `core.Rollout`s; `apply_stage` runs the method's
stage and returns the rewards to train on, the rows to rewrite and every metric of the step (the
shared reward/accuracy/length ones included) under the names all engines log. The engine only maps
the result back into its own batch format. What a stage needs (a PRM, a refiner), whether it puts
unsampled tokens into rows, and which engine settings it cannot run under are part of its entry, so
the configs of both engines ask the registry instead of deciding again.

A new baseline is one entry and one YAML:

    @register_stage("bonus_shortest")
    def bonus_shortest(groups, ctx, result):
        ...  # edit result.rewards / result.rectifications / result.metrics

    # trainers/bonus-shortest.yaml
    method: bonus-shortest
    stage: bonus_shortest
    stage_module: my_project.stages   # only when the entry lives outside scope_bench
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from scope_bench.analysis.nearmiss import near_miss_of_rollouts
from scope_bench.core.config import PRMRewardConfig, ScopeConfig, from_dict
from scope_bench.core.interfaces import RefineRequest
from scope_bench.core.losses import prm_shaped_reward
from scope_bench.core.rectify import Rectification, Rollout, rectify_groups, stage_metrics
from scope_bench.core.steps import split_steps, step_token_spans

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


# ----------------------------------------------------------------------------------------- registry


def _never(cfg) -> bool:
    return False


def _always(cfg) -> bool:
    return True


def _runs_anywhere(cfg, engine: str) -> str | None:
    return None


@dataclass(frozen=True)
class Stage:
    """One registry entry. `needs_prm` / `needs_refiner` take the method config (any object with the
    method blocks as attributes: `cfg.scope.prefix_source`); `check(cfg, engine)` returns why `engine`
    cannot run this config, or None."""

    name: str
    run: Callable | None  # (groups, ctx: StageContext, result: StageResult) -> None; None: nothing to do
    needs_prm: Callable[[Any], bool] = _never
    needs_refiner: Callable[[Any], bool] = _never
    offpolicy: bool = False  # may put tokens the policy did not sample into rows (the off-policy mask)
    check: Callable[[Any, str], str | None] = _runs_anywhere


STAGES: dict[str, Stage] = {}


def register_stage(name: str, *, needs_prm=_never, needs_refiner=_never, offpolicy: bool = False,
                   check=_runs_anywhere):
    """Decorator registering `fn(groups, ctx, result)` as stage `name` (as verl's `register_policy_loss`)."""
    def decorate(fn):
        old = STAGES.get(name)
        if old is not None and old.run is not None and (old.run.__module__, old.run.__qualname__) != (
                fn.__module__, fn.__qualname__):
            raise ValueError(f"stage {name!r} is already registered by {old.run.__module__}.{old.run.__qualname__}")
        STAGES[name] = Stage(name, fn, needs_prm, needs_refiner, offpolicy, check)
        return fn
    return decorate


def get_stage(name: str, module: str | None = None) -> Stage:
    """The entry of stage `name`, importing `module` first (a method's `stage_module`)."""
    if module:
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise ValueError(f"stage_module {module!r} cannot be imported: {err}") from None
    if name not in STAGES:
        raise ValueError(f"stage must be one of {', '.join(STAGES)}, got {name!r}"
                         + ("" if module else " (a stage defined elsewhere needs stage_module)"))
    return STAGES[name]


def stage_of(cfg) -> Stage:
    """The stage entry of a method config (`cfg.stage`, `cfg.stage_module`)."""
    return get_stage(cfg.stage, getattr(cfg, "stage_module", None))


def check_stage(cfg, engine: str) -> Stage:
    """The stage of `cfg`, or a ValueError naming why `engine` cannot run it."""
    stage = stage_of(cfg)
    problem = stage.check(cfg, engine)
    if problem:
        raise ValueError(f"method {cfg.method}: {problem}")
    return stage


# -------------------------------------------------------------------------------------- running


@dataclass
class StageResult:
    """Indices are positions in the flat list of the groups' rollouts, group after group."""

    rewards: list[float]  # the rewards to train on (rectified rollouts get 1, prm-reward shapes all)
    rectifications: dict[int, Rectification] = field(default_factory=dict)
    step_scores: dict[int, list[float]] = field(default_factory=dict)  # PRM scores of failed rollouts
    metrics: dict = field(default_factory=dict)
    # prm_reward with form "step": (token end, reward) at each step boundary of each rollout
    step_rewards: dict[int, list[tuple[int, float]]] = field(default_factory=dict)


@dataclass
class StageContext:
    """What a stage may use: the method's settings and the engine's components (PRM and refiner
    calls are timed as `stage/prm`, `stage/refiner`)."""

    scope: ScopeConfig
    prm_reward: PRMRewardConfig
    prm: Any = None
    refiner: Any = None
    tokenize: Callable[[str], list[int]] | None = None
    verify: Callable[[str, str], float] | None = None
    timer: Timer = field(default_factory=Timer)
    traces: Sequence[str | None] | None = None  # luffy: one pre-collected teacher solution per group


def apply_stage(
    stage: str,
    groups: Sequence[Sequence[Rollout]],
    *,
    prm=None,
    refiner=None,
    tokenize: Callable[[str], list[int]] | None = None,
    verify: Callable[[str, str], float] | None = None,
    scope_config: ScopeConfig | None = None,
    prm_reward: PRMRewardConfig | dict | None = None,
    near_miss: bool = False,
    timer: Timer | None = None,
    traces: Sequence[str | None] | None = None,
    stage_module: str | None = None,
    refiner_spent: bool = False,
) -> StageResult:
    """Run the method's stage on a batch of groups. `near_miss` adds near-miss@k of the sampled
    failures (PRM-scored for every method, so methods compare), in the stage's own PRM call.
    `refiner_spent` (the run's refiner budget is spent, engines/bill.py): a stage given a refiner
    does not run, the groups train as sampled, and `budget/skipped_groups` counts them."""
    spec = get_stage(stage, stage_module)
    timer = Timer() if timer is None else timer
    scope = scope_config or ScopeConfig()
    near_miss = near_miss and prm is not None
    if near_miss and not scope.score_all_failures:  # one PRM call scores every failure the metric needs
        scope = from_dict(ScopeConfig, {**vars(scope), "score_all_failures": True}, "scope")
    if not isinstance(prm_reward, PRMRewardConfig):
        prm_reward = from_dict(PRMRewardConfig, prm_reward, "prm_reward")
    ctx = StageContext(scope, prm_reward, prm=_Timed(prm, "score", timer, "stage/prm") if prm is not None else None,
                       refiner=_Timed(refiner, "refine", timer, "stage/refiner") if refiner is not None else None,
                       tokenize=timer.wrap("stage/tokenize", tokenize) if tokenize else None,
                       verify=timer.wrap("stage/verify", verify) if verify else None, timer=timer, traces=traces)
    flat = [r for group in groups for r in group]
    result = StageResult(rewards=[r.reward for r in flat], metrics=stage_metrics(None, len(groups)))
    skipped = refiner_spent and refiner is not None and spec.run is not None
    if spec.run is not None and not skipped:
        with timer("stage"):
            spec.run(groups, ctx, result)
        timer["stage/selection"] = max(0.0, timer["stage"] - sum(
            timer.get(f"stage/{k}", 0.0) for k in ("prm", "refiner", "tokenize", "verify")))
    result.metrics["budget/skipped_groups"] = len(groups) if skipped else 0
    result.metrics["all_fail_groups"] = sum(all(r.failed for r in g) for g in groups) / max(len(groups), 1)
    result.metrics.update({f"near_miss@{k}": None for k in NEAR_MISS_K})
    if near_miss:
        with timer("near_miss"):
            result.metrics.update(near_miss_of_rollouts(flat, prm, scope.tau, result.step_scores, NEAR_MISS_K))
    n = max(len(flat), 1)
    result.metrics = {"reward_mean": sum(result.rewards) / n, "accuracy": sum(r.reward for r in flat) / n,
                      "response_length": sum(len(r.token_ids) for r in flat) / n, **result.metrics}
    return result


def blank_metrics(n_groups: int) -> dict:
    """The stage metrics of a step that ran no stage (SFT steps): the same keys, nothing measured."""
    return {"reward_mean": None, "accuracy": None, "response_length": None, **stage_metrics(None, n_groups),
            "budget/skipped_groups": 0, **{f"near_miss@{k}": None for k in NEAR_MISS_K}}


def group_starts(groups: Sequence[Sequence]) -> list[int]:
    """Flat index of each group's first rollout."""
    starts, total = [], 0
    for group in groups:
        starts.append(total)
        total += len(group)
    return starts


class _Timed:
    """Times one method of a wrapped object (the stage's PRM / refiner share of the step)."""

    def __init__(self, inner, method: str, timer: Timer, name: str):
        self._inner, self._method, self._timer, self._name = inner, method, timer, name

    def __getattr__(self, attr):
        value = getattr(self._inner, attr)
        return self._timer.wrap(self._name, value) if attr == self._method else value


def tokenize_with_eos(tokenizer, text: str, end_ids: Sequence[int] | None = None) -> list[int]:
    """Refiner text as policy tokens, ending with end-of-sequence (the policy must learn to stop):
    `end_ids` where the engine knows how its sampled rows end (a Qwen chat model's `<|im_end|>`, not
    the tokenizer's `<|endoftext|>`), else the tokenizer's eos."""
    end = [tokenizer.eos_token_id] if end_ids is None else list(end_ids)
    return tokenizer(text, add_special_tokens=False)["input_ids"] + end


# ---------------------------------------------------------------------------------------- stages


STAGES["none"] = Stage("none", None)  # GRPO: train on the rewards as sampled


def _scope_needs_prm(cfg) -> bool:
    return cfg.scope.prefix_source == "prm"


@register_stage("scope", needs_prm=_scope_needs_prm, needs_refiner=_always, offpolicy=True)
def scope_stage(groups, ctx: StageContext, result: StageResult) -> None:
    """SCOPE (and replace-entire-rollout, `prefix_source: none`): in each gated group, the selected
    failure keeps its PRM-verified prefix and gets the refiner's continuation (docs/method.md)."""
    if ctx.refiner is None:
        raise ValueError("stage scope needs a refiner")
    outcomes = rectify_groups(groups, prm=ctx.prm, refiner=ctx.refiner, tokenize=ctx.tokenize, verify=ctx.verify,
                              config=ctx.scope)
    for start, out in zip(group_starts(groups), outcomes):
        result.step_scores.update({start + i: s for i, s in out.step_scores.items()})
        if out.rectification is not None:
            j = start + out.rectification.index
            result.rectifications[j] = out.rectification
            result.rewards[j] = out.rectification.reward
    result.metrics = stage_metrics(outcomes, len(groups))
    kept = [o.record.prefix_steps / o.record.total_steps for o in outcomes
            if o.record.status == "rectified" and o.record.total_steps]
    result.metrics["keep_ratio_steps"] = sum(kept) / len(kept) if kept else None  # the paper's Fig. 4 unit


@register_stage("prm_reward", needs_prm=_always)
def prm_reward_stage(groups, ctx: StageContext, result: StageResult) -> None:
    """RL with PRM reward. Scalar: `R + weight * agg_j p_j` on every rollout. Step (dense, the paper's
    wording): the outcome stays the rollout's reward and `weight * p_j` is given at the last token of
    step j (`result.step_rewards`), for the engine's process advantages."""
    if ctx.prm is None:
        raise ValueError("stage prm_reward needs a PRM")
    flat = [r for group in groups for r in group]
    steps = [split_steps(r.text) for r in flat]
    scored = [j for j, s in enumerate(steps) if s]
    got = dict(zip(scored, ctx.prm.score([flat[j].question for j in scored], [steps[j] for j in scored])))
    result.step_scores = {j: s for j, s in got.items() if flat[j].failed}
    options = ctx.prm_reward
    if options.form == "scalar":
        result.rewards = [prm_shaped_reward(r.reward, got.get(j, []), weight=options.weight,
                                            aggregate=options.aggregate) for j, r in enumerate(flat)]
        return
    for j, scores in got.items():
        ends = [end for _, end in step_token_spans(flat[j].text, flat[j].token_offsets)]
        result.step_rewards[j] = [(end, options.weight * float(p)) for end, p in zip(ends, scores)]


def _luffy_needs_refiner(cfg) -> bool:
    return cfg.luffy.source == "refiner"


def _luffy_check(cfg, engine: str) -> str | None:
    if cfg.luffy.source == "data" and engine == "verl":
        return "luffy.source=data runs with the local trainer only; on verl use luffy.source=refiner"
    if cfg.luffy.source == "data" and getattr(getattr(cfg, "data", None), "train", None) == "synthetic":
        return "luffy.source=data needs a training file with a teacher column (synthetic rows have none)"
    return None


@register_stage("luffy", needs_refiner=_luffy_needs_refiner, offpolicy=True, check=_luffy_check)
def luffy_stage(groups, ctx: StageContext, result: StageResult) -> None:
    """LUFFY's mixing: every group (no gate) gets one whole teacher solution in place of its last
    rollout, all of it off-policy, rewarded by verification. Traces come from the data (`ctx.traces`)
    or the refiner (one request per group, no prefix); a missing or wrong solution leaves the group as
    sampled and counts as a refiner failure (LUFFY's traces are verified before training)."""
    traces = ctx.traces
    if traces is None:
        if ctx.refiner is None:
            raise ValueError("stage luffy needs a refiner or a teacher solution per group")
        got = ctx.refiner.refine([RefineRequest(g[0].question, "", g[0].ground_truth) for g in groups])
        traces = [r.suffix if r.ok else None for r in got]
    mixed = failures = 0
    for start, group, trace in zip(group_starts(groups), groups, traces):
        if not trace or not trace.strip() or ctx.verify(trace, group[0].ground_truth) < 1.0:
            failures += 1
            continue
        ids = list(ctx.tokenize(trace.strip()))
        j = start + len(group) - 1
        result.rectifications[j] = Rectification(len(group) - 1, ids, [1] * len(ids), trace.strip(), 0)
        result.rewards[j] = 1.0
        mixed += 1
    result.metrics.update({"groups_gated": len(groups), "groups_rectified": mixed, "refiner_failures": failures,
                           "groups_skipped": failures, "keep_ratio": 0.0 if mixed else None,
                           "keep_ratio_steps": 0.0 if mixed else None})
