"""The local trainer: every method trains a few steps on the embedded default (tiny random-init model,
synthetic task, rule-based PRM, programmatic refiner) and writes loadable checkpoints; the CLI and
the config fail early on bad input."""

from __future__ import annotations

import json

import pytest
import torch

from scope_bench.engines.local import available_methods, load_train_config, train

METHODS = ["grpo", "scope", "replace", "luffy", "prm-reward", "prm-step-reward", "sft", "sft+rl"]
CONTRACT_KEYS = {"step", "method", "seed", "reward_mean", "accuracy", "entropy", "response_length", "keep_ratio",
                 "near_miss@1", "near_miss@2", "near_miss@3", "groups_total", "groups_gated", "groups_rectified",
                 "groups_skipped", "refiner_failures", "loss", "lr"}


@pytest.fixture(scope="module")
def tiny():
    from scope_bench.synthetic import tiny_model

    torch.set_num_threads(1)
    return str(tiny_model())


def small(tiny, run_dir, *extra) -> list[str]:
    """Overrides for a seconds-long run."""
    return [f"model.path={tiny}", f"run_dir={run_dir}", "threads=1", "train.steps=2", "train.batch_size=3",
            "rollout.n=4", "rollout.max_new_tokens=20", "data.n_train=12", "data.n_val=4", "eval.every=2",
            "eval.max_new_tokens=20", *extra]


