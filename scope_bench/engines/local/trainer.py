"""A single-process PyTorch trainer over the method core (CPU, or one GPU when present).

One RL step, top to bottom (`rl_step`): sample `n` rollouts per prompt, reward them (eq. 7), run the
method's stage (SCOPE rectification, or PRM-shaped rewards), recompute old log-probs on the batch as
it will be trained (rectified suffixes were not sampled by the policy, so sampling log-probs would be
wrong for them), group advantages after the stage, and update with the method's loss (eq. 6).
SFT steps (`sft`, the first part of `sft+rl`) train on refiner solutions instead.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from scope_bench.core import (
    LossConfig,
    RefineRequest,
    Rollout,
    ScopeConfig,
    grpo_advantages,
    hybrid_loss,
    sft_loss,
)
from scope_bench.core.advantages import process_advantages
from scope_bench.core.config import from_dict
from scope_bench.core.rectify import recording_outcomes
from scope_bench.engines.bill import Bill, token_counter
from scope_bench.engines.components import build_prm, build_refiner
from scope_bench.engines.local import checkpoint as ckpt
from scope_bench.engines.local.config import to_yaml
from scope_bench.engines.local.data import batch_indices, load_rows
from scope_bench.engines.local.policy import (
    encode_prompts,
    generate,
    load_policy,
    pack,
    resolve_device,
    response_logprobs,
)
from scope_bench.engines.methods import default_run_dir, needs_prm, needs_refiner
from scope_bench.engines.rollouts import ROLLOUT_DIR, local_rows, write_rollouts
from scope_bench.engines.stage import Timer, apply_stage, blank_metrics, tokenize_with_eos
from scope_bench.prompts import prompt_text

# keys that may change when a run is resumed (they do not change what is trained)
RESUMABLE_CHANGES = ("resume", "train.steps", "device", "threads", "eval", "checkpoint", "metrics.tensorboard")

# `old` of `_update` when pi_old is the policy before the update (one optimizer step per batch)
CURRENT_POLICY = object()


@dataclass
class Run:
    """Everything a step needs."""

    cfg: DictConfig
    run_dir: Path
    device: torch.device
    model: object
    tokenizer: object
    optimizer: torch.optim.Optimizer
    prm: object
    refiner: object
    train_rows: list[dict]
    val_rows: list[dict]
    scope_cfg: ScopeConfig
    loss_cfg: LossConfig
    bill: Bill  # the refiner's and the PRM's tokens, latency, cost and budget (engines/bill.py)


# ----------------------------------------------------------------------------------------- entry


def train(cfg: DictConfig, *, on_step=None) -> Path:
    """Train `cfg` (from `load_train_config`); returns the run directory. `on_step(step, metrics)` is
    called after each step is logged and checkpointed."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    run = setup(cfg)
    start = _restore(run) + 1 if cfg.resume else 1
    metrics_path = run.run_dir / "metrics.jsonl"
    tb = _tensorboard(run) if cfg.metrics.tensorboard else None
    from tqdm import tqdm

    bar = tqdm(range(start, cfg.train.steps + 1), initial=start - 1, total=cfg.train.steps,
               desc=f"train {cfg.method}", dynamic_ncols=True)
    for step in bar:
        rows = [run.train_rows[i] for i in batch_indices(len(run.train_rows), cfg.train.batch_size, step, cfg.seed)]
        t0 = time.perf_counter()
        metrics = sft_step(run, step, rows) if step <= cfg.train.sft_steps else rl_step(run, step, rows)
        metrics.update(run.bill.close_step(step, metrics, step_s=time.perf_counter() - t0,
                                           stage_s=metrics.get("time/stage") or metrics.get("time/refiner") or 0.0))
        if run.val_rows and cfg.eval.every and (step % cfg.eval.every == 0 or step == cfg.train.steps):
            t0 = time.perf_counter()
            metrics["val_accuracy"] = validate(run)
            metrics["time/validate"] = time.perf_counter() - t0
        with open(metrics_path, "a") as f:
            f.write(json.dumps(metrics) + "\n")
        if tb:
            for k, v in metrics.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    tb.add_scalar(k, v, step)
        if cfg.checkpoint.every and (step % cfg.checkpoint.every == 0 or step == cfg.train.steps):
            ckpt.save_checkpoint(run.run_dir, step, run.model, run.tokenizer, run.optimizer, cfg.checkpoint.keep_last)
        run.bill.write_summary(run.run_dir)
        bar.set_postfix({**_postfix(metrics), **run.bill.progress()})
        if on_step:
            on_step(step, metrics)
    if note := run.bill.budget_note(cfg.train.steps):
        bar.write(f"{note} (totals in {run.run_dir / 'bill.json'})")
    ckpt.save_pretrained(run.model, run.tokenizer, run.run_dir / "final")
    if tb:
        tb.close()
    return run.run_dir


