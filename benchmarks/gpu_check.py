"""GPU check: the local trainer and HF evaluation on CUDA, CPU parity of one float32 step, bf16 speed.

    python benchmarks/gpu_check.py                  # on the GPU host, from the source tree (< 3 min)
    python benchmarks/gpu_check.py --device cpu     # the same code on CPU (what the test suite runs)
    python benchmarks/gpu_check.py --model /models/Qwen2.5-Math-1.5B   # parity and bf16 on a real model

What it does, in order (each part reports, a failing part does not stop the others):
1. trainer: `scope-bench train --method scope` for a couple of steps on the synthetic tiny model, on
   the device (the real local trainer: sampling, PRM, refiner, the hybrid loss, a checkpoint);
2. eval: the HF evaluation backend samples a few synthetic problems on the device;
3. parity: one float32 loss-and-gradient step (the trainer's packing, log-probs and eq. 6 loss on a
   fixed batch with rectified suffixes and clipped ratios) on the device and on CPU; loss and gradient
   norm must agree within tolerance (TF32 off). Without CUDA it compares CPU with CPU, so the code runs;
4. bf16: a few optimizer steps of that batch in bfloat16 on the device: step time, peak memory
   (`torch.cuda.max_memory_allocated`), finite losses.
The last stdout line is a JSON summary; exit status 1 if a part failed.

Needs torch, transformers and scope-bench's own light dependencies (omegaconf, numpy); no Ray, vLLM,
verl, datasets or network: the model is built offline (cached under SCOPE_BENCH_CACHE, default .cache/),
and the summary lists any of those that got imported.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from the source tree, installed or not

import torch

HEAVY = ("ray", "vllm", "verl", "datasets")
LOSS_TOL = {"rtol": 1e-4, "atol": 1e-5}  # float32, same weights and batch, TF32 off
GRAD_NORM_RTOL = 1e-3


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cuda, cuda:N or cpu")
    ap.add_argument("--model", help="local checkpoint for parity and bf16 (default: the synthetic tiny model)")
    ap.add_argument("--steps", type=int, default=2, help="trainer steps")
    ap.add_argument("--bf16-steps", type=int, default=5)
    ap.add_argument("--problems", type=int, default=4, help="synthetic problems per part")
    args = ap.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("CUDA is not available; use --device cpu", file=sys.stderr)
        return 2
    torch.set_float32_matmul_precision("highest")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    device = torch.device(args.device)

    from scope_bench.synthetic import tiny_model

    model_path = args.model or str(tiny_model())
    summary = {"device": str(device), "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
               "torch": torch.__version__, "model": model_path}
    parts = [("trainer", lambda: check_trainer(device, args.steps, args.problems)),
             ("eval", lambda: check_eval(device, model_path, args.problems)),
             ("parity", lambda: check_parity(device, model_path, args.problems)),
             ("bf16", lambda: check_bf16(device, model_path, args.problems, args.bf16_steps))]
    for name, run in parts:
        start = time.perf_counter()
        try:
            summary[name] = run()
        except Exception as err:  # noqa: BLE001 - report and go on to the next part
            traceback.print_exc()
            summary[name] = {"ok": False, "error": f"{type(err).__name__}: {err}"}
        summary[name]["seconds"] = round(time.perf_counter() - start, 2)
        print(f"{name}: {'ok' if summary[name]['ok'] else 'FAILED'} {summary[name]}", file=sys.stderr, flush=True)
    summary["heavy_imports"] = sorted(m for m in HEAVY if m in sys.modules)
    summary["ok"] = all(summary[name]["ok"] for name, _ in parts) and not summary["heavy_imports"]
    print(json.dumps(summary))
    return 0 if summary["ok"] else 1


def check_trainer(device, steps: int, problems: int) -> dict:
    """The local trainer's `scope` method end to end on the device, from the random-init tiny model."""
    from scope_bench.engines.local import load_train_config, train

    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_train_config("scope", [
            f"device={device}", f"train.steps={steps}", f"train.batch_size={problems}", "rollout.n=4",
            "rollout.max_new_tokens=48", "model.warm_start_steps=0", f"data.n_train={4 * problems}", "data.val=null",
            "eval.every=0", f"run_dir={tmp}/run"])
        run_dir = train(cfg)
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        saved = (run_dir / "final" / "config.json").exists()
    losses = [r["loss"] for r in rows]
    return {"ok": len(rows) == steps and all(math.isfinite(x) for x in losses) and saved,
            "steps": len(rows), "loss": losses, "groups_gated": sum(r["groups_gated"] for r in rows),
            "seconds_per_step": [round(sum(v for k, v in r.items() if k.startswith("time/")), 3) for r in rows]}


def check_eval(device, model_path: str, problems: int) -> dict:
    """The HF evaluation backend (seeded per-sample decoding, KV cache) on synthetic prompts."""
    from scope_bench.eval.backends import GenerationRequest, HFBackend
    from scope_bench.eval.tasks import Sampling
    from scope_bench.prompts import chat_messages
    from scope_bench.synthetic import split_problems

    backend = HFBackend(model_path, device=str(device), batch_size=8)
    sampling = Sampling(temperature=1.0, top_p=1.0, max_tokens=32, n=2)
    requests = [GenerationRequest(chat_messages(p.question), sampling, seed=i)
                for i, p in enumerate(split_problems("test", problems))]
    out = backend.generate(requests)
    tokens = [g.n_tokens for gens in out for g in gens]
    return {"ok": len(tokens) == 2 * problems and all(0 < t <= 32 for t in tokens), "dtype": str(backend.model.dtype),
            "samples": len(tokens), "tokens": sum(tokens)}


