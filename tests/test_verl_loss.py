"""The hybrid loss as verl runs it: the worker loss function (`scope_actor_loss` around verl's own
`ppo_loss` and `agg_loss`) over verl's micro-batches equals `core.losses.hybrid_loss` on the whole
mini-batch, value and gradient; the per-token off-policy mask reaches every micro-batch."""

from __future__ import annotations

import pickle
import subprocess
import sys
from functools import partial

import numpy as np
import pytest
import torch

pytest.importorskip("verl", reason="verl is installed by the test command (pip install -e .[verl])")

from omegaconf import OmegaConf
from verl import DataProto
from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY, compute_grpo_outcome_advantage
from verl.utils import tensordict_utils as tu
from verl.utils.config import omega_conf_to_dataclass
from verl.utils.model import compute_position_id_with_mask
from verl.workers.engine.utils import prepare_micro_batches
from verl.workers.utils.padding import left_right_2_no_padding

from scope_bench.core.advantages import grpo_advantages
from scope_bench.core.config import LossConfig
from scope_bench.core.losses import hybrid_loss
from scope_bench.engines.verl.config import compose_config
from scope_bench.engines.verl.loss import LOSS_NAME, scope_actor_loss, scope_hybrid_policy_loss

torch.set_num_threads(1)
B, P, R = 8, 4, 7


@pytest.fixture(scope="module")
def actor_config():
    cfg = compose_config("grpo", [])
    OmegaConf.resolve(cfg)
    return omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)


def _mini_batch(seed: int, with_mask: bool):
    """A rollout mini-batch as verl hands it to the actor: left/right padded rows, old log-probs,
    token-level GRPO advantages, an off-policy mask on some suffixes, and the current log-probs."""
    g = torch.Generator().manual_seed(seed)
    prompt_len = torch.randint(1, P + 1, (B,), generator=g)
    resp_len = torch.randint(1, R + 1, (B,), generator=g)
    cols = torch.arange(P + R)
    attention = ((cols >= P - prompt_len[:, None]) & (cols < P + resp_len[:, None])).long()
    input_ids = torch.randint(3, 50, (B, P + R), generator=g) * attention
    response_mask = attention[:, P:].clone()
    rewards = torch.tensor([0, 1, 0, 0, 1, 1, 0, 0], dtype=torch.float32)
    rm_scores = torch.zeros(B, R)
    rm_scores[torch.arange(B), resp_len - 1] = rewards
    uid = np.array(["a"] * 4 + ["b"] * 4, dtype=object)
    advantages, _ = compute_grpo_outcome_advantage(rm_scores, response_mask, uid)
    logp = (-torch.rand(B, R, generator=g) * 3) * response_mask
    old = (logp + (torch.rand(B, R, generator=g) - 0.5)) * response_mask  # ratios off 1: clipping is active
    mask = torch.zeros(B, R, dtype=torch.long)
    for row, start in ((0, 1), (3, 0), (6, 2)):  # prefix kept up to `start`, suffix off-policy
        mask[row, start : int(resp_len[row])] = 1
    tensors = {"prompts": input_ids[:, :P], "responses": input_ids[:, P:], "input_ids": input_ids,
               "attention_mask": attention, "position_ids": compute_position_id_with_mask(attention),
               "response_mask": response_mask, "old_log_probs": old, "advantages": advantages,
               "row_index": torch.arange(B)}
    if with_mask:
        tensors["offpolicy_mask"] = mask
    batch = DataProto.from_dict(tensors=tensors)
    return batch, logp, old, advantages, (mask if with_mask else torch.zeros_like(mask)), response_mask, rm_scores, uid


def _worker_micro_batches(batch, dynamic: bool):
    """What the FSDP engine does with a mini-batch before calling the loss function."""
    data = left_right_2_no_padding(batch.to_tensordict())
    tu.assign_non_tensor(data, batch_num_tokens=int(data["loss_mask"].sum()), dp_size=1, global_batch_size=B,
                         use_dynamic_bsz=dynamic, micro_batch_size_per_gpu=2, max_token_len_per_gpu=24)
    micro_batches, _ = prepare_micro_batches(data)
    return micro_batches


def _model_output(micro, logp_leaf):
    """Per-token log-probs in verl's no-padding layout: position t holds log p(token t+1)."""
    rows = micro["row_index"].tolist()
    lengths = micro["input_ids"].offsets().diff().tolist()
    pieces = []
    for row, length in zip(rows, lengths):
        n = int(micro["response_mask"][rows.index(row)].sum())
        full = torch.zeros(length, dtype=logp_leaf.dtype)
        full = torch.cat([full[: length - n - 1], logp_leaf[row, :n], full[length - 1 :]])
        pieces.append(full)
    values = torch.cat(pieces)
    return {"log_probs": torch.nested.nested_tensor_from_jagged(values, offsets=micro["input_ids"].offsets())}


@pytest.mark.parametrize("dynamic", [False, True])
@pytest.mark.parametrize("loss_cfg", [LossConfig(), LossConfig(lam=0.5, gamma=0.2, offpolicy_advantage=True)],
                         ids=["scope", "luffy-form"])