def read_metrics(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_every_method_has_a_config():
    assert set(METHODS) <= set(available_methods())


@pytest.mark.parametrize("method", METHODS)
def test_method_trains_and_checkpoints_load(method, tiny, tmp_path):
    from transformers import AutoModelForCausalLM

    extra = ["train.sft_steps=1"] if method == "sft+rl" else []
    run_dir = train(load_train_config(method, small(tiny, tmp_path / method, *extra)))
    metrics = read_metrics(run_dir)
    assert [m["step"] for m in metrics] == [1, 2]
    assert all(CONTRACT_KEYS <= set(m) for m in metrics)
    assert all(m["method"] == method and m["loss"] is not None for m in metrics)
    assert 0.0 <= metrics[-1]["val_accuracy"] <= 1.0
    phases = [m["phase"] for m in metrics]
    assert phases == {"sft": ["sft", "sft"], "sft+rl": ["sft", "rl"]}.get(method, ["rl", "rl"])
    if method in ("scope", "replace", "luffy"):
        # a random model fails everything: every group is gated and (refiner ok) rectified (luffy: no gate)
        assert all(m["groups_gated"] == m["groups_rectified"] == 3 for m in metrics)
        assert all(m["keep_ratio"] is not None for m in metrics)
        assert all(m["reward_mean"] == pytest.approx(1 / 4) for m in metrics)  # one rectified per group
    if method in ("replace", "luffy"):
        assert all(m["keep_ratio"] == 0.0 for m in metrics)  # the whole rollout is the refiner's
    if method == "grpo":
        assert all(m["groups_rectified"] == 0 and m["keep_ratio"] is None for m in metrics)
    for ckpt in [run_dir / "checkpoints" / "step_2", run_dir / "final"]:
        model = AutoModelForCausalLM.from_pretrained(ckpt)
        assert (ckpt / "model.safetensors").exists()
    assert (run_dir / "checkpoints" / "step_2" / "trainer_state.pt").exists()
    assert "method: " + method in (run_dir / "config.yaml").read_text()
    # methods with a learning signal on a random model (refiner tokens) moved the weights; GRPO and
    # PRM reward see identical rewards in every group there (all-zero advantages) and must not
    start = AutoModelForCausalLM.from_pretrained(tiny)
    changed = any(not torch.equal(a, b) for a, b in zip(start.parameters(), model.parameters()))
    assert changed == (method not in ("grpo", "prm-reward", "prm-step-reward"))


def test_rectified_rollout_is_trained_with_recomputed_logprobs(tiny, tmp_path, monkeypatch):
    """Old log-probs come from a forward pass over the batch as trained (rectified suffix included),
    never from sampling: the shapes seen by the loss cover the longer mixed trajectories."""
    from scope_bench.engines.local import trainer

    seen = []
    original = trainer.hybrid_loss

    def spy(logp, old_logp, advantages, offpolicy_mask, response_mask, **kw):
        seen.append((old_logp.clone(), logp.detach().clone(), offpolicy_mask.clone(), response_mask.clone()))
        return original(logp, old_logp, advantages, offpolicy_mask, response_mask, **kw)

    monkeypatch.setattr(trainer, "hybrid_loss", spy)
    train(load_train_config("scope", small(tiny, tmp_path / "r", "train.steps=1")))
    old, new, offmask, rmask = seen[0]
    assert offmask.sum() > 0 and (offmask <= rmask).all()
    # one update per batch (ppo_epochs=1): the policy that computed old_logp is the one being trained
    assert torch.allclose(old * rmask, new * rmask, atol=1e-5)


def test_luffy_reads_teacher_solutions_from_a_data_column(tiny, tmp_path):
    from scope_bench.synthetic import generate_split, solution, split_problems

    problems = split_problems("train", 6, seed=0)
    rows = [{**p.to_row(), "target": solution(p)} for p in problems]
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = load_train_config("luffy", small(tiny, tmp_path / "r", f"data.train={data}", "data.val=null",
                                           "metrics.near_miss=false", "luffy.source=data"))
    metrics = read_metrics(train(cfg))
    assert all(m["groups_rectified"] == 3 and m["refiner_failures"] == 0 for m in metrics)
    data.write_text("".join(json.dumps(r) + "\n" for r in generate_split("train", 3)))  # no teacher column
    with pytest.raises(ValueError, match="target"):
        train(load_train_config("luffy", small(tiny, tmp_path / "r2", f"data.train={data}", "data.val=null",
                                               "metrics.near_miss=false", "luffy.source=data")))


def test_cli_trains_with_overrides(tiny, tmp_path, capsys):
    from scope_bench.cli import main

    run_dir = tmp_path / "cli"
    args = ["train", "--method", "grpo", "--run-dir", str(run_dir), "--steps", "1", "--set", "rollout.n=2",
            *small(tiny, run_dir)[2:], "train.steps=1"]
    assert main(args) == 0
    assert "run written to" in capsys.readouterr().out
    assert len(read_metrics(run_dir)) == 1
    assert main(args) == 2  # the run dir holds a run: refuse to overwrite without --resume
    assert "--resume" in capsys.readouterr().err


@pytest.mark.parametrize("method, overrides, match", [
    ("ppo", [], "unknown method 'ppo'"),
    ("scope", ["train.bogus=1"], "train.bogus"),
    ("scope", ["nope=1"], "nope"),
    ("scope", ["rollout.n=1"], "rollout.n"),
    ("scope", ["train.steps=ten"], "train.steps"),
    ("scope", ["stage=magic"], "stage"),
    ("scope", ["scope.tau=1.5"], "tau"),
    ("scope", ["scope.stats_scope=epoch"], "stats_scope"),
    ("scope", ["refiner.failure=explode"], "refiner.failure"),
    ("scope", ["refiner.style=fancy"], "refiner.style"),
    ("scope", ["refiner.error_rate=1.5"], "refiner.error_rate"),
    ("scope", ["prm.fp_rate=2"], "fp_rate"),
    ("scope", ["data.difficulties=[ops9]"], "data.difficulties"),
    ("grpo", ["model.careless_rate=1.5"], "model.careless_rate"),
    ("grpo", ["model.careless_from=-1"], "model.careless_from"),
    ("prm-reward", ["prm_reward.form=dense"], "prm_reward.form"),
    ("luffy", ["luffy.source=data"], "luffy.source"),
    ("scope", ["device=tpu"], "device"),
    ("scope", ["data.train=rows.jsonl"], "prm.kind"),  # the rule PRM only knows the synthetic task
    ("grpo", ["prm.kind=qwen"], "prm.path"),
])
def test_bad_config_fails_at_start_naming_it(method, overrides, match):
    with pytest.raises(ValueError, match=match):
        load_train_config(method, overrides)


@pytest.mark.parametrize("content, match", [
    (None, "not found"),
    ('{"question": "Start with 1. Add 2.", "answer": "3"}\n{"question": "Start with 2. Add 2."}\n', "row 1"),
    ('{"question": "Start with 1. Add 2.", "answer": "3"}\n{not json\n', "line 2"),
    ('{"question": "", "answer": "3"}\n', "row 0"),
])
def test_bad_data_fails_at_start_naming_it(tiny, tmp_path, content, match):
    data = tmp_path / "rows.jsonl"
    if content is not None:
        data.write_text(content)
    cfg = load_train_config("grpo", small(tiny, tmp_path / "r", f"data.train={data}", "data.val=null",
                                          "metrics.near_miss=false"))
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        train(cfg)
    assert not (tmp_path / "r" / "metrics.jsonl").exists()


def test_trains_on_a_jsonl_file(tiny, tmp_path):
    from scope_bench.synthetic import generate_split

    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps({"problem": r["question"], "answer": r["answer"]}) + "\n"
                            for r in generate_split("train", 6)))
    run_dir = train(load_train_config("grpo", small(tiny, tmp_path / "r", f"data.train={data}", "data.val=null",
                                                    "metrics.near_miss=false", "train.steps=1")))
    (m,) = read_metrics(run_dir)
    assert m["near_miss@1"] is None and "val_accuracy" not in m


