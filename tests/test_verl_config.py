"""Hydra composition of each method's verl config (checked by verl's own validator), the launcher's
flags, and `scope-bench data prepare` output loaded by verl's RLHFDataset."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("verl", reason="verl is installed by the test command (pip install -e .[verl])")

from scope_bench.cli import main as cli_main
from scope_bench.engines.verl.config import compose_config, method_blocks, split_overrides
from scope_bench.engines.verl.launch import verl_overrides

SERVICES = ["prm.kind=vllm", "prm.url=http://prm:8000", "refiner.kind=openai", "refiner.url=http://teacher/v1",
            "refiner.model=deepseek-r1"]


@pytest.mark.parametrize("method, stage, prefix_source, offpolicy_advantage", [
    ("grpo", "none", "prm", False), ("scope", "scope", "prm", False), ("replace", "scope", "none", True),
    ("prm-reward", "prm_reward", "prm", False)])
def test_each_method_composes_and_passes_verls_validation(tmp_path, method, stage, prefix_source,
                                                          offpolicy_advantage):
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    cfg = compose_config(method, SERVICES, run_dir=tmp_path / "run")
    assert (cfg.method, cfg.stage, cfg.scope.prefix_source, cfg.loss.offpolicy_advantage) == (
        method, stage, prefix_source, offpolicy_advantage)
    # the paper's setup (B.1)
    assert cfg.data.train_batch_size == 128 and cfg.actor_rollout_ref.rollout.n == 8
    assert cfg.actor_rollout_ref.rollout.temperature == 1.0 and cfg.trainer.total_epochs == 10
    assert cfg.actor_rollout_ref.rollout.prompt_length == 2048 and cfg.actor_rollout_ref.rollout.response_length == 2048
    # the plumbing this recipe relies on
    assert cfg.trainer.use_v1 is False and cfg.algorithm.adv_estimator == "grpo"
    assert cfg.actor_rollout_ref.actor.policy_loss.loss_mode == "scope_hybrid"
    assert cfg.actor_rollout_ref.actor.loss_agg_mode == "token-mean"
    assert cfg.reward.custom_reward_function.path == "pkg://scope_bench.grading.verl_reward"  # an import on every node
    assert cfg.ray_kwargs.ray_init.runtime_env.env_vars.VERL_USE_EXTERNAL_MODULES == "scope_bench.engines.verl.loss"
    assert cfg.trainer.experiment_name == f"{method}-seed0"
    assert cfg.trainer.default_local_dir == str((tmp_path / "run" / "checkpoints").resolve())
    validate_config(config=cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg))


def test_overrides_reach_the_right_block():
    assert split_overrides(["scope.tau=0.7", "trainer.nnodes=2", "+loss.lam=0.5"]) == (
        ["scope.tau=0.7", "+loss.lam=0.5"], ["trainer.nnodes=2"])
    cfg = compose_config("scope", SERVICES + ["scope.tau=0.7", "loss.lam=0.5", "trainer.nnodes=2", "seed=3",
                                              "actor_rollout_ref.actor.optim.lr=5e-7"])
    assert cfg.scope.tau == 0.7 and cfg.loss.lam == 0.5 and cfg.trainer.nnodes == 2
    assert cfg.actor_rollout_ref.actor.optim.lr == 5e-7
    assert cfg.seed == 3 and cfg.data.seed == 3 and cfg.trainer.experiment_name == "scope-seed3"
    assert cfg.actor_rollout_ref.actor.clip_ratio_high == cfg.loss.clip_eps


@pytest.mark.parametrize("method, overrides, message", [
    ("sft", [], "is SFT only: it runs verl.s SFT trainer"),
    ("scope", SERVICES + ["scope.tua=0.7"], "scope.tua"),
    ("scope", SERVICES + ["scope.tau=1.5"], "tau"),
    ("scope", SERVICES + ["trainer.use_v1=true"], "use_v1"),
    ("scope", SERVICES + ["algorithm.rollout_correction.bypass_mode=true"], "bypass_mode"),
    ("scope", ["refiner.kind=openai", "refiner.url=http://t/v1", "refiner.model=m"], "needs a PRM"),
    ("scope", ["prm.kind=vllm", "prm.url=http://p"], "needs a refiner"),
    ("grpo", ["trainer.no_such_key=1"], "no_such_key"),
    ("grpo", ["algorithm.rollout_correction.rollout_is=token"], "rollout_is/rollout_rs must be null"),
    ("scope", SERVICES + ["algorithm.rollout_correction.rollout_rs=token"], "every method"),
    ("grpo", ["distillation.enabled=true"], "distillation"),
    ("scope", SERVICES + ["actor_rollout_ref.actor.use_kl_loss=true"], "use_kl_loss"),
    ("replace", SERVICES + ["algorithm.use_kl_in_reward=true"], "use_kl_in_reward"),
    ("scope", SERVICES + ["actor_rollout_ref.actor.entropy_coeff=0.01"], "refiner's tokens"),
    ("scope", SERVICES + ["loss.clip_ratio_c=0.5"], "clip_ratio_c"),
    ("prm-step-reward", SERVICES + ["algorithm.adv_estimator=grpo"], "must be scope_dense_prm"),
    ("prm-step-reward", SERVICES + ["algorithm.norm_adv_by_std_in_grpo=false"], "norm_adv_by_std_in_grpo"),
    ("grpo", ["algorithm.adv_estimator=scope_dense_prm"], "must be grpo"),
    ("luffy", SERVICES + ["luffy.source=data"], "luffy.source=data runs with the local trainer only"),
    ("scope", SERVICES + ["stage=dpo"], "stage must be one of none, scope, prm_reward, luffy"),
])
def test_bad_configs_name_the_key(method, overrides, message):
    with pytest.raises(ValueError, match=message):
        compose_config(method, overrides)


def test_kl_and_entropy_stay_available_where_no_row_is_rewritten():
    for method, extra in (("grpo", []), ("prm-reward", SERVICES)):
        cfg = compose_config(method, extra + ["actor_rollout_ref.actor.use_kl_loss=true",
                                              "actor_rollout_ref.actor.entropy_coeff=0.01"])
        assert cfg.actor_rollout_ref.actor.use_kl_loss


def test_cpu_device_adds_the_cpu_sizes_under_user_overrides():
    cfg = compose_config("scope", SERVICES + ["data.train_batch_size=2"], device="cpu")
    assert cfg.actor_rollout_ref.rollout.name == "hf" and cfg.actor_rollout_ref.actor.strategy == "fsdp2"
    assert cfg.actor_rollout_ref.model.override_config.attn_implementation == "sdpa"
    assert cfg.data.train_batch_size == 2 and cfg.trainer.device == "cpu"  # the user's value wins
    gpu = compose_config("scope", SERVICES)
    assert gpu.actor_rollout_ref.rollout.name == "vllm" and gpu.data.train_batch_size == 128


def test_method_blocks_come_from_the_shared_trainer_files(tmp_path):
    (tmp_path / "base.yaml").write_text((Path(__file__).parents[1] / "trainers" / "base.yaml").read_text())
    (tmp_path / "scope.yaml").write_text("method: scope\nstage: scope\nscope:\n  tau: 0.8\n")
    blocks = method_blocks("scope", ["loss.gamma=0.3"], trainers_dir=tmp_path)
    assert blocks.scope.tau == 0.8 and blocks.loss.gamma == 0.3 and blocks.prm.url is None
    assert "train" not in blocks and "rollout" not in blocks  # local-trainer blocks stay out of verl's config


def test_cli_flags_become_overrides(tmp_path):
    data = tmp_path / "train.parquet"
    data.write_bytes(b"")
    args = argparse.Namespace(model="Qwen/Qwen2.5-Math-1.5B", data=str(data), val_data=None, seed=1, nnodes=2,
                              gpus_per_node=4, steps=None, epochs=3, refiner_concurrency=16, prm_device=None,
                              logger="console, wandb", prm_url="http://prm:8000", prm=None,
                              refiner_url="http://t/v1", refiner="r1", refiner_key_env="KEY", resume=False,
                              set_overrides=["scope.tau=0.6"], overrides=["trainer.save_freq=5"])
    out = verl_overrides(args)
    for item in ["actor_rollout_ref.model.path=Qwen/Qwen2.5-Math-1.5B", f"data.train_files={data}",
                 f"data.val_files={data}", "trainer.test_freq=-1", "seed=1", "trainer.nnodes=2",
                 "trainer.n_gpus_per_node=4", "trainer.total_epochs=3", "refiner.concurrency=16",
                 "trainer.logger=[console,wandb]", "prm.kind=vllm", "prm.url=http://prm:8000",
                 "refiner.kind=openai", "refiner.model=r1", "refiner.api_key_env=KEY", "trainer.resume_mode=disable"]:
        assert item in out, item
    assert out[-2:] == ["scope.tau=0.6", "trainer.save_freq=5"]  # explicit overrides win
    compose_config("scope", out)  # and they compose
    with pytest.raises(ValueError, match="verl-format parquet"):
        verl_overrides(argparse.Namespace(data="train.jsonl"))


def test_train_print_config_through_the_cli(capsys, tmp_path):
    code = cli_main(["train", "--backend", "verl", "--method", "scope", "--print-config", "--refiner", "r1",
                     "--refiner-url", "http://t/v1", "--run-dir", str(tmp_path), "prm.kind=vllm", "prm.url=http://p:1",
                     "scope.tau=0.6"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "loss_mode: scope_hybrid" in printed and "url: http://p:1" in printed and "tau: 0.6" in printed


def test_verl_flags_extend_the_train_parser():
    from scope_bench.engines.cli import register
    from scope_bench.engines.verl.launch import add_arguments

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    train = parser._subparsers._group_actions[0].choices["train"]
    add_arguments(train)  # flags the train parser already has (--prm, --seed, ...) are kept as they are
    args = parser.parse_args(["train", "--method", "scope", "--backend", "verl", "--prm-url", "http://p:1",
                              "--nnodes", "2", "--logger", "console,wandb", "--prm", "Qwen/Qwen2.5-Math-PRM-7B"])
    out = verl_overrides(args)
    assert {"prm.kind=vllm", "prm.url=http://p:1", "prm.path=Qwen/Qwen2.5-Math-PRM-7B", "trainer.nnodes=2",
            "trainer.logger=[console,wandb]"} <= set(out)


def _math_rows() -> list[dict]:
    return [
        {"problem": "What is $2+3$?", "solution": "Add: $\\boxed{5}$.", "level": "Level 3"},
        {"problem": "Easy one.", "solution": "$\\boxed{1}$", "level": "Level 1"},
        {"problem": "Find $x$ with $x^2=4$, $x>0$.", "solution": "So $x=\\boxed{2}$.", "level": "Level 5"},
        {"problem": "No box here.", "solution": "The answer is 7.", "level": "Level 4"},
        {"problem": "Unknown level.", "solution": "$\\boxed{3}$", "level": "Level ?"},
    ]


def test_data_prepare_writes_verl_rows_that_rlhf_dataset_loads(tmp_path, capsys):
    from omegaconf import OmegaConf
    from verl.utils.dataset.rl_dataset import RLHFDataset, collate_fn

    src = tmp_path / "math.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in _math_rows()))
    code = cli_main(["data", "prepare", "--dataset", str(src), "--question-field", "problem",
                     "--answer-from", "solution", "--levels", "3,4,5", "--data-source", "math",
                     "--out", str(tmp_path / "out")])
    assert code == 0
    out = capsys.readouterr().out
    assert "wrote 2 rows" in out and "skipped 1 rows without an answer (first: row 3)" in out
    path = tmp_path / "out" / "train.parquet"
    frame = pd.read_parquet(path)
    assert list(frame.columns) == ["data_source", "prompt", "ability", "reward_model", "extra_info"]
    assert [r["ground_truth"] for r in frame.reward_model] == ["5", "2"]
    assert [e["level"] for e in frame.extra_info] == [3, 5]
    prompt = list(frame.prompt[0])
    assert prompt[0] == {"role": "system", "content": "You are a helpful assistant."}
    assert prompt[1]["content"] == "What is $2+3$?\nPlease reason step by step, and put your final answer within \\boxed{}."

    tokenizer = _chat_tokenizer()
    data_cfg = compose_config("grpo", []).data
    data_cfg = OmegaConf.merge(data_cfg, {"train_files": str(path), "val_files": str(path),
                                          "filter_overlong_prompts_workers": 1})
    dataset = RLHFDataset(data_files=str(path), tokenizer=tokenizer, config=data_cfg)
    assert len(dataset) == 2
    item = dataset[1]
    assert item["extra_info"]["question"] == "Find $x$ with $x^2=4$, $x>0$."
    assert item["reward_model"]["ground_truth"] == "2" and item["data_source"] == "math"
    assert item["raw_prompt"][1]["content"].startswith("Find $x$")
    batch = collate_fn([dataset[0], dataset[1]])
    assert list(batch["data_source"]) == ["math", "math"]


def test_data_prepare_names_a_missing_field(tmp_path):
    src = tmp_path / "rows.jsonl"
    src.write_text(json.dumps({"q": "1+1?", "a": "2"}) + "\n")
    with pytest.raises(ValueError, match=r"no question field among \['q', 'a'\]"):
        cli_main(["data", "prepare", "--dataset", str(src), "--out", str(tmp_path / "o"), "--debug"])
    with pytest.raises(ValueError, match="no field 'answer_text'"):
        cli_main(["data", "prepare", "--dataset", str(src), "--question-field", "q", "--answer-field", "answer_text",
                  "--out", str(tmp_path / "o"), "--debug"])
    assert cli_main(["data", "prepare", "--dataset", str(src), "--question-field", "q", "--answer-field", "a",
                     "--out", str(tmp_path / "o.parquet")]) == 0
    assert pd.read_parquet(tmp_path / "o.parquet").data_source[0] == "rows"


def _chat_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from scope_bench.synthetic.model import CHAT_TEMPLATE

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   chat_template=CHAT_TEMPLATE)


def test_data_prepare_on_real_math500_rows(tmp_path):
    from scope_bench.paths import SHARED_DATA_DIR

    src = SHARED_DATA_DIR / "benchmarks" / "qwen" / "math500.jsonl"
    if not src.exists():
        pytest.skip(f"shared benchmark data not found at {src}")
    assert cli_main(["data", "prepare", "--dataset", str(src), "--levels", "3,4,5", "--data-source", "math",
                     "--out", str(tmp_path / "math500.parquet")]) == 0
    frame = pd.read_parquet(tmp_path / "math500.parquet")
    source = [json.loads(line) for line in src.read_text().splitlines()]
    kept = [r for r in source if int(r["level"]) >= 3]
    assert len(frame) == len(kept) and 0 < len(kept) < 500
    assert [r["ground_truth"] for r in frame.reward_model] == [str(r["answer"]).strip() for r in kept]
    assert [e["question"] for e in frame.extra_info] == [r["problem"].strip() for r in kept]


def test_launch_hands_the_scope_task_runner_to_verl(tmp_path, monkeypatch):
    from verl.trainer import main_ppo

    from scope_bench.engines.verl.launch import forwarded_env, runner_options
    from scope_bench.engines.verl.trainer import ScopeTaskRunner

    src = tmp_path / "rows.jsonl"
    src.write_text(json.dumps({"question": "1+1?", "answer": "2"}) + "\n")
    assert cli_main(["data", "prepare", "--dataset", str(src), "--out", str(tmp_path / "data")]) == 0
    calls = []
    monkeypatch.setattr(main_ppo, "run_ppo", lambda config, task_runner_class: calls.append((config, task_runner_class)))
    run_dir = tmp_path / "run"
    code = cli_main(["train", "--backend", "verl", "--method", "grpo", "--data", str(tmp_path / "data" / "train.parquet"),
                     "--run-dir", str(run_dir), "--seed", "2", "trainer.n_gpus_per_node=4",
                     "++actor_rollout_ref.model.override_config.attn_implementation=sdpa",  # no flash-attn here
                     "actor_rollout_ref.model.use_remove_padding=false"])
    assert code == 0
    (config, runner), = calls
    assert type(runner).__name__ == "ActorOptionWrapper"  # ScopeTaskRunner.options(**runner_options(config))
    assert runner_options(config, cpu=False) == {"runtime_env": {"env_vars": forwarded_env(config)}}
    assert ScopeTaskRunner is not None and config.trainer.n_gpus_per_node == 4 and config.seed == 2
    assert config.data.train_files == str((tmp_path / "data" / "train.parquet").resolve())
    assert config.trainer.val_before_train is False  # no --val-data
    assert "loss_mode: scope_hybrid" in (run_dir / "config.yaml").read_text()
