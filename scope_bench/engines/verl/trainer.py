"""SCOPE as a verl recipe: a `RayPPOTrainer` subclass and the Ray task runner that starts it.

Why `RayPPOTrainer` (`trainer.use_v1=false`) and not verl's default TransferQueue trainer: in
`RayPPOTrainer.fit` the batch is one `DataProto` on the driver between reward and old-log-prob
computation, so the stage can rewrite rows in place with verl's own tensors and be tested on CPU with
real verl objects; the v1 trainer keeps rows in a TransferQueue store (an extra service, padding-free
nested tensors) that is not importable on CPU CI. `RayPPOTrainer` is marked deprecated in 0.9.1, so
the project pins `verl==0.9.1`.

Three overrides, nothing forked:
- `init_workers`: installs `scope_actor_loss` (eq. 6 with the off-policy mask) on the actor workers,
  as verl installs its critic loss, and builds the stage (PRM and refiner clients) on the driver.
- `_compute_old_log_prob`: runs first in the step after the rewards, so the stage runs here, before
  old log-probs (recomputed on the rewritten rows; never bypass mode) and GRPO advantages.
- `_update_actor`: adds the stage's metrics to the actor's, which verl logs through its tracking
  (console, wandb, tensorboard, file) under the local trainer's names; they are also appended to
  `<run_dir>/metrics.jsonl`.
"""

from __future__ import annotations

import json
import os
import re
import time
from functools import partial
from pathlib import Path

import ray
import torch

from scope_bench.core.rectify import recording_outcomes
from scope_bench.engines.rollouts import last_outcomes, stage_fields, write_rollouts
from scope_bench.engines.verl.advantage import STEP_REWARDS
from scope_bench.engines.verl.loss import scope_actor_loss
from scope_bench.engines.verl.rewrite import MASK_KEY, onpolicy_mask
from verl.trainer.main_ppo_v0 import BaseTaskRunner, TaskRunner
from verl.trainer.ppo.ray_trainer import RayPPOTrainer

# the worker-side diagnostics of the loss (`engines/verl/loss.py`), copied into metrics.jsonl
WORKER_METRICS = ("offpolicy_token_frac", "pg_clipfrac", "ppo_kl", "grad_norm")
STAGE_FIELDS = "scope_rollout_record"  # non-tensor column: the stage's fields of each row
_VAL_REWARD = re.compile(r"^val-core/[^/]+/(acc|reward)/mean@\d+$")  # verl 0.9.1 logs `acc`