def setup(cfg: DictConfig) -> Run:
    """Data first (bad rows fail before any model loads), then policy, optimizer, PRM and refiner."""
    run_dir = Path(cfg.run_dir or default_run_dir(cfg.method, cfg.seed))
    _check_run_dir(cfg, run_dir)
    train_rows = load_rows(cfg.data.train, split=cfg.data.split, n=cfg.data.n_train, seed=cfg.seed,
                           cfg_data=cfg.data, keep=_trace_columns(cfg))
    val_rows = [] if cfg.data.val is None else load_rows(
        cfg.data.val, split="val" if cfg.data.val == "synthetic" else cfg.data.val_split, n=cfg.data.n_val,
        seed=cfg.seed, cfg_data=cfg.data)
    device = resolve_device(cfg.device)
    latest = ckpt.latest_checkpoint(run_dir) if cfg.resume else None
    start = _model_path(cfg)
    _check_start(run_dir, start)
    model, tokenizer = load_policy(latest or start, device, cfg.model.dtype)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr, betas=tuple(cfg.train.betas),
                                  weight_decay=cfg.train.weight_decay)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(to_yaml(cfg))
    bill = Bill.from_config(cfg.refiner, cfg.prm, token_counter(tokenizer))
    return Run(cfg, run_dir, device, model, tokenizer, optimizer,
               bill.meter_prm(build_prm(cfg.prm, device=str(device), seed=cfg.seed) if needs_prm(cfg) else None),
               bill.meter_refiner(build_refiner(cfg.refiner, seed=cfg.seed) if needs_refiner(cfg) else None),
               train_rows, val_rows,
               from_dict(ScopeConfig, OmegaConf.to_container(cfg.scope), "scope"),
               from_dict(LossConfig, OmegaConf.to_container(cfg.loss), "loss"), bill)


# ------------------------------------------------------------------------------------------ steps