def test_tensorboard_and_progress_metrics(tiny, tmp_path):
    run_dir = train(load_train_config("scope", small(tiny, tmp_path / "tb", "train.steps=1",
                                                     "metrics.tensorboard=true")))
    assert list((run_dir / "tb").glob("events.out.tfevents.*"))
    (m,) = read_metrics(run_dir)
    stage = ["time/stage/prm", "time/stage/refiner", "time/stage/tokenize", "time/stage/selection"]
    assert all(m[k] >= 0 for k in ["time/generate", "time/update", *stage])
    # the bill of the in-process refiner and PRM (no server usage): counted with the policy's tokenizer
    assert m["refiner/calls"] == 3 and m["refiner/prompt_tokens"] > m["refiner/completion_tokens"] > 0
    assert m["prm/prompt_tokens"] > 0 and m["refiner/latency_p95_s"] > 0 and 0 < m["time/stage_share"] < 1
    assert m["cost/usd"] is None  # no price table: tokens only


def test_verl_backend_is_delegated(monkeypatch):
    import sys
    import types

    from scope_bench.cli import main

    seen = []
    fake = types.ModuleType("scope_bench.engines.verl.launch")
    fake.run = lambda args: seen.append((args.method, args.overrides)) or 0
    fake.add_arguments = lambda parser: None  # the verl-only flags; none needed here
    monkeypatch.setitem(sys.modules, "scope_bench.engines.verl.launch", fake)
    assert main(["train", "--method", "scope", "--backend", "verl", "trainer.total_epochs=1"]) == 0
    assert seen == [("scope", ["trainer.total_epochs=1"])]


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_training_logprobs_match_sampling_logprobs(tiny, temperature):
    """The forward pass the loss uses sees the same positions as `generate` did (left-padded prompts
    of different lengths) and the same temperature: otherwise the trained policy would not be the
    sampling policy (and the ratio, the clip and the loss would use the wrong log-probs)."""
    from scope_bench.engines.local.policy import encode_prompts, load_policy, pack, response_logprobs
    from scope_bench.prompts import prompt_text

    model, tok = load_policy(tiny, torch.device("cpu"))
    prompts = encode_prompts(tok, [prompt_text(tok, q) for q in
                                   ["Start with 1. Add 2.", "Start with 17. Add 10, then add 4, then multiply by 4."]],
                             512)
    width, pad = max(map(len, prompts)), tok.pad_token_id
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    torch.manual_seed(0)
    out = model.generate(input_ids=ids, attention_mask=(ids != pad).long(), do_sample=True, top_k=0,
                         temperature=temperature, max_new_tokens=12, output_scores=True, return_dict_in_generate=True, pad_token_id=pad)
    responses = out.sequences[:, width:]
    sampled = torch.stack(out.scores, 1).log_softmax(-1).gather(-1, responses.unsqueeze(-1)).squeeze(-1)
    with torch.no_grad():
        trained, _ = response_logprobs(model, pack(prompts, responses.tolist(), pad, torch.device("cpu")),
                                       temperature=temperature)
    # compare up to each response's end-of-sequence token (generate pads after it)
    done = (responses == tok.eos_token_id).long().cumsum(-1)
    valid = (done == 0) | ((done == 1) & (responses == tok.eos_token_id))
    assert valid.sum() > 12 and torch.allclose(sampled[valid], trained[valid], atol=1e-4)