class ScopeRayPPOTrainer(RayPPOTrainer):
    def init_workers(self):
        super().init_workers()
        from omegaconf import OmegaConf

        from scope_bench.core.config import LossConfig, from_dict
        from verl.utils.config import omega_conf_to_dataclass

        loss_cfg = from_dict(LossConfig, OmegaConf.to_container(self.config.loss, resolve=True), "loss")
        actor_cfg = omega_conf_to_dataclass(self.config.actor_rollout_ref.actor)
        self.actor_rollout_wg.set_loss_fn(partial(scope_actor_loss, config=actor_cfg, loss_config=loss_cfg))
        self.method_stage = build_stage(self.config, self.tokenizer)
        self._stage_metrics: dict = {}
        self._metrics_path = Path(self.config.run_dir) / "metrics.jsonl"

    def _load_checkpoint(self):
        """Resume: rows logged after the checkpoint came from steps that will run again; drop them."""
        result = super()._load_checkpoint()
        if self._metrics_path.exists():
            rows = self._metrics_path.read_text().splitlines()
            kept = [r for r in rows if r.strip() and json.loads(r).get("step", 0) <= self.global_steps]
            self._metrics_path.write_text("".join(r + "\n" for r in kept))
            self.method_stage.bill.restore([json.loads(r) for r in kept])  # a spent budget stays spent
        return result

    def _get_gen_batch(self, batch):
        self._step_start = time.perf_counter()  # a step starts here (before generation): the bill's step time
        return super()._get_gen_batch(batch)

    def _compute_old_log_prob(self, batch):
        with recording_outcomes() as recorded:  # what SCOPE did to each group, for the rollout record
            self._stage_metrics = self.method_stage(batch)  # rewrites rows / rewards of `batch` in place
        attach_stage_fields(batch, recorded)
        if MASK_KEY in batch.batch.keys():  # noqa: SIM118 - what the driver sends; the worker reports its own
            mask, valid = batch.batch[MASK_KEY], batch.batch["response_mask"]
            self._stage_metrics["offpolicy_token_frac_sent"] = float((mask * valid).sum() / valid.sum().clamp(min=1))
        old_log_prob, mfu = super()._compute_old_log_prob(batch)
        entropy, mask = old_log_prob.batch["entropys"], batch.batch["response_mask"]
        self._stage_metrics["entropy"] = float((entropy * mask).sum() / mask.sum().clamp(min=1))
        if MASK_KEY in batch.batch.keys() and "rollout_log_probs" in batch.batch.keys():  # noqa: SIM118
            self._stage_metrics.update(rollout_probs_metrics(batch, old_log_prob))
            batch.batch.pop("rollout_log_probs")  # verl's own diagnostics would read the refiner's tokens too
        return old_log_prob, mfu

    def _update_actor(self, batch):
        output = super()._update_actor(batch)
        metrics = output.meta_info["metrics"]
        worker = {name: metrics.get(f"actor/{name}") for name in WORKER_METRICS}
        if metrics.get("actor/response_tokens"):  # exact over micro-batches and workers (equal counts of each)
            worker["offpolicy_token_frac"] = _plain(metrics["actor/offpolicy_tokens"]) / _plain(
                metrics["actor/response_tokens"])
        start = getattr(self, "_step_start", None)  # the step's time: generation to this update
        self._stage_metrics.update(self.method_stage.bill.close_step(
            self.global_steps, self._stage_metrics, stage_s=self._stage_metrics.get("time/stage") or 0.0,
            step_s=time.perf_counter() - start if start is not None else 0.0))
        row = {"step": self.global_steps, "method": self.config.method, "seed": self.config.seed,
               **self._stage_metrics, "loss": metrics.get("actor/pg_loss"), "lr": metrics.get("actor/lr"), **worker}
        metrics.update({k: v for k, v in self._stage_metrics.items() if v is not None})
        self._append(row)
        self.method_stage.bill.write_summary(self.config.run_dir)
        self._stage_metrics = {}
        return output

    def _log_rollout_data(self, batch, reward_extra_infos_dict, timing_raw, rollout_data_dir):
        """verl's rollout dump (`trainer.rollout_data_dir`) as the rollout record of both engines
        (`engines/rollouts.py`): verl's fields, plus per row what the stage did: the group, the
        advantage trained on, the refiner's tokens (`suffix`) and how many there are, the weights the
        row was generated with (`weights_step`), and the sampled response with its PRM step scores and
        its group's record (`attach_stage_fields`); with the dense PRM reward, each step's reward and the
        advantage at its last token (`step_fields`). Written at once, within `metrics.max_rollout_rows`."""
        extra = dict(reward_extra_infos_dict)
        valid = batch.batch["response_mask"].bool()
        mask = batch.batch[MASK_KEY] if MASK_KEY in batch.batch.keys() else torch.zeros_like(valid)  # noqa: SIM118
        offpolicy = mask.bool() & valid
        responses = batch.batch["responses"]
        first = valid.float().argmax(dim=-1)
        extra["uid"] = [str(u) for u in batch.non_tensor_batch["uid"]]
        # the update whose weights the rollout server generated with (the server's last weight sync)
        synced = batch.non_tensor_batch.get("max_global_steps", [None] * len(valid))
        extra["weights_step"] = [None if v is None else int(v) for v in synced]
        extra["advantage"] = batch.batch["advantages"].gather(1, first[:, None]).squeeze(1).tolist()
        if STEP_REWARDS in batch.non_tensor_batch:  # the dense PRM reward: each step's reward and advantage
            extra.update(step_fields(batch))
        extra["response_tokens"] = valid.sum(-1).tolist()
        extra["offpolicy_tokens"] = offpolicy.sum(-1).tolist()
        extra["offpolicy_is_suffix"] = [bool(_is_suffix(offpolicy[i], valid[i])) for i in range(len(valid))]
        extra["suffix"] = [self.tokenizer.decode(responses[i][offpolicy[i]].tolist(), skip_special_tokens=True)
                           for i in range(len(valid))]
        extra["prefix"] = [self.tokenizer.decode(responses[i][valid[i] & ~offpolicy[i]].tolist(),
                                                 skip_special_tokens=True) for i in range(len(valid))]
        tok = self.tokenizer
        base = {"step": [self.global_steps] * len(valid), "input": tok.batch_decode(batch.batch["prompts"],
                                                                                   skip_special_tokens=True),
                "output": tok.batch_decode(responses, skip_special_tokens=True),
                "gts": [item.non_tensor_batch.get("reward_model", {}).get("ground_truth") for item in batch],
                "score": batch.batch["token_level_scores"].sum(-1).cpu().tolist()}
        fields = {**base, **{k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in extra.items()
                             if len(v) == len(valid)}}
        stage = batch.non_tensor_batch.get(STAGE_FIELDS, [{}] * len(valid))
        rows = [{**{k: v[i] for k, v in fields.items()}, **stage[i]} for i in range(len(valid))]
        write_rollouts(rollout_data_dir, self.global_steps, rows, self.config.metrics.max_rollout_rows)

    def _validate(self, merged: bool = False):
        metrics = super()._validate(merged=merged)
        rewards = [v for k, v in metrics.items() if _VAL_REWARD.match(k)]
        if rewards:
            self._append({"step": self.global_steps, "method": self.config.method, "seed": self.config.seed,
                          "val_accuracy": float(sum(rewards) / len(rewards))})
        return metrics

    def _append(self, row: dict) -> None:
        self._metrics_path.parent.mkdir(parents=True, exist_ok=True)
        with self._metrics_path.open("a") as f:
            f.write(json.dumps({k: _plain(v) for k, v in row.items()}) + "\n")


