"""The method's stage between reward and advantage, applied to verl's rollout batch.

`MethodStage(batch)` reads the rollouts out of the `DataProto` (grouped by verl's `uid`), runs
`core.rectify.rectify_groups` (SCOPE, replace-entire-rollout) or the PRM shaping (prm-reward), writes
the result back into the batch (`rewrite.rewrite_rows`, `rewrite.set_rewards`) and returns the step's
metrics under the local trainer's names (`reward_mean`, `accuracy`, `groups_*`, `skip/<reason>`,
`refiner_failures`, `keep_ratio`, `near_miss@k`, `time/stage/...`).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from scope_bench.analysis.nearmiss import near_miss_of_rollouts
from scope_bench.core.config import ScopeConfig, from_dict
from scope_bench.core.losses import prm_shaped_reward
from scope_bench.core.rectify import Rollout, rectify_groups, stage_metrics
from scope_bench.core.steps import split_steps
from scope_bench.engines.verl.rewrite import decoded_responses, rewrite_rows, set_rewards

NEAR_MISS_K = (1, 2, 3)
STAGES = ("none", "scope", "prm_reward")


class Timer(dict):
    """Seconds per named stage, summed over calls."""

    def add(self, name: str, seconds: float) -> None:
        self[name] = self.get(name, 0.0) + seconds

    def wrap(self, name: str, fn: Callable) -> Callable:
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.add(name, time.perf_counter() - start)

        return timed


class _TimedPRM:
    def __init__(self, prm, timer: Timer):
        self.score = timer.wrap("stage/prm", prm.score)


class _TimedRefiner:
    def __init__(self, refiner, timer: Timer):
        self.refine = timer.wrap("stage/refiner", refiner.refine)


class MethodStage:
    """Callable on a `DataProto`; mutates it in place and returns metrics (None where undefined).

    `stage` is the method config's `stage` (none | scope | prm_reward); `prm` may be None for
    `none` (then no near-miss metrics), `refiner` only matters for `scope`.
    """

    def __init__(self, *, stage: str, tokenizer, verify: Callable[[str, str], float], scope: dict | None = None,
                 prm=None, refiner=None, prm_reward: dict | None = None, near_miss: bool = True):
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {', '.join(STAGES)}, got {stage!r}")
        self.stage = stage
        self.scope_cfg = from_dict(ScopeConfig, scope, "scope")
        needs_prm = stage == "prm_reward" or (stage == "scope" and self.scope_cfg.prefix_source == "prm")
        if needs_prm and prm is None:
            raise ValueError(f"stage {stage} needs a PRM (prm.kind=vllm with prm.url, or prm.kind=qwen)")
        if stage == "scope" and refiner is None:
            raise ValueError("stage scope needs a refiner (refiner.url and refiner.model)")
        self.tokenizer = tokenizer
        self.verify = verify
        self.prm, self.refiner = prm, refiner
        self.prm_reward = {"weight": 0.5, "aggregate": "min", **(prm_reward or {})}
        self.near_miss = near_miss and prm is not None

    def __call__(self, batch) -> dict:
        timer = Timer()
        start = time.perf_counter()
        tok = self.tokenizer
        decoded = decoded_responses(tok, batch)
        width = batch.batch["responses"].shape[1]
        outcome = batch.batch["rm_scores"].sum(dim=-1).tolist()
        rollouts = [Rollout(question_of(batch, i), ground_truth_of(batch, i), text, ids, offsets, outcome[i])
                    for i, (ids, text, offsets) in enumerate(decoded)]
        rows = group_rows(batch.non_tensor_batch["uid"])
        groups = [[rollouts[i] for i in members] for members in rows]
        rewards = list(outcome)
        scores: dict[int, list[float]] = {}  # PRM step scores of failed rows, by batch row
        metrics = stage_metrics(None, len(groups))

        if self.stage == "scope":
            # the mixed trajectory must fit verl's response width; near-miss needs every failure scored,
            # in the stage's single PRM call rather than a second round
            limit = min(self.scope_cfg.max_response_tokens or width, width)
            config = from_dict(ScopeConfig, {**vars(self.scope_cfg), "max_response_tokens": limit,
                                             "score_all_failures": self.scope_cfg.score_all_failures or self.near_miss})

            def tokenize(text: str) -> list[int]:
                t0 = time.perf_counter()
                ids = tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
                timer.add("stage/tokenize", time.perf_counter() - t0)
                return ids

            outcomes = rectify_groups(
                groups, prm=_TimedPRM(self.prm, timer) if self.prm is not None else None,
                refiner=_TimedRefiner(self.refiner, timer), tokenize=tokenize,
                verify=timer.wrap("stage/verify", self.verify), config=config)
            rewrites = {}
            for members, out in zip(rows, outcomes):
                scores.update({members[i]: s for i, s in out.step_scores.items()})
                if out.rectification is not None:
                    row = members[out.rectification.index]
                    fix = out.rectification
                    rewrites[row] = (fix.token_ids, fix.offpolicy_mask, fix.reward)
                    rewards[row] = fix.reward
            rewrite_rows(batch, rewrites, pad_token_id=_pad_id(tok))
            metrics = stage_metrics(outcomes, len(groups))
        elif self.stage == "prm_reward":
            steps = [split_steps(r.text) for r in rollouts]
            scored = [i for i, s in enumerate(steps) if s]
            got = timer.wrap("stage/prm", self.prm.score)([rollouts[i].question for i in scored],
                                                         [steps[i] for i in scored])
            step_scores = dict(zip(scored, got))
            for i, r in enumerate(rollouts):
                rewards[i] = prm_shaped_reward(r.reward, step_scores.get(i, []), **self.prm_reward)
            set_rewards(batch, dict(enumerate(rewards)))
            scores = {i: s for i, s in step_scores.items() if rollouts[i].failed}
        if self.stage != "none":
            timer["stage"] = time.perf_counter() - start
            timer["stage/selection"] = max(0.0, timer["stage"] - sum(
                timer.get(f"stage/{k}", 0.0) for k in ("prm", "refiner", "tokenize", "verify")))

        near = {f"near_miss@{k}": None for k in NEAR_MISS_K}
        if self.near_miss:
            t0 = time.perf_counter()
            near = near_miss_of_rollouts(rollouts, self.prm, self.scope_cfg.tau, scores, NEAR_MISS_K)
            timer["near_miss"] = time.perf_counter() - t0
        return {
            "reward_mean": sum(rewards) / len(rewards),
            "accuracy": sum(outcome) / len(outcome),
            "response_length": sum(len(r.token_ids) for r in rollouts) / len(rollouts),
            **metrics, **near,
            **{f"time/{k}": v for k, v in timer.items()},
        }


def group_rows(uids) -> list[list[int]]:
    """Batch rows per prompt group, groups in order of first appearance (verl may reorder rows)."""
    members: dict = {}
    for i, uid in enumerate(uids):
        members.setdefault(uid, []).append(i)
    return list(members.values())


def question_of(batch, i: int) -> str:
    """The problem text of row `i`: `extra_info.question` (written by `scope-bench data prepare`),
    else the last user message of `raw_prompt`."""
    extra = batch.non_tensor_batch.get("extra_info")
    if extra is not None and isinstance(extra[i], dict) and extra[i].get("question"):
        return str(extra[i]["question"])
    raw = batch.non_tensor_batch.get("raw_prompt")
    if raw is not None:
        users = [m["content"] for m in raw[i] if m.get("role") == "user"]
        if users:
            return str(users[-1])
    raise ValueError(f"batch row {i}: no extra_info.question and no raw_prompt; prepare the data with "
                     "`scope-bench data prepare`, which stores the question in extra_info")


def ground_truth_of(batch, i: int) -> str:
    try:
        return str(batch.non_tensor_batch["reward_model"][i]["ground_truth"])
    except (KeyError, TypeError) as err:
        raise ValueError(f"batch row {i}: no reward_model.ground_truth ({err})") from None


def _pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