def rl_step(run: Run, step: int, rows: list[dict]) -> dict:
    """One RL step of any method; the stage is the only difference between methods."""
    cfg, tok, n = run.cfg, run.tokenizer, run.cfg.rollout.n
    timer = Timer()
    questions = [r["question"] for r in rows]
    prompt_ids = encode_prompts(tok, [prompt_text(tok, q) for q in questions], cfg.rollout.max_prompt_tokens)

    # 1. sample n rollouts per prompt (seeded by step: a resumed run samples the same)
    with timer("generate"):
        samples = generate(run.model, tok, prompt_ids, n=n, max_new_tokens=cfg.rollout.max_new_tokens,
                           temperature=cfg.rollout.temperature, top_p=cfg.rollout.top_p,
                           chunk_size=cfg.rollout.chunk_size, seed=cfg.seed * 1_000_003 + step)
    # 2. verifiable reward (eq. 7)
    with timer("reward"):
        outcome = _rewards([s.text for g in samples for s in g], [r["answer"] for r in rows for _ in range(n)])
    groups = [[Rollout(rows[g]["question"], rows[g]["answer"], s.text, s.token_ids, s.offsets, outcome[g * n + i])
               for i, s in enumerate(group)] for g, group in enumerate(samples)]

    # 3. the method's stage: what is trained may differ from what was sampled; 4. near-miss@k of the
    # sampled failures (PRM-scored for every method, so methods compare)
    with recording_outcomes() as recorded:  # what SCOPE did to each group, for the rollout record
        stage = apply_stage(
            cfg.stage, groups, prm=run.prm, refiner=run.refiner, tokenize=lambda text: tokenize_with_eos(tok, text),
            verify=_verify, scope_config=run.scope_cfg, prm_reward=dict(cfg.prm_reward),
            near_miss=cfg.metrics.near_miss, timer=timer,
            traces=[r.get(cfg.luffy.trace_key) for r in rows] if _trace_columns(cfg) else None,
            stage_module=cfg.stage_module, refiner_spent=run.bill.exhausted)
    responses = [r.token_ids for group in groups for r in group]
    offpolicy = [[0] * len(ids) for ids in responses]
    for j, fix in stage.rectifications.items():
        responses[j], offpolicy[j] = fix.token_ids, fix.offpolicy_mask
    rewards = stage.rewards

    # 5. old log-probs on the batch as trained, then group advantages after the stage. With one
    #    optimizer step per batch (ppo_epochs 1), pi_old is the policy as it stands: the update's own
    #    forward pass gives them (detached), and the separate pass is skipped
    flat_prompts = [ids for ids in prompt_ids for _ in range(n)]
    chunks = _chunks(len(responses), cfg.train.micro_batch_size)
    old, entropy = CURRENT_POLICY, None
    if cfg.train.ppo_epochs > 1:
        with timer("old_logprobs"):
            old, entropy = _old_logprobs(run, flat_prompts, responses, offpolicy, chunks)
    group_ids = [j // n for j in range(len(rewards))]
    if stage.step_rewards:  # dense PRM reward: one advantage per token
        advantages = process_advantages(rewards, stage.step_rewards, group_ids, [len(r) for r in responses],
                                        eps=run.loss_cfg.adv_eps)
    else:
        advantages = torch.as_tensor(grpo_advantages(rewards, group_ids, eps=run.loss_cfg.adv_eps))
    # 6. update with the method's loss (eq. 6; all-zero off-policy mask = GRPO)
    with timer("update"):
        loss, update_entropy = _update(run, flat_prompts, responses, offpolicy, old, advantages, chunks,
                                       _lr(cfg, step))
    entropy = update_entropy if entropy is None else entropy
    write_rollouts(run.run_dir / ROLLOUT_DIR, step, local_rows(
        step, [prompt_text(tok, q) for q in questions], groups, rewards, advantages, stage.rectifications, recorded),
        cfg.metrics.max_rollout_rows)

    return {
        "step": step, "method": cfg.method, "seed": cfg.seed, "phase": "rl", "entropy": entropy,
        **stage.metrics,
        "loss": loss, "lr": _lr(cfg, step),
        **{f"time/{k}": v for k, v in timer.items()},
    }


def sft_step(run: Run, step: int, rows: list[dict]) -> dict:
    """SFT on refiner solutions of this step's prompts (a wrong or failed solution is dropped)."""
    cfg, tok = run.cfg, run.tokenizer
    timer = Timer()
    spent = run.bill.exhausted  # the refiner's budget is spent: nothing to train on
    with timer("refiner"):
        results = [] if spent else run.refiner.refine([RefineRequest(r["question"], "", r["answer"]) for r in rows])
    keep = [(row, res.suffix) for row, res in zip(rows, results) if res.ok and _verify(res.suffix, row["answer"])]
    loss, responses = None, [tokenize_with_eos(tok, text.strip()) for _, text in keep]
    if keep:
        prompt_ids = encode_prompts(tok, [prompt_text(tok, row["question"]) for row, _ in keep],
                                    cfg.rollout.max_prompt_tokens)
        with timer("update"):
            loss, _ = _update(run, prompt_ids, responses, None, None, None,
                           _chunks(len(responses), cfg.train.micro_batch_size), _lr(cfg, step))
    return {
        "step": step, "method": cfg.method, "seed": cfg.seed, "phase": "sft", "entropy": None,
        **blank_metrics(len(rows)),
        "response_length": sum(map(len, responses)) / len(responses) if responses else None,
        "refiner_failures": len(results) - len(keep), "budget/skipped_groups": len(rows) if spent else 0,
        "loss": loss, "lr": _lr(cfg, step), **{f"time/{k}": v for k, v in timer.items()},
    }


@torch.no_grad()
def validate(run: Run) -> float:
    """Greedy accuracy on the held-out split."""
    cfg, tok = run.cfg, run.tokenizer
    prompt_ids = encode_prompts(tok, [prompt_text(tok, r["question"]) for r in run.val_rows],
                                cfg.rollout.max_prompt_tokens)
    samples = generate(run.model, tok, prompt_ids, n=1, max_new_tokens=cfg.eval.max_new_tokens, greedy=True,
                       chunk_size=cfg.eval.batch_size)
    rewards = _rewards([g[0].text for g in samples], [r["answer"] for r in run.val_rows])
    return sum(rewards) / len(rewards)


# ---------------------------------------------------------------------------------------- helpers


def _chunks(n: int, size: int) -> list[range]:
    return [range(i, min(i + size, n)) for i in range(0, n, size)]


@torch.no_grad()
def _old_logprobs(run: Run, prompts, responses, offpolicy, chunks):
    """pi_old per chunk, and the policy's mean entropy over its own (on-policy) tokens."""
    old, ent_sum, ent_n = [], 0.0, 0.0
    for idx in chunks:
        batch = pack([prompts[i] for i in idx], [responses[i] for i in idx], run.tokenizer.pad_token_id, run.device)
        logp, entropy = response_logprobs(run.model, batch, with_entropy=True,
                                          temperature=run.cfg.rollout.temperature)
        old.append(logp)
        onpolicy = batch["response_mask"] * (1 - _mask([offpolicy[i] for i in idx], logp.shape, run.device))
        ent_sum += float((entropy * onpolicy).sum())
        ent_n += float(onpolicy.sum())
    return old, ent_sum / max(ent_n, 1.0)


def _update(run: Run, prompts, responses, offpolicy, old, advantages, chunks, lr: float):
    """`ppo_epochs` optimizer steps over the batch; the loss is a token-mean over the whole batch,
    accumulated over micro-batches. `old is None` means SFT; `old is CURRENT_POLICY` means pi_old is
    the policy before this (single) optimizer step, i.e. this forward pass, detached. Returns the
    mean loss and, for CURRENT_POLICY, the policy's entropy over its own tokens (else None)."""
    cfg = run.cfg
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    total_tokens = sum(len(r) for r in responses)
    losses, ent_sum, ent_n = [], 0.0, 0.0
    for _ in range(cfg.train.ppo_epochs):
        run.optimizer.zero_grad(set_to_none=True)
        epoch_loss = 0.0
        for c, idx in enumerate(chunks):
            batch = pack([prompts[i] for i in idx], [responses[i] for i in idx], run.tokenizer.pad_token_id,
                         run.device)
            # RL scores the sampling distribution (logits / temperature); SFT trains the model's own
            logp, entropy = response_logprobs(run.model, batch, with_entropy=old is CURRENT_POLICY,
                                              temperature=1.0 if old is None else cfg.rollout.temperature)
            rmask = batch["response_mask"]
            if old is None:
                loss = sft_loss(logp, rmask)
            else:
                mask = _mask([offpolicy[i] for i in idx], logp.shape, run.device)
                reference = logp.detach() if old is CURRENT_POLICY else old[c]
                loss = hybrid_loss(logp, reference, _chunk_advantages(advantages, idx, logp), mask, rmask,
                                   **run.loss_cfg.objective_kwargs())
                if entropy is not None:
                    onpolicy = rmask * (1 - mask)
                    ent_sum += float((entropy.detach() * onpolicy).sum())
                    ent_n += float(onpolicy.sum())
            loss = loss * (rmask.sum() / total_tokens)  # chunk token-mean -> batch token-mean
            loss.backward()
            epoch_loss += loss.item()
        if cfg.train.grad_clip:
            torch.nn.utils.clip_grad_norm_(run.model.parameters(), cfg.train.grad_clip)
        run.optimizer.step()
        losses.append(epoch_loss)
    return sum(losses) / len(losses), (ent_sum / max(ent_n, 1.0) if old is CURRENT_POLICY else None)


def _lr(cfg, step: int) -> float:
    """SFT steps use train.sft_lr, RL steps train.lr; linear warmup over train.warmup_steps."""
    base = cfg.train.sft_lr if step <= cfg.train.sft_steps else cfg.train.lr
    return base * min(1.0, step / cfg.train.warmup_steps) if cfg.train.warmup_steps else base


def _chunk_advantages(advantages, idx, logp) -> torch.Tensor:
    """The chunk's advantages: one per rollout (a tensor), or one per token (lists, right-padded)."""
    if isinstance(advantages, torch.Tensor):
        return advantages[list(idx)].to(logp.device)
    return _mask([advantages[i] for i in idx], logp.shape, logp.device)


def _trace_columns(cfg) -> tuple[str, ...]:
    """Columns of the training data the method reads besides question and answer."""
    return (cfg.luffy.trace_key,) if cfg.stage == "luffy" and cfg.luffy.source == "data" else ()


def _mask(rows: list[list[int]], shape, device) -> torch.Tensor:
    out = torch.zeros(shape, device=device)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row, dtype=out.dtype)
    return out


