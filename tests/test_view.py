"""`scope-bench view` end to end: a SCOPE run of the local engine (`scope-bench train`, the cached warm
start), the rollout record of the verl engine (the real `ScopeRayPPOTrainer` stage and dump, with the
fake worker group of test_verl_trainer.py: a whole verl fit costs 1.5 min), two `scope-bench eval`
runs on one page, a grader-audit run on another, each opened in Debian's headless chromium: no console error,
the filters change what is shown, screenshots saved (also to .notes/ when it exists, for a person)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parents[1]
_SCRIPT = Path(sys.executable).with_name("scope-bench")
CLI = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "scope_bench.cli"]
# a closed network: without these chromium keeps dialling out and logs refused connections
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
NOTES = ROOT / ".notes"


def cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen([*CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "TQDM_DISABLE": "1"})


def finish(proc: subprocess.Popen, timeout: int = 300) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(proc.args)} exited {proc.returncode}:\n{out[-4000:]}"
    return out


def page_data(path: Path) -> dict:
    blob = re.search(r'<script type="application/json" id="data">(.*?)</script>', path.read_text(), re.DOTALL)
    return json.loads(blob.group(1).replace("<\\/", "</"))


def eval_args(ckpt, out: Path, data: Path, label: str) -> list[str]:
    return ["eval", "--ckpt", str(ckpt), "--tasks", "synthetic", "--data", f"synthetic={data}", "--n", "2",
            "--temperature", "1", "--max-tokens", "48", "--device", "cpu", "--grading-workers", "1",
            "--out", str(out), "--label", label]


def verl_run(run_dir: Path) -> Path:
    """A verl-engine run dir: the real trainer's stage on a real DataProto (test_verl_stage's batch: one
    gated group with three failures), then verl's GRPO advantages and the trainer's rollout dump."""
    from omegaconf import OmegaConf
    from test_verl_stage import AnswerRefiner, StepPRM, byte_tokenizer, make_batch, verify
    from test_verl_trainer import FakeActorGroup
    from verl.trainer.ppo.core_algos import compute_grpo_outcome_advantage
    from verl.trainer.ppo.ray_trainer import RayPPOTrainer

    from scope_bench.engines.verl import trainer as trainer_module
    from scope_bench.engines.verl.config import compose_config

    os.environ.setdefault("SCOPE_REFINER_API_KEY", "unused")
    cfg = compose_config("scope", ["prm.kind=vllm", "prm.url=http://prm:1", "refiner.kind=openai",
                                   "refiner.url=http://t/v1", "refiner.model=r1"], run_dir=run_dir)
    OmegaConf.resolve(cfg)
    group, init = FakeActorGroup(), RayPPOTrainer.init_workers
    RayPPOTrainer.init_workers = lambda self: setattr(self, "actor_rollout_wg", group)
    try:
        t = trainer_module.ScopeRayPPOTrainer.__new__(trainer_module.ScopeRayPPOTrainer)
        t.config, t.tokenizer, t.global_steps = cfg, byte_tokenizer(), 1
        t.init_workers()
    finally:
        RayPPOTrainer.init_workers = init
    t.method_stage.prm, t.method_stage.refiner, t.method_stage.verify = StepPRM(), AnswerRefiner(), verify
    batch = make_batch(t.tokenizer)
    old_log_prob, _ = t._compute_old_log_prob(batch)
    batch = batch.union(old_log_prob)
    batch.batch["token_level_scores"] = batch.batch["token_level_rewards"] = batch.batch["rm_scores"]
    batch.batch["advantages"], _ = compute_grpo_outcome_advantage(
        batch.batch["token_level_rewards"], batch.batch["response_mask"], np.array(batch.non_tensor_batch["uid"]))
    t._update_actor(batch)
    t._log_rollout_data(batch, {}, {}, cfg.trainer.rollout_data_dir)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    return run_dir


def audit_run(template: Path, out: Path) -> Path:
    """An eval run whose samples are the grading conformance cases where the project's grader and plain
    Math-Verify disagree, graded by the project's grader as `scope-bench eval` grades."""
    from scope_bench.grading import grade_math_batch

    cases = [c for c in yaml.safe_load((ROOT / "tests" / "data" / "grading_conformance.yaml").read_text())
             if c.get("kind") != "choice" and "math_verify" in c and c["math_verify"] != c["expected"]
             and not c.get("policy")][:6]
    assert len(cases) >= 2
    grades = grade_math_batch([c["response"] for c in cases], [str(c["gold"]) for c in cases], workers=1)
    shutil.copytree(template, out)
    summary = json.loads((out / "summary.json").read_text())
    summary["label"] = "audit"
    (out / "summary.json").write_text(json.dumps(summary))
    rows = [{"checkpoint": summary.get("checkpoint"), "task": "synthetic", "problem_id": f"case{i}", "sample": 0,
             "response": c["response"], "prediction": g.prediction, "ground_truth": str(c["gold"]),
             "correct": int(g.correct), "n_tokens": 1, "finish_reason": "stop"} for i, (c, g) in enumerate(zip(cases, grades))]
    (out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out, [bool(g.correct) for g in grades], cases


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is missing: `make setup-test` installs it (the dev extra)")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make setup-test` installs Debian's chromium")
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=CHROMIUM, args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 1500})
        yield context
        context.close()


