"""A killed run resumes exactly where it stopped: same data order, same samples, same metrics."""

from __future__ import annotations

import json

import pytest
import torch

from scope_bench.engines.local import load_train_config, train


@pytest.fixture(scope="module")
def tiny():
    from scope_bench.synthetic import tiny_model

    torch.set_num_threads(1)
    return str(tiny_model())


def overrides(tiny, run_dir, *extra):
    return [f"model.path={tiny}", f"run_dir={run_dir}", "threads=1", "train.steps=4", "train.batch_size=3",
            "rollout.n=4", "rollout.max_new_tokens=20", "data.n_train=7", "data.n_val=4", "eval.every=2",
            "eval.max_new_tokens=20", "train.lr=1e-3", *extra]


def comparable(run_dir) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    # timings differ from run to run: time/* and the refiner's latency (refiner/latency_p50_s, _p95_s)
    return [{k: v for k, v in row.items() if not k.startswith("time/") and not k.endswith("_s")} for row in rows]


class Killed(Exception):
    pass


@pytest.mark.parametrize("method", ["scope", "sft+rl"])
def test_killed_run_resumes_to_the_same_metrics(tiny, tmp_path, monkeypatch, method):
    from scope_bench.engines.local import trainer

    # scope: priced, so the resumed run must carry the bill's running cost over (cost/usd)
    extra = ["train.sft_steps=2"] if method == "sft+rl" else ["refiner.price_in_usd_per_m=1.0"]
    full = train(load_train_config(method, overrides(tiny, tmp_path / "full", *extra)))

    # kill step 3 half-way (after sampling, before the update): steps 1-2 are checkpointed, 3 is lost
    real_update = trainer._update

    def dies_at_step_3(run, *args):
        path = run.run_dir / "metrics.jsonl"
        if path.exists() and len(path.read_text().splitlines()) == 2:
            raise Killed
        return real_update(run, *args)

    monkeypatch.setattr(trainer, "_update", dies_at_step_3)
    cut = tmp_path / "cut"
    with pytest.raises(Killed):
        train(load_train_config(method, overrides(tiny, cut, *extra)))
    monkeypatch.setattr(trainer, "_update", real_update)
    assert [m["step"] for m in comparable(cut)] == [1, 2]
    with open(cut / "metrics.jsonl", "a") as f:
        f.write('{"step": 3, "reward_m')  # a line the kill cut short

    train(load_train_config(method, overrides(tiny, cut, "resume=true", *extra)))
    assert comparable(cut) == comparable(full)
    from safetensors.torch import load_file

    w_full, w_cut = load_file(full / "final" / "model.safetensors"), load_file(cut / "final" / "model.safetensors")
    assert w_full.keys() == w_cut.keys() and all(torch.equal(w_full[k], w_cut[k]) for k in w_full)


def test_resume_refuses_a_changed_config(tiny, tmp_path):
    run_dir = train(load_train_config("grpo", overrides(tiny, tmp_path / "r", "train.steps=1")))
    with pytest.raises(ValueError, match="rollout.n"):
        train(load_train_config("grpo", overrides(tiny, run_dir, "train.steps=2", "resume=true", "rollout.n=2")))
    run_dir = train(load_train_config("grpo", overrides(tiny, run_dir, "train.steps=2", "resume=true")))
    assert [json.loads(x)["step"] for x in (run_dir / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def test_resume_refuses_another_starting_checkpoint(tmp_path):
    from scope_bench.engines.local.trainer import _check_start

    _check_start(tmp_path, "/models/warm-a")
    _check_start(tmp_path, "/models/warm-a")  # same start: fine
    with pytest.raises(ValueError, match="started from /models/warm-a"):
        _check_start(tmp_path, "/models/warm-b")
