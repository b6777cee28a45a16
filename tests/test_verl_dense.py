"""The dense PRM reward (`prm-step-reward`) on verl: the stage carries each row's step rewards in the
batch, and the estimator registered with verl's `register_adv_est` gives, through verl's own
`compute_advantage`, the advantages the local trainer computes for the same rollouts. The run through
verl's `fit` is one case of `tests/test_verl_cpu_e2e.py::test_baselines_train_through_fit`."""

from __future__ import annotations

import pytest

pytest.importorskip("verl", reason="verl is installed by the test command (pip install -e .[verl])")

from test_verl_stage import ROLLOUTS, StepPRM, byte_tokenizer, make_batch, verify
from verl.trainer.config import AlgoConfig
from verl.trainer.ppo.core_algos import get_adv_estimator_fn
from verl.trainer.ppo.ray_trainer import compute_advantage

from scope_bench.core.advantages import grpo_advantages, process_advantages
from scope_bench.core.rectify import Rollout
from scope_bench.core.steps import decode_with_offsets
from scope_bench.engines.stage import apply_stage
from scope_bench.engines.verl.advantage import ESTIMATOR, STEP_REWARDS, dense_prm_advantage
from scope_bench.engines.verl.stage import MethodStage

STEP = {"weight": 0.5, "form": "step"}


@pytest.fixture(scope="module")
def tokenizer():
    return byte_tokenizer()


def verl_advantages(tokenizer, advantage=ESTIMATOR):
    """The verl engine's path: the stage on verl's batch (groups interleaved, as verl may order rows),
    then verl's `compute_advantage` with the configured estimator, as `RayPPOTrainer.fit` calls it."""
    batch = make_batch(tokenizer)
    MethodStage(stage="prm_reward", tokenizer=tokenizer, verify=verify, prm=StepPRM(), prm_reward=STEP,
                advantage=advantage)(batch)
    batch.batch["token_level_scores"] = batch.batch["rm_scores"]
    batch.batch["token_level_rewards"] = batch.batch["token_level_scores"]
    compute_advantage(batch, adv_estimator=advantage, config=AlgoConfig(adv_estimator=advantage))
    return batch


def local_advantages(tokenizer):
    """The local trainer's path (`rl_step`): groups laid out one after the other, the shared stage, then
    `process_advantages` over the rollouts' token counts (the response and its end-of-sequence token)."""
    order = [i for uid in ("a", "b") for i, (u, _, _) in enumerate(ROLLOUTS) if u == uid]  # batch row of each
    rollouts = []
    for i in order:
        uid, text, reward = ROLLOUTS[i]
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        decoded, offsets = decode_with_offsets(tokenizer, ids, skip_special_tokens=False)
        rollouts.append(Rollout(f"Question {uid}?", "", decoded, ids, offsets, reward))
    groups = [rollouts[:4], rollouts[4:]]
    stage = apply_stage("prm_reward", groups, prm=StepPRM(), prm_reward=STEP)
    lengths = [len(r.token_ids) + 1 for r in rollouts]
    advantages = process_advantages(stage.rewards, stage.step_rewards, [j // 4 for j in range(8)], lengths)
    return order, advantages, stage


def test_the_registered_estimator_gives_the_local_trainers_advantages(tokenizer):
    assert get_adv_estimator_fn(ESTIMATOR) is dense_prm_advantage
    batch = verl_advantages(tokenizer)
    order, local, stage = local_advantages(tokenizer)
    advantages, mask = batch.batch["advantages"], batch.batch["response_mask"]
    steps = batch.non_tensor_batch[STEP_REWARDS]
    for j, row in enumerate(order):
        n = int(mask[row].sum())
        assert advantages[row, :n].tolist() == pytest.approx(local[j], abs=1e-5)
        assert not advantages[row, n:].any()  # nothing on padding
        assert [e for e, _ in steps[row]] == [e for e, _ in stage.step_rewards.get(j, [])]  # the same steps
        assert [r for _, r in steps[row]] == pytest.approx([r for _, r in stage.step_rewards.get(j, [])])
    # dense: a response's advantage changes at its step boundaries (the failing rows' "wrong" steps)
    wrong = ROLLOUTS.index(next(r for r in ROLLOUTS if r[1].startswith("Step 1: 2+3.\n\nStep 2: wrong")))
    ends = [end for end, _ in steps[wrong]]
    at_ends = advantages[wrong, [e - 1 for e in ends]]
    assert len(ends) == 3 and len(set(at_ends.tolist())) == 3
    # after the last step (the end-of-sequence token) only the outcome's GRPO advantage is left
    outcome = grpo_advantages(batch.batch["rm_scores"].sum(-1), batch.non_tensor_batch["uid"])
    last = int(mask[wrong].sum()) - 1
    assert advantages[wrong, last].item() == pytest.approx(outcome[wrong].item(), abs=1e-5)


def test_step_rewards_without_the_dense_estimator_are_refused(tokenizer):
    with pytest.raises(ValueError, match=f"would drop: select algorithm.adv_estimator={ESTIMATOR}"):
        verl_advantages(tokenizer, advantage="grpo")


def test_the_estimator_reads_only_the_batch_the_stage_carried(tokenizer):
    batch = verl_advantages(tokenizer)
    rewards, mask, uid = batch.batch["token_level_rewards"], batch.batch["response_mask"], batch.non_tensor_batch["uid"]
    with pytest.raises(RuntimeError, match="not those of the batch"):  # a copy: its rows could be anywhere
        dense_prm_advantage(rewards.clone(), mask, index=uid)
    del batch
    with pytest.raises(RuntimeError, match="needs the per-step rewards"):  # none carried for this batch
        dense_prm_advantage(rewards, mask, index=uid)
    with pytest.raises(ValueError, match="norm_adv_by_std_in_grpo"):
        dense_prm_advantage(rewards, mask, index=uid, config=AlgoConfig(norm_adv_by_std_in_grpo=False))


def test_prm_step_reward_composes_with_the_dense_estimator():
    from scope_bench.engines.verl.config import compose_config

    services = ["prm.kind=vllm", "prm.url=http://prm:8000"]
    assert compose_config("prm-step-reward", services).algorithm.adv_estimator == ESTIMATOR
    assert compose_config("prm-reward", services).algorithm.adv_estimator == "grpo"
    assert compose_config("prm-reward", [*services, "prm_reward.form=step"]).algorithm.adv_estimator == ESTIMATOR
