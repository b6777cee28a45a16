"""Cost of SCOPE's stage on top of GRPO: time per training step of `scope` over `grpo` on the same
batches and the same weights, measured in one run, with the stage's breakdown (PRM, selection,
refiner, retokenisation, verification). Target: at most 1.25x with the rule-based PRM and the
programmatic refiner.

    .venv/bin/python benchmarks/bench_train_overhead.py [--steps 6] [--threads 1] [KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import statistics
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6, help="measured steps per method (after one warm-up)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. rollout.n=8")
    args = parser.parse_args()

    import torch

    from scope_bench.engines.local import load_train_config
    from scope_bench.engines.local.data import batch_indices
    from scope_bench.engines.local.trainer import rl_step, setup

    torch.set_num_threads(args.threads)
    tmp = tempfile.mkdtemp()
    common = [f"threads={args.threads}", "data.val=null", *args.overrides]
    scope_cfg = load_train_config("scope", [*common, f"run_dir={tmp}/scope"])
    grpo_cfg = load_train_config("grpo", [*common, f"run_dir={tmp}/grpo"])
    run = setup(scope_cfg)
    runs = {"grpo": dataclasses.replace(run, cfg=grpo_cfg), "scope": run}
    weights, opt_state = copy.deepcopy(run.model.state_dict()), copy.deepcopy(run.optimizer.state_dict())

    totals = {m: [] for m in runs}
    stages: dict[str, list[float]] = {}
    for step in range(1, args.steps + 2):
        rows = [run.train_rows[i] for i in batch_indices(len(run.train_rows), scope_cfg.train.batch_size, step, 0)]
        order = ["grpo", "scope"] if step % 2 else ["scope", "grpo"]  # alternate: no order advantage
        for method in order:
            run.model.load_state_dict(weights)  # both methods see the same weights and batch
            run.optimizer.load_state_dict(opt_state)
            start = time.perf_counter()
            metrics = rl_step(runs[method], step, rows)
            if step == 1:
                continue  # warm-up
            totals[method].append(time.perf_counter() - start)
            if method == "scope":
                for k, v in metrics.items():
                    if k.startswith("time/stage"):
                        stages.setdefault(k, []).append(v)
                print(f"step {step}: gated {metrics['groups_gated']}, rectified {metrics['groups_rectified']}, "
                      f"keep_ratio {metrics['keep_ratio']}")

    g, s = statistics.mean(totals["grpo"]), statistics.mean(totals["scope"])
    print(f"\nbatch {scope_cfg.train.batch_size} prompts x {scope_cfg.rollout.n} rollouts, "
          f"max {scope_cfg.rollout.max_new_tokens} new tokens, {args.threads} threads, {args.steps} steps")
    print(f"grpo  {g:.3f} s/step   scope {s:.3f} s/step   ratio scope/grpo = {s / g:.3f}x (target <= 1.25x)")
    stage = statistics.mean(stages.get("time/stage", [0.0]))
    print(f"SCOPE stage {stage:.4f} s/step = {stage / s:.1%} of a scope step; breakdown:")
    for key in ("prm", "selection", "refiner", "tokenize", "verify"):
        v = statistics.mean(stages.get(f"time/stage/{key}", [0.0]))
        print(f"  {key:<10} {v:.4f} s  ({v / max(stage, 1e-12):.0%} of the stage)")
    print("the rest of the difference is the update over longer/ different (rectified) sequences")


if __name__ == "__main__":
    main()
