"""The method's stage between reward and advantage, applied to verl's rollout batch.

`MethodStage(batch)` reads the rollouts out of the `DataProto` (grouped by verl's `uid`), runs the
engines' shared `apply_stage` (any registered stage: SCOPE, replace-entire-rollout, PRM shaping,
LUFFY, or one added to the registry), writes the result back into the batch (`rewrite.rewrite_rows`
for rows holding tokens the policy did not sample, `rewrite.set_rewards` for changed rewards, the
dense PRM reward's per-step rewards for `advantage.py`) and returns the step's metrics under the local
trainer's names.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from types import SimpleNamespace

from scope_bench.core.config import PRMRewardConfig, ScopeConfig, from_dict
from scope_bench.core.rectify import Rollout
from scope_bench.engines.bill import Bill
from scope_bench.engines.stage import Timer, apply_stage, get_stage, tokenize_with_eos
from scope_bench.engines.verl.advantage import ESTIMATOR, carry_step_rewards
from scope_bench.engines.verl.rewrite import decoded_responses, ended_with, rewrite_rows, set_rewards


class MethodStage:
    """Callable on a `DataProto`; mutates it in place and returns metrics (None where undefined).

    `stage` is the method config's `stage` (any registered one); `prm` may be None where the stage
    needs none (then no near-miss metrics), `refiner` likewise. `bill` meters both (engines/bill.py;
    default: tokens only, no budget); the trainer closes each step's bill, knowing the step's time.
    `advantage` is the run's `algorithm.adv_estimator`: with the dense one (`advantage.ESTIMATOR`) the
    stage's per-step rewards are carried in the batch for it; any other refuses them.
    """

    def __init__(self, *, stage: str, tokenizer, verify: Callable[[str, str], float], scope: dict | None = None,
                 prm=None, refiner=None, prm_reward: dict | None = None, luffy: dict | None = None,
                 near_miss: bool = True, stage_module: str | None = None, stop_after_failed_steps: int = 0,
                 generation_config=None, bill: Bill | None = None, advantage: str = "grpo"):
        self.spec = get_stage(stage, stage_module)
        self.stage_module = stage_module
        self.scope_cfg = from_dict(ScopeConfig, scope, "scope")
        self.prm_reward = from_dict(PRMRewardConfig, prm_reward, "prm_reward")
        method = SimpleNamespace(stage=stage, scope=self.scope_cfg, prm_reward=self.prm_reward,
                                 luffy=SimpleNamespace(**{"source": "refiner", **(luffy or {})}))
        if self.spec.needs_prm(method) and prm is None:
            raise ValueError(f"stage {stage} needs a PRM (prm.kind=vllm with prm.url, or prm.kind=qwen)")
        if self.spec.needs_refiner(method) and refiner is None:
            raise ValueError(f"stage {stage} needs a refiner (refiner.url and refiner.model)")
        self.tokenizer = tokenizer
        self.stop_ids, self.end_ids = stop_tokens(tokenizer, generation_config)
        self.verify = verify
        self.bill = bill or Bill()
        self.prm, self.refiner = self.bill.meter_prm(prm), self.bill.meter_refiner(refiner)
        self.near_miss = near_miss and prm is not None
        self.stop_after_failed_steps = stop_after_failed_steps
        self.failed_steps = 0  # steps in a row in which every refiner call failed
        self.advantage = advantage  # algorithm.adv_estimator: the dense one takes the stage's step rewards

    def __call__(self, batch) -> dict:
        timer = Timer()
        truncated_before = getattr(self.prm, "truncated_steps", 0)
        tok = self.tokenizer
        refiner = _Counting(self.refiner) if self.refiner is not None else None
        decoded = decoded_responses(tok, batch, self.stop_ids)
        end = ended_with(tok, batch, self.stop_ids) or self.end_ids  # rewritten rows end as sampled ones do
        width = batch.batch["responses"].shape[1]
        outcome = batch.batch["rm_scores"].sum(dim=-1).tolist()
        rollouts = [Rollout(question_of(batch, i), ground_truth_of(batch, i), text, ids, offsets, outcome[i])
                    for i, (ids, text, offsets) in enumerate(decoded)]
        rows = group_rows(batch.non_tensor_batch["uid"])
        row_of = [row for members in rows for row in members]  # the stage's flat index -> batch row
        # the mixed trajectory must fit verl's response width
        config = from_dict(ScopeConfig, {
            **vars(self.scope_cfg), "max_response_tokens": min(self.scope_cfg.max_response_tokens or width, width)})
        result = apply_stage(
            self.spec.name, [[rollouts[i] for i in members] for members in rows], prm=self.prm,
            refiner=refiner, tokenize=lambda text: tokenize_with_eos(tok, text, end), verify=self.verify,
            scope_config=config, prm_reward=self.prm_reward, near_miss=self.near_miss, timer=timer,
            stage_module=self.stage_module, refiner_spent=self.bill.exhausted)
        if refiner is not None:
            self._check_refiner(refiner)
        if self.advantage == ESTIMATOR:  # the dense PRM reward: the step rewards travel with their rows
            carry_step_rewards(batch, {row_of[j]: steps for j, steps in result.step_rewards.items()})
        elif result.step_rewards:
            raise ValueError(f"stage {self.spec.name} gave per-step rewards, which algorithm.adv_estimator="
                             f"{self.advantage} would drop: select algorithm.adv_estimator={ESTIMATOR}")
        if result.rectifications and not self.spec.offpolicy:
            raise ValueError(f"stage {self.spec.name} rewrote rows but is not registered with offpolicy=True")
        if self.spec.offpolicy:  # also adds the all-zero off-policy mask of rows left as sampled
            rewrite_rows(batch, {row_of[j]: (fix.token_ids, fix.offpolicy_mask, fix.reward)
                                 for j, fix in result.rectifications.items()}, pad_token_id=_pad_id(tok))
        set_rewards(batch, {row_of[j]: reward for j, reward in enumerate(result.rewards)
                            if j not in result.rectifications and reward != outcome[row_of[j]]})
        return {
            **result.metrics,
            "prm_truncated_steps": getattr(self.prm, "truncated_steps", 0) - truncated_before,  # cut by max_tokens
            **{f"time/{k}": v for k, v in timer.items()},
        }

    def _check_refiner(self, refiner: _Counting) -> None:
        """A step in which every refiner call failed trained as GRPO: say so loudly, and stop after
        `stop_after_failed_steps` such steps in a row (0: never stop)."""
        if not refiner.calls or refiner.ok:
            self.failed_steps = 0
            return
        self.failed_steps += 1
        message = (f"every refiner call of this step failed ({refiner.calls} calls; {self.failed_steps} such step(s) "
                   f"in a row): no row was rectified, the step trained as GRPO. Check the refiner endpoint and key")
        limit = self.stop_after_failed_steps
        if limit and self.failed_steps >= limit:
            raise RuntimeError(f"{message}; stopping after {limit} (refiner.stop_after_failed_steps, 0 = never stop)")
        warnings.warn(message, RuntimeWarning, stacklevel=2)
        print(f"WARNING: {message}", file=sys.stderr, flush=True)


class _Counting:
    """The refiner, counting the calls of one step that came back with a continuation and without."""

    def __init__(self, inner):
        self.inner, self.calls, self.ok = inner, 0, 0

    def refine(self, requests):
        results = self.inner.refine(requests)
        self.calls += len(results)
        self.ok += sum(bool(r.ok) for r in results)
        return results

    def __getattr__(self, attr):  # the refiner's other attributes (stats, url) as they are
        return getattr(self.inner, attr)


def stop_tokens(tokenizer, generation_config=None) -> tuple[set[int], tuple[int, ...]]:
    """`(ids the rollout stops at, the end of a rewritten row when no sampled row stopped)`.
    vLLM stops at the generation config's `eos_token_id` (one id or a list) and the tokenizer's eos; a
    Qwen2.5 chat model ends its turn with `<|im_end|>`, listed first there, while its tokenizer's eos may
    be `<|endoftext|>`."""
    eos = getattr(generation_config, "eos_token_id", None) if generation_config is not None else None
    listed = [] if eos is None else [int(x) for x in (eos if isinstance(eos, (list, tuple)) else [eos])]
    stops = set(listed) | ({tokenizer.eos_token_id} - {None})
    return stops, (listed[0] if listed else tokenizer.eos_token_id,)


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
