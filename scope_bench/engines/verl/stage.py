"""The method's stage between reward and advantage, applied to verl's rollout batch.

`MethodStage(batch)` reads the rollouts out of the `DataProto` (grouped by verl's `uid`), runs the
engines' shared `apply_stage` (any registered stage: SCOPE, replace-entire-rollout, PRM shaping,
LUFFY, or one added to the registry), writes the result back into the batch (`rewrite.rewrite_rows`
for rows holding tokens the policy did not sample, `rewrite.set_rewards` for changed rewards) and
returns the step's metrics under the local trainer's names.
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace

from scope_bench.core.config import PRMRewardConfig, ScopeConfig, from_dict
from scope_bench.core.rectify import Rollout
from scope_bench.engines.stage import Timer, apply_stage, get_stage, tokenize_with_eos
from scope_bench.engines.verl.rewrite import decoded_responses, rewrite_rows, set_rewards


class MethodStage:
    """Callable on a `DataProto`; mutates it in place and returns metrics (None where undefined).

    `stage` is the method config's `stage` (any registered one); `prm` may be None where the stage
    needs none (then no near-miss metrics), `refiner` likewise.
    """

    def __init__(self, *, stage: str, tokenizer, verify: Callable[[str, str], float], scope: dict | None = None,
                 prm=None, refiner=None, prm_reward: dict | None = None, luffy: dict | None = None,
                 near_miss: bool = True, stage_module: str | None = None):
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
        self.verify = verify
        self.prm, self.refiner = prm, refiner
        self.near_miss = near_miss and prm is not None

    def __call__(self, batch) -> dict:
        timer = Timer()
        truncated_before = getattr(self.prm, "truncated_steps", 0)
        tok = self.tokenizer
        decoded = decoded_responses(tok, batch)
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
            refiner=self.refiner, tokenize=lambda text: tokenize_with_eos(tok, text), verify=self.verify,
            scope_config=config, prm_reward=self.prm_reward, near_miss=self.near_miss, timer=timer,
            stage_module=self.stage_module)
        if result.step_rewards:
            raise ValueError(f"stage {self.spec.name} gave per-step rewards, which verl's GRPO advantages cannot take")
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
