"""ScopeRayPPOTrainer's overrides with verl's real base methods and a fake actor worker group (no
Ray, no GPU): the loss is installed, the stage runs before old log-probs on the rewritten rows, and
its metrics reach verl's actor metrics and metrics.jsonl."""

from __future__ import annotations

import json
from functools import partial

import pytest
import torch

pytest.importorskip("verl", reason="verl is installed by the test command (pip install -e .[verl])")

from omegaconf import OmegaConf
from test_verl_stage import AnswerRefiner, StepPRM, byte_tokenizer, make_batch, verify
from verl.trainer.ppo.ray_trainer import RayPPOTrainer
from verl.utils import tensordict_utils as tu

from scope_bench.engines.verl import trainer as trainer_module
from scope_bench.engines.verl.config import compose_config
from scope_bench.engines.verl.loss import scope_actor_loss

torch.set_num_threads(1)


class FakeActorGroup:
    """Stands in for `actor_rollout_wg`: records the loss function and the batches it is given."""

    def __init__(self):
        self.loss_fn = None
        self.seen = []

    def set_loss_fn(self, loss_fn):
        self.loss_fn = loss_fn

    def compute_log_prob(self, data):
        self.seen.append(data)
        values = torch.full_like(data["input_ids"].values(), -0.5, dtype=torch.float32)
        nested = torch.nested.nested_tensor_from_jagged(values, offsets=data["input_ids"].offsets())
        return tu.get_tensordict({"log_probs": nested, "entropy": nested * -2},
                                 non_tensor_dict={"metrics": {"mfu": 0.0}})

    def update_actor(self, data):
        self.seen.append(data)
        return tu.get_tensordict({}, non_tensor_dict={"metrics": {"actor/pg_loss": [0.25], "actor/lr": [1e-6],
                                                                  "mfu": [0.0]}})


@pytest.fixture(scope="module")
def tokenizer():
    return byte_tokenizer()


@pytest.fixture
def trainer(tmp_path, tokenizer, monkeypatch):
    monkeypatch.setenv("SCOPE_REFINER_API_KEY", "test-key")  # the task runner refuses an openai refiner without it
    cfg = compose_config("scope", ["prm.kind=vllm", "prm.url=http://prm:1", "refiner.kind=openai",
                                   "refiner.url=http://t/v1", "refiner.model=r1", "loss.lam=0.5"],
                         run_dir=tmp_path / "run")
    OmegaConf.resolve(cfg)
    group = FakeActorGroup()
    monkeypatch.setattr(RayPPOTrainer, "init_workers", lambda self: setattr(self, "actor_rollout_wg", group))
    t = trainer_module.ScopeRayPPOTrainer.__new__(trainer_module.ScopeRayPPOTrainer)
    t.config, t.tokenizer, t.global_steps = cfg, tokenizer, 3
    t.init_workers()
    return t, group


def test_init_workers_installs_the_hybrid_loss_and_the_stage(trainer):
    t, group = trainer
    assert isinstance(group.loss_fn, partial) and group.loss_fn.func is scope_actor_loss
    assert group.loss_fn.keywords["loss_config"].lam == 0.5
    assert group.loss_fn.keywords["config"].policy_loss.loss_mode == "scope_hybrid"
    stage = t.method_stage
    assert stage.spec.name == "scope" and type(stage.prm.inner).__name__ == "VLLMPoolingPRM"  # metered (the bill)
    refiner = stage.refiner.inner.inner  # metered, then guarded
    assert type(refiner).__name__ == "OpenAIRefiner" and refiner.endpoint.concurrency == 32


def test_stage_runs_before_old_logprobs_and_its_metrics_are_logged(trainer, tokenizer):
    t, group = trainer
    bill = t.method_stage.bill
    t.method_stage.prm, t.method_stage.refiner = bill.meter_prm(StepPRM()), bill.meter_refiner(AnswerRefiner())
    t.method_stage.verify = verify
    batch = make_batch(tokenizer)
    old_log_prob, _ = t._compute_old_log_prob(batch)

    # the worker saw the rewritten batch: one row carries off-policy tokens, rows have their new lengths
    (sent,) = group.seen
    assert int(sent["offpolicy_mask"].sum()) > 0
    assert sent["input_ids"].offsets().diff().tolist() == batch.meta_info["global_token_num"]
    assert old_log_prob.batch["old_log_probs"].shape == batch.batch["responses"].shape
    assert t._stage_metrics["entropy"] == pytest.approx(1.0)

    batch = batch.union(old_log_prob)
    batch.batch["advantages"] = torch.zeros_like(batch.batch["old_log_probs"])
    output = t._update_actor(batch)
    metrics = output.meta_info["metrics"]
    assert metrics["groups_rectified"] == 1 and metrics["accuracy"] == 0.5 and "keep_ratio" in metrics
    rows = [json.loads(line) for line in (t._metrics_path).read_text().splitlines()]
    assert rows[-1]["step"] == 3 and rows[-1]["method"] == "scope" and rows[-1]["groups_rectified"] == 1
    assert rows[-1]["loss"] == 0.25 and rows[-1]["lr"] == 1e-6
    # the bill: tokens counted with the tokenizer (the fakes report no usage), the in-process refiner's
    # latency, no prices (cost null), and the run's totals in bill.json
    assert rows[-1]["refiner/calls"] == 1 and rows[-1]["refiner/prompt_tokens"] > rows[-1]["refiner/completion_tokens"] > 0
    assert rows[-1]["prm/prompt_tokens"] > 0 and rows[-1]["refiner/latency_p50_s"] >= 0
    assert rows[-1]["cost/usd"] is None and rows[-1]["budget/skipped_groups"] == 0 and "time/stage_share" in rows[-1]
    assert metrics["refiner/prompt_tokens"] == rows[-1]["refiner/prompt_tokens"]  # verl's own logger has it too
    summary = json.loads((t._metrics_path.parent / "bill.json").read_text())
    assert summary["refiner/prompt_tokens"] == rows[-1]["refiner/prompt_tokens"] and summary["groups_rectified"] == 1


def test_task_runner_builds_the_scope_trainer(monkeypatch):
    from verl.trainer import main_ppo_v0

    seen = {}
    base = trainer_module.TaskRunner.__ray_actor_class__
    monkeypatch.setattr(base, "run", lambda self, config: seen.setdefault("cls", main_ppo_v0.RayPPOTrainer))
    monkeypatch.setattr(main_ppo_v0, "RayPPOTrainer", main_ppo_v0.RayPPOTrainer)  # restored after the test
    runner = trainer_module._ScopeTaskRunner.__new__(trainer_module._ScopeTaskRunner)
    runner.run(config=None)
    assert seen["cls"] is trainer_module.ScopeRayPPOTrainer
    assert issubclass(trainer_module._ScopeTaskRunner, base)