def open_page(browser, path: Path):
    errors: list[str] = []
    page = browser.new_page()
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: errors.append(f"network request {r.url}") if not r.url.startswith(("file:", "data:"))
            else None)
    page.goto(path.as_uri())
    return page, errors


def shown(page, selector: str) -> int:
    return page.locator(selector).evaluate_all("els => els.filter(e => e.offsetParent !== null).length")


def save(page, locator, tmp_path: Path, name: str) -> Path:
    shot = tmp_path / f"view_{name}.png"
    (page if locator is None else locator).screenshot(path=str(shot))
    if NOTES.is_dir():
        shutil.copy(shot, NOTES / shot.name)
    return shot


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """The four runs, made at once: the local training and the first eval as processes while the verl
    record is made in this one, then the eval of the trained checkpoint."""
    from scope_bench.synthetic.model import warm_start_model
    from scope_bench.synthetic.task import generate_split

    tmp_path = tmp_path_factory.mktemp("runs")
    warm = warm_start_model()
    data = tmp_path / "synthetic.jsonl"
    data.write_text("".join(json.dumps({"id": f"p{i}", "question": p["question"], "answer": p["answer"]}) + "\n"
                            for i, p in enumerate(generate_split("val", 8, 0))))
    local = tmp_path / "scope-local"
    train = cli("train", "--method", "scope", "--device", "cpu", "--run-dir", str(local), "--steps", "2", "threads=1",
                "train.batch_size=4", "rollout.n=4", "rollout.max_new_tokens=64", "data.n_train=16", "eval.every=0",
                "data.difficulties=[medium,hard]", "checkpoint.keep_last=1")
    first = cli(*eval_args(warm, tmp_path / "eval-warm", data, "warm-start"))
    torch.set_num_threads(1)
    verl_run(tmp_path / "scope-verl")  # in this process while the two above run
    finish(train)
    second = cli(*eval_args(local / "final", tmp_path / "eval-scope", data, "scope-2-steps"))
    finish(first)
    finish(second)
    return tmp_path


