"""Can plain RL learn in this world? The positive control's diagnostic, in minutes (issue 26).

For a world and a setting (trainer overrides, e.g. the demo's `WORLD`), starting from the checkpoint
the config names (the cached warm start), it prints:

1. the style mix of the start: share of sampled solutions written carefully (one operation per line)
   and each style's success rate; a world with a shared lever needs a gap here (count styles in
   samples: greedy decoding shows only the majority style);
2. the cross-batch GRPO gradient cosine: the gradient of GRPO's loss at the start on disjoint prompt
   batches; near 0 means each update is prompt-specific (a random walk on fresh prompts), a clear
   positive value means something shared to learn;
3. the paired slope: `--steps` of GRPO against a no-learning control (`train.lr=1e-9`, same seed, so
   the same prompts and sampling seeds), the sampled training accuracy's difference by thirds of the
   run with its standard error across steps, and the style mix and held-out sampled accuracy after.

    .venv/bin/python benchmarks/bench_world_diagnostic.py [--steps N] [--batches 4] [--no-train] [KEY=VALUE ...]
    .venv/bin/python benchmarks/bench_world_diagnostic.py --demo-world                         # the demo's
    .venv/bin/python benchmarks/bench_world_diagnostic.py --demo-world model.careless_rate=0   # its old world
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def style_of(text: str) -> str:
    """"careless" when any line applies two operations at once, else "careful"."""
    from scope_bench.core.steps import split_steps
    from scope_bench.synthetic.task import parse_step

    return "careless" if any((eq := parse_step(s)) and len(eq[1]) > 1 for s in split_steps(text)) else "careful"


def style_stats(model, tok, rows: list[dict], *, n: int, max_new_tokens: int, temperature: float, seed: int) -> dict:
    """Sampled style mix and per-style success on `rows` (n samples each)."""
    from scope_bench.engines.local.policy import encode_prompts, generate
    from scope_bench.engines.local.trainer import _rewards
    from scope_bench.prompts import prompt_text

    prompts = encode_prompts(tok, [prompt_text(tok, r["question"]) for r in rows], 512)
    groups = generate(model, tok, prompts, n=n, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed)
    texts = [s.text for g in groups for s in g]
    ok = _rewards(texts, [r["answer"] for r in rows for _ in range(n)])
    styles = [style_of(t) for t in texts]
    out = {"accuracy": sum(ok) / len(ok), "careful_share": styles.count("careful") / len(styles)}
    for name in ("careful", "careless"):
        hits = [o for o, s in zip(ok, styles) if s == name]
        out[f"{name}_success"] = sum(hits) / len(hits) if hits else float("nan")
    return out


def batch_gradient(run, rows: list[dict], seed: int):
    """The GRPO policy gradient (ratio 1, token-mean) of one batch at the current weights, flattened."""
    import torch

    from scope_bench.core import grpo_advantages
    from scope_bench.engines.local.policy import encode_prompts, generate, pack, response_logprobs
    from scope_bench.engines.local.trainer import _rewards
    from scope_bench.prompts import prompt_text

    cfg, tok, n = run.cfg, run.tokenizer, run.cfg.rollout.n
    prompts = encode_prompts(tok, [prompt_text(tok, r["question"]) for r in rows], cfg.rollout.max_prompt_tokens)
    groups = generate(run.model, tok, prompts, n=n, max_new_tokens=cfg.rollout.max_new_tokens,
                      temperature=cfg.rollout.temperature, seed=seed)
    samples = [s for g in groups for s in g]
    rewards = _rewards([s.text for s in samples], [r["answer"] for r in rows for _ in range(n)])
    adv = torch.as_tensor(grpo_advantages(rewards, [j // n for j in range(len(rewards))]))
    run.model.zero_grad(set_to_none=True)
    batch = pack([p for p in prompts for _ in range(n)], [s.token_ids for s in samples], tok.pad_token_id,
                 run.device)
    logp, _ = response_logprobs(run.model, batch, temperature=cfg.rollout.temperature)
    mask = batch["response_mask"]
    (-(adv[:, None] * logp * mask).sum() / mask.sum()).backward()
    return torch.cat([p.grad.flatten() for p in run.model.parameters() if p.grad is not None]).clone()


def cosines(grads) -> list[float]:
    import torch

    return [float(torch.nn.functional.cosine_similarity(a, b, dim=0))
            for i, a in enumerate(grads) for b in grads[i + 1:]]


def paired_slope(trained: list[float], control: list[float]) -> list[tuple[float, float]]:
    """Mean and standard error (across steps) of trained minus control accuracy, by thirds of the run."""
    diff = [a - b for a, b in zip(trained, control)]
    k = max(1, len(diff) // 3)
    parts = [diff[:k], diff[k:2 * k], diff[2 * k:]]
    return [(statistics.mean(p), statistics.stdev(p) / len(p) ** 0.5 if len(p) > 1 else float("nan"))
            for p in parts if p]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, help="GRPO steps of the paired run and its control (default train.steps)")
    parser.add_argument("--batches", type=int, default=4, help="disjoint prompt batches for the gradient cosine")
    parser.add_argument("--style-problems", type=int, default=64, help="held-out problems for the style mix")
    parser.add_argument("--demo-world", action="store_true",
                        help="prepend the demo's WORLD and its training budget (DEMO_OVERRIDES: steps, batch, lr)")
    parser.add_argument("--no-train", action="store_true", help="skip the paired run (style mix and cosine only)")
    parser.add_argument("overrides", nargs="*", help="trainer overrides (world and setting), e.g. train.lr=3e-5")
    args = parser.parse_args()

    import torch

    from scope_bench.engines.local import load_train_config, train
    from scope_bench.engines.local.data import load_rows
    from scope_bench.engines.local.policy import load_policy
    from scope_bench.engines.local.trainer import setup

    overrides = list(args.overrides)
    if args.demo_world:
        from scope_bench.demo import DEMO_OVERRIDES, WORLD

        overrides = [*WORLD, *[o for o in DEMO_OVERRIDES if o.startswith("train.")], *overrides]
    tmp = Path(tempfile.mkdtemp(prefix="world-diag-"))
    base = [*overrides, "eval.every=0", "checkpoint.every=0", "metrics.near_miss=false", "data.val=null"]
    cfg = load_train_config("grpo", [*base, f"run_dir={tmp / 'probe'}"])
    torch.set_num_threads(cfg.threads or torch.get_num_threads())
    t0 = time.perf_counter()
    print(f"world: {' '.join(overrides) or '(defaults)'}; batch {cfg.train.batch_size} x {cfg.rollout.n} rollouts, "
          f"lr {cfg.train.lr}, temperature {cfg.rollout.temperature}, threads {cfg.threads}")
    run = setup(cfg)
    held_out = load_rows("synthetic", split="val", n=args.style_problems, seed=0, cfg_data=cfg.data)
    sampling = {"n": 4, "max_new_tokens": cfg.rollout.max_new_tokens, "temperature": cfg.rollout.temperature,
                "seed": 12345}

    def show(label: str, stats: dict) -> None:
        print(f"  {label:<10} accuracy {stats['accuracy']:.3f}  careful share {stats['careful_share']:.2f}  "
              f"success careful {stats['careful_success']:.3f} / careless {stats['careless_success']:.3f}")

    print(f"1. style mix on {len(held_out)} held-out problems x 4 samples (difficulties {list(cfg.data.difficulties)})")
    show("start", style_stats(run.model, run.tokenizer, held_out, **sampling))

    b = cfg.train.batch_size
    rows = run.train_rows[: b * args.batches]
    if len(rows) < b * args.batches:
        raise SystemExit(f"data.n_train={len(run.train_rows)} is too small for {args.batches} batches of {b}")
    grads = [batch_gradient(run, rows[i * b:(i + 1) * b], seed=i) for i in range(args.batches)]
    cos = cosines(grads)
    same = cosines([grads[0], batch_gradient(run, rows[:b], seed=999)])
    print(f"2. GRPO gradient cosine, {len(cos)} pairs of disjoint {b}-prompt batches: mean {statistics.mean(cos):+.3f} "
          f"(min {min(cos):+.3f}, max {max(cos):+.3f}); same prompts resampled: {same[0]:+.3f}")
    del run
    if args.no_train:
        print(f"time: {time.perf_counter() - t0:.0f} s")
        return

    steps = args.steps or cfg.train.steps
    curves, finals = {}, {}
    for name, lr in (("grpo", cfg.train.lr), ("control", 1e-9)):
        run_cfg = load_train_config("grpo", [*base, f"train.lr={lr}", f"train.steps={steps}",
                                             f"run_dir={tmp / name}"])
        run_dir = train(run_cfg)
        import json

        curves[name] = [json.loads(line)["accuracy"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        model, tok = load_policy(run_dir / "final", torch.device("cpu"))
        finals[name] = style_stats(model, tok, held_out, **sampling)
    thirds = paired_slope(curves["grpo"], curves["control"])
    print(f"3. paired slope, {steps} steps, sampled training accuracy GRPO - control by thirds: "
          + " / ".join(f"{m:+.3f} (se {s:.3f})" for m, s in thirds))
    for name, stats in finals.items():
        show(name, stats)
    print(f"time: {time.perf_counter() - t0:.0f} s (runs in {tmp})")


if __name__ == "__main__":
    main()