def attach_stage_fields(batch, recorded: list) -> None:
    """Per row, the rollout record's stage fields (`engines/rollouts.stage_fields`: the response as
    sampled, its PRM step scores, its group's record), as a non-tensor column that travels with the
    row to the dump. Groups are the stage's own: uid groups in order of first appearance."""
    import numpy as np

    from scope_bench.engines.verl.stage import group_rows

    rows = group_rows(batch.non_tensor_batch["uid"])
    found = last_outcomes(recorded, len(rows))
    if found is None:
        return
    column = np.empty(len(batch), dtype=object)
    for members, per_row in zip(rows, stage_fields(*found)):
        for row, value in zip(members, per_row):
            column[row] = value
    batch.non_tensor_batch[STAGE_FIELDS] = column


def step_fields(batch) -> dict[str, list]:
    """Per row, `step_rewards` (`[token end, reward]` of each step, as trained) and `step_advantages`
    (the advantage at each step's last token): a dense advantage changes from step to step."""
    advantages = batch.batch["advantages"]
    steps = batch.non_tensor_batch[STEP_REWARDS]
    return {"step_rewards": [[[int(end), float(r)] for end, r in row] for row in steps],
            "step_advantages": [[float(advantages[i, end - 1]) if end > 0 else None for end, _ in row]
                                for i, row in enumerate(steps)]}