def fixed_batch(tokenizer, problems: int) -> dict:
    """A training batch that needs no sampling (so two devices train on the same tokens): per problem,
    the reference solution (reward 1) and two near misses (reward 0), one of them rectified (its second
    half off-policy, as a refiner suffix), with old log-probs offset so that some ratios clip."""
    from scope_bench.core import grpo_advantages
    from scope_bench.engines.local.policy import encode_prompts
    from scope_bench.engines.stage import tokenize_with_eos
    from scope_bench.prompts import prompt_text
    from scope_bench.synthetic import solution, split_problems

    prompts, responses, offpolicy, rewards = [], [], [], []
    for p in split_problems("train", problems, seed=5):
        right = solution(p)
        boxed = f"\\boxed{{{p.answer}}}"
        for text, reward, rectified in ((right, 1.0, False),
                                        (right.replace(boxed, f"\\boxed{{{int(p.answer) + 1}}}"), 0.0, False),
                                        (right.replace(boxed, f"\\boxed{{{int(p.answer) + 2}}}"), 0.0, True)):
            ids = tokenize_with_eos(tokenizer, text)
            half = len(ids) // 2
            prompts += encode_prompts(tokenizer, [prompt_text(tokenizer, p.question)], 512)
            responses.append(ids)
            offpolicy.append([0] * half + [1] * (len(ids) - half) if rectified else [0] * len(ids))
            rewards.append(reward)
    advantages = grpo_advantages(rewards, [i // 3 for i in range(len(rewards))])
    return {"prompts": prompts, "responses": responses, "offpolicy": offpolicy, "advantages": advantages}


def loss_and_grad_norm(model, tokenizer, spec: dict, device) -> tuple[torch.Tensor, torch.Tensor]:
    """The trainer's loss on `spec` (one micro-batch), backward, and the total gradient norm."""
    from scope_bench.core import hybrid_loss
    from scope_bench.engines.local.policy import pack, response_logprobs

    batch = pack(spec["prompts"], spec["responses"], tokenizer.pad_token_id, device)
    logp, _ = response_logprobs(model, batch)
    width = logp.shape[1]
    offsets = ((torch.arange(width, device=device) % 3) - 1).float() * 0.3  # ratios e^-0.3, 1, e^0.3
    old = logp.detach().float() + offsets
    mask = torch.tensor([row + [0] * (width - len(row)) for row in spec["offpolicy"]], device=device,
                        dtype=torch.float32)
    loss = hybrid_loss(logp.float(), old, torch.as_tensor(spec["advantages"], device=device, dtype=torch.float32),
                       mask, batch["response_mask"], clip_eps=0.2, lam=1.0, gamma=0.1)
    model.zero_grad(set_to_none=True)
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), float("inf"))
    return loss.detach(), norm.detach()


def _load(model_path: str, device, dtype):
    from scope_bench.engines.local.policy import load_policy

    model, tokenizer = load_policy(model_path, device, dtype)
    model.train()
    return model, tokenizer


def check_parity(device, model_path: str, problems: int) -> dict:
    """One float32 step on the device and on CPU, from the same weights and batch."""
    results = []
    for where in (device, torch.device("cpu")):
        model, tokenizer = _load(model_path, where, "float32")
        loss, norm = loss_and_grad_norm(model, tokenizer, fixed_batch(tokenizer, problems), where)
        results.append((loss.item(), norm.item()))
        del model
    (loss_dev, norm_dev), (loss_cpu, norm_cpu) = results
    loss_ok = math.isclose(loss_dev, loss_cpu, rel_tol=LOSS_TOL["rtol"], abs_tol=LOSS_TOL["atol"])
    norm_ok = math.isclose(norm_dev, norm_cpu, rel_tol=GRAD_NORM_RTOL)
    return {"ok": loss_ok and norm_ok and norm_cpu > 0, "compared": f"{device} vs cpu",
            "loss": [loss_dev, loss_cpu], "grad_norm": [norm_dev, norm_cpu],
            "loss_diff": abs(loss_dev - loss_cpu), "grad_norm_rel_diff": abs(norm_dev - norm_cpu) / max(norm_cpu, 1e-12)}


def check_bf16(device, model_path: str, problems: int, steps: int) -> dict:
    """`steps` AdamW steps in bfloat16 on the fixed batch: time per step and peak memory."""
    model, tokenizer = _load(model_path, device, "bfloat16")
    spec = fixed_batch(tokenizer, problems)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    losses, seconds = [], []
    for _ in range(steps):
        start = time.perf_counter()
        loss, _ = loss_and_grad_norm(model, tokenizer, spec, device)
        optimizer.step()
        if cuda:
            torch.cuda.synchronize(device)
        seconds.append(time.perf_counter() - start)
        losses.append(loss.item())
    return {"ok": all(math.isfinite(x) for x in losses), "dtype": str(model.dtype), "losses": losses,
            "step_seconds": sorted(seconds)[len(seconds) // 2] if seconds else None,
            "first_step_seconds": seconds[0] if seconds else None,
            "peak_memory_mb": round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if cuda else None,
            "sequences": len(spec["responses"])}


if __name__ == "__main__":
    sys.exit(main())