def test_verl_loss_equals_core_hybrid_loss(actor_config, dynamic, loss_cfg):
    batch, logp, old, adv, mask, response_mask, _, _ = _mini_batch(seed=0, with_mask=True)
    leaf = logp.clone().requires_grad_(True)
    micro_batches = _worker_micro_batches(batch, dynamic)
    assert len(micro_batches) > 1
    seen = torch.zeros(B, R, dtype=torch.long)
    total = 0.0
    for micro in micro_batches:
        seen[micro["row_index"]] = micro["offpolicy_mask"]  # the mask rode along with its rows
        loss, metrics = scope_actor_loss(actor_config, _model_output(micro, leaf), micro, loss_config=loss_cfg)
        total = total + loss
    assert torch.equal(seen, mask)
    reference = logp.clone().requires_grad_(True)
    expected = hybrid_loss(reference, old, adv[:, 0], mask, response_mask, **loss_cfg.objective_kwargs())
    torch.testing.assert_close(total, expected, rtol=1e-6, atol=1e-7)
    total.backward()
    expected.backward()
    torch.testing.assert_close(leaf.grad, reference.grad, rtol=1e-5, atol=1e-7)
    assert set(metrics) >= {"actor/pg_loss", "actor/pg_clipfrac", "actor/offpolicy_token_frac"}


def test_batch_without_mask_is_grpo(actor_config):
    batch, logp, old, adv, mask, response_mask, rm_scores, uid = _mini_batch(seed=1, with_mask=False)
    leaf = logp.clone().requires_grad_(True)
    total = sum(scope_actor_loss(actor_config, _model_output(m, leaf), m)[0]
                for m in _worker_micro_batches(batch, dynamic=False))
    expected = hybrid_loss(logp, old, adv[:, 0], torch.zeros_like(mask), response_mask,
                           **LossConfig().objective_kwargs())
    torch.testing.assert_close(total, expected, rtol=1e-6, atol=1e-7)
    # and verl's GRPO advantages are the core's
    core_adv = grpo_advantages(rm_scores.sum(-1), list(uid))
    torch.testing.assert_close(adv[:, 0], core_adv)


@pytest.mark.parametrize("clip_ratio_c", [3.0, 1.5])
def test_grpo_is_verls_stock_loss_dual_clip_included(clip_ratio_c):
    """With no off-policy token, eq. 6 on verl equals verl's own `vanilla` policy loss (PPO clip with
    dual-clip for negative advantages) under the same settings: `--method grpo` is verl's GRPO."""
    cfg = compose_config("grpo", [f"loss.clip_ratio_c={clip_ratio_c}"])
    OmegaConf.resolve(cfg)
    actor = omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)
    _, logp, old, adv, mask, response_mask, _, _ = _mini_batch(seed=2, with_mask=False)
    old = logp - 2.0 * torch.rand(B, R, generator=torch.Generator().manual_seed(5))  # ratios up to e^2 > c
    negative_far = (adv < 0) & (torch.exp(logp - old) > clip_ratio_c) & response_mask.bool()
    assert negative_far.any()  # the dual-clip branch is exercised
    stock, _ = POLICY_LOSS_REGISTRY["vanilla"](old, logp, adv, response_mask, "token-mean", config=actor)
    ours = hybrid_loss(logp, old, adv[:, 0], torch.zeros_like(mask), response_mask,
                       **LossConfig(clip_ratio_c=clip_ratio_c).objective_kwargs())
    torch.testing.assert_close(ours, stock, rtol=1e-6, atol=1e-7)
    plain = hybrid_loss(logp, old, adv[:, 0], torch.zeros_like(mask), response_mask, clip_ratio_c=None)
    assert not torch.allclose(plain, stock)  # without dual-clip the numbers differ


def test_registered_loss_needs_the_worker_wrapper():
    assert POLICY_LOSS_REGISTRY[LOSS_NAME] is scope_hybrid_policy_loss
    x = torch.zeros(2, 3)
    with pytest.raises(RuntimeError, match="set_loss_fn"):
        scope_hybrid_policy_loss(x, x, x, torch.ones(2, 3), "token-mean", None)


def test_pickled_worker_loss_registers_itself_in_a_fresh_process(actor_config):
    """Ray ships the installed loss function to the workers by pickling: unpickling imports this
    module, which registers `scope_hybrid` there."""
    payload = pickle.dumps(partial(scope_actor_loss, loss_config=LossConfig(lam=0.3)))
    code = ("import pickle, sys; fn = pickle.loads(sys.stdin.buffer.read()); "
            "from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY; "
            f"print('{LOSS_NAME}' in POLICY_LOSS_REGISTRY, fn.keywords['loss_config'].lam)")
    out = subprocess.run([sys.executable, "-c", code], input=payload, capture_output=True, timeout=120, check=False,
                         env={"PYTHONPATH": ":".join(sys.path), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    assert out.stdout.decode().strip().splitlines()[-1] == "True 0.3"