def _rewards(texts: list[str], answers: list[str]) -> list[float]:
    from scope_bench.grading import math_rewards

    return [float(x) for x in math_rewards(texts, answers)]


def _verify(text: str, answer: str) -> float:
    from scope_bench.grading import math_reward

    return float(math_reward(text, answer))


def _postfix(metrics: dict) -> dict:
    out = {}
    for key, label in (("reward_mean", "reward"), ("accuracy", "acc"), ("val_accuracy", "val")):
        if metrics.get(key) is not None:
            out[label] = f"{metrics[key]:.3f}" if isinstance(metrics[key], float) else metrics[key]
    return out


def _model_path(cfg) -> str:
    if cfg.model.path:
        return cfg.model.path
    from scope_bench.synthetic.model import tiny_model, warm_start_for

    if cfg.model.warm_start_steps:
        return str(warm_start_for(cfg.model, threads=cfg.threads or None))
    return str(tiny_model())


def _check_start(run_dir: Path, start: str) -> None:
    """A resumed run must continue from the checkpoint it started from: a rebuilt warm start (same
    config, new cache entry) is another model, and mixing them would go unnoticed in the metrics."""
    record = run_dir / "initial_model.txt"
    if record.exists() and record.read_text().strip() != start:
        raise ValueError(f"cannot resume {run_dir}: it started from {record.read_text().strip()}, "
                         f"the config now starts from {start}; use another run_dir")
    run_dir.mkdir(parents=True, exist_ok=True)
    record.write_text(start + "\n")


