"""`scope-bench train --backend verl --method sft | sft+rl` through verl's own SFT trainer (torchrun,
`verl.trainer.sft_trainer`) and then verl's GRPO fit, on CPU with the warm-started tiny model: one sft+rl
run (2 SFT steps, 1 GRPO step), resumed (nothing is redone), its SFT model evaluated, and the configs."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch
import yaml
from safetensors.torch import load_file
from test_verl_cpu_e2e import evaluate_cli, step_rows, train

SFT_STEPS = 2
SMALL_RL = ("data.train_batch_size=2", "actor_rollout_ref.actor.ppo_mini_batch_size=2",
            "actor_rollout_ref.rollout.n=4", "trainer.test_freq=-1")  # a quick GRPO step


@pytest.fixture(scope="module", autouse=True)
def warm_start():
    from scope_bench.synthetic.model import warm_start_model

    return warm_start_model()


@pytest.fixture(scope="module")
def sft_rl(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("verl_sft") / "sft+rl"
    rows = train(run_dir, "sft+rl", 1, f"sft.trainer.total_training_steps={SFT_STEPS}", *SMALL_RL)
    return run_dir, rows


def _tensor(model_dir, name="model.embed_tokens.weight"):
    return load_file(str(next(model_dir.glob("*.safetensors"))))[name].float()


def test_sft_then_grpo_from_the_sft_model(sft_rl, warm_start):
    run_dir, rows = sft_rl
    sft = run_dir / "sft"
    log = [json.loads(line) for line in (sft / "sft_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, SFT_STEPS + 1))  # verl's SFT loss, logged each step
    assert all(0 < r["data"]["train/loss"] < 10 for r in log)
    model = sft / "checkpoints" / f"global_step_{SFT_STEPS}" / "huggingface"
    assert json.loads((sft / "phase.json").read_text())["model"] == str(model)
    assert not torch.equal(_tensor(model), _tensor(warm_start))  # the SFT steps moved the weights

    sft_cfg = yaml.safe_load((sft / "config.yaml").read_text())
    assert (sft_cfg["method"], sft_cfg["phase_of"], sft_cfg["model"]["path"]) == ("sft", "sft+rl", str(warm_start))
    rl_cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert rl_cfg["method"] == "sft+rl"
    assert rl_cfg["actor_rollout_ref"]["model"]["path"] == str(model)  # GRPO starts from the SFT model
    assert rl_cfg["sft"]["base_model"] == str(warm_start)
    from scope_bench.identity import run_identity

    assert run_identity(run_dir) == {"method": "sft+rl", "backbone": "synthetic"}
    assert [r["step"] for r in step_rows(rows)] == [1] and rows[0]["method"] == "sft+rl"
    assert (run_dir / "checkpoints" / "global_step_1" / "actor").is_dir()


def test_eval_reads_the_sft_model_as_the_sft_row(sft_rl, tmp_path):
    from test_verl_cpu_e2e import _synthetic_eval_file

    run_dir, _ = sft_rl
    data = _synthetic_eval_file(tmp_path / "synthetic.jsonl", n=2)
    done = evaluate_cli(run_dir / "sft", tmp_path / "eval", data)  # the phase folder: its latest step's model
    assert done.returncode == 0, done.stderr[-4000:]
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert (summary["method"], summary["backbone"]) == ("sft", "synthetic")
    model = run_dir / "sft" / "checkpoints" / f"global_step_{SFT_STEPS}" / "huggingface"
    assert summary["checkpoint"] == str(model) and "merging" not in done.stderr  # saved whole: nothing to merge
    assert len((tmp_path / "eval" / "results.jsonl").read_text().splitlines()) == 2


def test_resume_keeps_the_finished_phases(sft_rl):
    """`--resume` of the finished run: the SFT phase is not run again (its phase.json), and the GRPO phase,
    at its last step, starts nothing (verl's own fit would run one step more)."""
    run_dir, rows = sft_rl
    sft = run_dir / "sft"
    files = (sft / "sft_log.jsonl", sft / "phase.json", sft / "config.yaml", run_dir / "metrics.jsonl")
    before = {p: p.stat().st_mtime_ns for p in files}
    assert train(run_dir, "sft+rl", 1, "--resume", f"sft.trainer.total_training_steps={SFT_STEPS}",
                 *SMALL_RL) == rows
    assert {p: p.stat().st_mtime_ns for p in files} == before
    log = next(run_dir.parent.glob(f"{run_dir.name}-1.log")).read_text()
    assert "SFT phase already finished" in log and "already finished its 1 steps" in log
    assert sorted(p.name for p in (sft / "checkpoints").glob("global_step_*")) == [f"global_step_{SFT_STEPS}"]


def _cli(capsys, *args) -> tuple[int, str, str]:
    """The `scope-bench train --backend verl` command in this process (config only: no training starts)."""
    from scope_bench.cli import main

    code = main(["train", "--backend", "verl", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_sft_config_is_the_paper_recipe(tmp_path, capsys):
    import pandas as pd

    from scope_bench.engines.verl.sft import write_synthetic_sft_parquet
    from scope_bench.prompts import chat_messages

    data = write_synthetic_sft_parquet(tmp_path / "sft.parquet", n=4)
    code, out, err = _cli(capsys, "--method", "sft", "--model", "Qwen/Qwen2.5-Math-7B", "--sft-data", str(data),
                          "--print-config", "--run-dir", str(tmp_path / "run"), "optim.lr=2e-5")
    assert code == 0, err
    cfg = yaml.safe_load(out)
    assert cfg["method"] == "sft" and cfg["trainer"]["total_epochs"] == 3  # the paper's 3 epochs
    assert cfg["data"]["messages_key"] == "messages" and cfg["data"]["train_files"] == str(data)
    assert cfg["optim"]["lr"] == 2e-5 and "hf_model" in cfg["checkpoint"]["save_contents"]
    assert cfg["trainer"]["default_local_dir"] == str(tmp_path / "run" / "checkpoints")
    table = pd.read_parquet(data)
    first = list(table["messages"][0])
    assert [dict(m) for m in first[:2]] == chat_messages(table["question"][0])  # the GRPO prompt template
    assert first[2]["role"] == "assistant" and "\\boxed{" in first[2]["content"]  # then the solution

    code, _, err = _cli(capsys, "--method", "sft", "--model", "Qwen/Qwen2.5-Math-7B", "--run-dir", str(tmp_path / "r2"))
    assert code == 2 and "--sft-data" in err
    if importlib.util.find_spec("flash_attn") is None:  # refused before torchrun, with the keys that avoid it
        code, _, err = _cli(capsys, "--method", "sft", "--model", "Qwen/Qwen2.5-Math-7B", "--sft-data", str(data),
                            "--run-dir", str(tmp_path / "r4"))
        assert code == 2 and "++model.override_config.attn_implementation=sdpa" in err
    code, out, err = _cli(capsys, "--method", "sft+rl", "--model", "Qwen/Qwen2.5-Math-7B", "--sft-data", str(data),
                          "--data", str(data), "--print-config", "--run-dir", str(tmp_path / "r3"), "sft.optim.lr=3e-5")
    assert code == 0, err
    sft_part, rl_part = out.split("# GRPO phase")
    assert yaml.safe_load(sft_part)["optim"]["lr"] == 3e-5
    rl = yaml.safe_load(rl_part.split("\n", 1)[1])
    assert rl["method"] == "sft+rl" and rl["actor_rollout_ref"]["model"]["path"].endswith("global_step_N/huggingface")


def test_sft_alone_runs_from_the_command_line(tmp_path, warm_start):
    """`--method sft` as a user runs it: verl's SFT trainer is the whole run, its folder the run folder."""
    import subprocess

    from test_verl_cpu_e2e import CLI

    run_dir = tmp_path / "sft"
    cmd = [*CLI, "train", "--backend", "verl", "--device", "cpu", "--method", "sft", "--steps", "1",
           "--run-dir", str(run_dir)]
    done = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    log = [json.loads(line) for line in (run_dir / "sft_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1] and 0 < log[0]["data"]["train/loss"] < 10
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert cfg["method"] == "sft" and "phase_of" not in cfg and cfg["model"]["path"] == str(warm_start)
    model = run_dir / "checkpoints" / "global_step_1" / "huggingface"
    assert json.loads((run_dir / "phase.json").read_text())["model"] == str(model)
    assert not torch.equal(_tensor(model), _tensor(warm_start))