def test_view_of_training_and_eval_runs(runs, tmp_path, browser):
    local, verl = runs / "scope-local", runs / "scope-verl"
    # the local engine's record: every rollout of both steps, SCOPE's decisions on each group
    rows = [json.loads(line) for step in (1, 2) for line in (local / "rollouts" / f"{step}.jsonl").open()]
    assert len(rows) == 2 * 4 * 4
    metrics = [json.loads(line) for line in (local / "metrics.jsonl").open()]
    rectified = [r for r in rows if r["offpolicy_tokens"] > 0]
    assert len(rectified) == sum(m["groups_rectified"] for m in metrics) > 0
    for r in rectified:  # trained = kept prefix + refiner suffix; the record says why this one was chosen
        assert r["output"] == r["prefix"] + r["suffix"] and r["sampled"].startswith(r["prefix"])
        assert r["score"] == 1.0 and r["reward_sampled"] == 0.0 and r["group"]["selected"] == r["index"]
        best = max(r["group"]["candidates"], key=lambda c: c["score"])
        assert best["index"] == r["index"] and len(r["prm"]) == len(r["steps"])
        assert best["score"] == pytest.approx(best["w_step"] * best["w_tok"] * (best["rho_step"] + best["rho_tok"]))
    # the verl engine's record has the same fields
    verl_rows = [json.loads(line) for line in (verl / "rollouts" / "1.jsonl").open()]
    assert set(rows[0]) <= set(verl_rows[0])
    (fixed,) = [r for r in verl_rows if r["offpolicy_tokens"] > 0]
    assert fixed["group"]["status"] == "rectified" and fixed["group"]["selected"] == fixed["index"]
    assert fixed["prm"] == [0.1 if "wrong" in step else 0.9 for step in fixed["steps"]]  # the test PRM's rule

    out = tmp_path / "view.html"
    log = finish(cli("view", str(local), str(verl), str(runs / "eval-warm"), str(runs / "eval-scope"),
                     "--out", str(out)))
    assert "2 training run(s), 2 eval run(s)" in log
    page_json = page_data(out)
    (diff,) = page_json["comparison"]["diffs"]
    assert diff["n_problems"] == 8 and diff["low"] <= diff["estimate"] <= diff["high"]

    page, errors = open_page(browser, out)
    first_run = page.locator("section[data-kind=train]").first
    groups = first_run.locator(".group")
    before = shown(page, "#run0 .group")
    first_run.locator("button[data-filter=rectified]").click()
    after = shown(page, "#run0 .group")
    n_rect = sum(g["rectified"] for s in page_json["runs"][0]["steps"] for g in s["groups"]
                 if str(s["step"]) == first_run.locator("select").input_value())
    assert after == n_rect and 0 < after < before == groups.count()
    assert first_run.locator(".group:visible .suffix").count() >= after  # every rectified group marks its suffix
    assert first_run.locator(".group:visible tr.winner").count() == after
    save(page, first_run.locator(".group:visible").first, tmp_path, "train_rectified")
    first_run.locator("button[data-filter=all]").click()
    save(page, None, tmp_path, "train_top")
    verl_sec = page.locator("#run1")
    assert verl_sec.locator(".group.rectified .prefix").count() == 1 and "verl engine" in verl_sec.inner_text()
    save(page, verl_sec.locator(".group.rectified"), tmp_path, "verl_rectified")

    evals = page.locator("#eval")
    differ = shown(page, "#eval .problem")
    evals.locator("button[data-filter=all]").click()
    assert shown(page, "#eval .problem") == 8 >= differ
    assert "95% interval" in evals.inner_text()
    save(page, evals, tmp_path, "eval")
    assert errors == []


def test_grader_audit_lists_the_disagreements(runs, tmp_path, browser):
    """The audit section lists each sample where the stored grade and plain Math-Verify disagree, both
    verdicts shown; a filter keeps one direction."""
    run, project, cases = audit_run(runs / "eval-warm", tmp_path / "audit")
    out = tmp_path / "audit.html"
    finish(cli("view", str(run), "--out", str(out)))
    audit = page_data(out)["audit"]
    assert [a["problem_id"] for a in audit] == [f"case{i}" for i in range(len(cases))]
    assert [a["project"] for a in audit] == project and [a["math_verify"] for a in audit] == [not p for p in project]

    page, errors = open_page(browser, out)
    assert shown(page, "#audit tbody tr") == len(cases)
    page.locator("#audit button[data-filter=p]").click()
    assert shown(page, "#audit tbody tr") == sum(project)
    save(page, page.locator("#audit"), tmp_path, "audit")
    assert errors == []


def test_rollout_record_is_capped(tmp_path):
    """`metrics.max_rollout_rows` bounds the rows of a whole run; a resumed step replaces its own file."""
    from scope_bench.engines.rollouts import read_rollouts, write_rollouts

    def rows(step):
        return [{"step": step, "uid": "0", "output": f"r{i}", "score": 0.0} for i in range(5)]

    assert [write_rollouts(tmp_path, s, rows(s), 8) for s in (1, 2, 3)] == [5, 3, 0]
    assert write_rollouts(tmp_path, 2, rows(2), 8) == 3  # step 2 again (a resumed run): its 3 rows, not 0
    assert [r["step"] for r in read_rollouts(tmp_path)] == [1] * 5 + [2] * 3
    assert write_rollouts(tmp_path / "off", 1, rows(1), 0) == 0 and not (tmp_path / "off").exists()