def _check_run_dir(cfg, run_dir: Path) -> None:
    """A fresh run never overwrites an old one; a resumed one must train the same thing."""
    saved = run_dir / "config.yaml"
    if not cfg.resume:
        if (run_dir / "metrics.jsonl").exists() or ckpt.list_checkpoints(run_dir):
            raise ValueError(f"run dir {run_dir} already holds a run; pass --resume to continue it, "
                             f"or choose another run_dir")
        return
    if not saved.exists():
        return
    old = OmegaConf.load(saved)
    changed = [k for k in _diff(OmegaConf.to_container(old), OmegaConf.to_container(cfg))
               if not any(k == a or k.startswith(a + ".") for a in RESUMABLE_CHANGES)]
    if changed:
        raise ValueError(f"cannot resume {run_dir}: config differs from {saved} in {', '.join(changed)}")


def _diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _diff(va, vb, f"{prefix}{key}.")
        elif va != vb:
            out.append(f"{prefix}{key}")
    return out


def _restore(run: Run) -> int:
    """Optimizer and RNG state of the checkpoint `setup` loaded the weights from; returns its step
    (0 when there is none, and the run starts over)."""
    latest = ckpt.latest_checkpoint(run.run_dir)
    if latest is None:
        ckpt.truncate_metrics(run.run_dir / "metrics.jsonl", 0)
        return 0
    state = ckpt.load_trainer_state(latest)
    run.optimizer.load_state_dict(state["optimizer"])
    ckpt.set_rng_state(state["rng"])
    ckpt.truncate_metrics(run.run_dir / "metrics.jsonl", state["step"])
    from scope_bench.analysis.dynamics import read_metrics

    run.bill.restore(read_metrics(run.run_dir / "metrics.jsonl"))  # a spent budget stays spent
    return state["step"]


def _tensorboard(run: Run):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as err:
        raise ValueError("metrics.tensorboard=true needs the tensorboard package "
                         "(pip install 'scope-bench[tensorboard]')") from err
    return SummaryWriter(str(run.run_dir / "tb"))