def rollout_probs_metrics(batch, old_log_prob) -> dict:
    """verl's rollout-vs-trainer log-prob diagnostics (`training/rollout_probs_diff_*`, the sign that
    vLLM's and FSDP's numerics agree) over the tokens the policy sampled: a rewritten row's prefix,
    every token of the others. The refiner's tokens have no rollout log-prob."""
    from types import SimpleNamespace

    from verl.utils.debug.metrics import calculate_debug_metrics

    return calculate_debug_metrics(SimpleNamespace(batch={
        "rollout_log_probs": batch.batch["rollout_log_probs"], "old_log_probs": old_log_prob.batch["old_log_probs"],
        "response_mask": onpolicy_mask(batch), "responses": batch.batch["responses"]}))


def _is_suffix(offpolicy: torch.Tensor, valid: torch.Tensor) -> bool:
    """The off-policy tokens of a row are exactly the tail of its valid response (or there are none)."""
    n_valid, n_off = int(valid.sum()), int(offpolicy.sum())
    return n_off == 0 or bool(offpolicy[n_valid - n_off: n_valid].all())


def _plain(value):
    """A JSON value: tensors and numpy scalars as floats, per-micro-batch lists as their mean."""
    if isinstance(value, (list, tuple)):
        return sum(_plain(v) for v in value) / len(value) if value else None
    if isinstance(value, torch.Tensor):
        return value.float().mean().item()
    return float(value) if hasattr(value, "dtype") else value


def build_stage(config, tokenizer):
    """The method stage of `config` with its PRM and refiner clients (the PRM only when one is served:
    the rule PRM knows the synthetic task alone)."""
    from omegaconf import OmegaConf

    from scope_bench.engines.bill import Bill, token_counter
    from scope_bench.engines.components import build_prm, build_refiner
    from scope_bench.engines.stage import stage_of
    from scope_bench.engines.verl.stage import MethodStage
    from scope_bench.grading import math_reward

    var = config.refiner.get("api_key_env")
    if stage_of(config).needs_refiner(config) and config.refiner.kind == "openai" and var and not os.environ.get(var):
        raise RuntimeError(f"${var} (refiner.api_key_env) is not set in the task runner; `scope-bench train` forwards "
                           "it from its shell, so set it there (a cluster started with `ray start` has its own env)")
    prm = build_prm(config.prm, seed=config.seed) if config.prm.kind in ("vllm", "qwen") else None
    refiner = build_refiner(config.refiner, seed=config.seed) if stage_of(config).needs_refiner(config) else None
    blocks = {key: OmegaConf.to_container(config[key], resolve=True) for key in ("scope", "prm_reward", "luffy")}
    return MethodStage(
        stage=config.stage, stage_module=config.stage_module, tokenizer=tokenizer,
        verify=lambda text, gt: float(math_reward(text, gt)), prm=prm, refiner=refiner,
        near_miss=config.metrics.near_miss, generation_config=generation_config(config.actor_rollout_ref.model.path),
        advantage=str(config.algorithm.adv_estimator),
        stop_after_failed_steps=int(config.refiner.get("stop_after_failed_steps") or 0),
        bill=Bill.from_config(config.refiner, config.prm, token_counter(tokenizer)), **blocks)


def generation_config(model_path: str):
    """The policy's generation config (its eos ids: where vLLM stops), or None if it has none."""
    from transformers import GenerationConfig

    try:
        return GenerationConfig.from_pretrained(model_path)
    except (OSError, ValueError):
        return None


class _ScopeTaskRunner(TaskRunner.__ray_actor_class__):
    """verl's task runner, building `ScopeRayPPOTrainer` instead of `RayPPOTrainer`.

    The task runner is a Ray actor process of its own; swapping the trainer class in its copy of
    `main_ppo_v0` reuses verl's whole setup (workers, datasets, resource pools) without copying it.
    """

    def __init__(self):
        # not `super().__init__()` as verl's TaskRunner does: Ray ships that class by value to the
        # actor process, where the zero-argument super() check fails against the copy
        BaseTaskRunner.__init__(self)

    def run(self, config):
        from verl.trainer import main_ppo_v0

        main_ppo_v0.RayPPOTrainer = ScopeRayPPOTrainer
        return super().run(config)


ScopeTaskRunner = ray.remote(num_cpus=1)(_ScopeTaskRunner)
