"""Sample efficiency on the synthetic task: `scope` against `grpo` and `replace` at equal steps and
seeds (warm-started tiny model, rule-based PRM, programmatic refiner). Prints initial, final and best
validation accuracy (greedy, held-out split) as mean +- std over seeds. Runs are written under
runs/bench/sample_efficiency/ and resumed or skipped when rerun.

    .venv/bin/python benchmarks/bench_train_sample_efficiency.py [--seeds 0 1 2] [--steps 40] [KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import tempfile
import time
from pathlib import Path

from scope_bench.paths import PROJECT_ROOT


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["grpo", "scope", "replace"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--out", default=str(PROJECT_ROOT / "runs" / "bench" / "sample_efficiency"))
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()

    import torch

    from scope_bench.engines.local import load_train_config, train
    from scope_bench.engines.local.trainer import setup, validate

    results: dict[str, list[dict]] = {}
    initial: dict[int, float] = {}
    for seed in args.seeds:
        for method in args.methods:
            tag = hashlib.sha256(" ".join(args.overrides).encode()).hexdigest()[:6] if args.overrides else "default"
            run_dir = f"{args.out}/{method}-seed{seed}-steps{args.steps}-{tag}"  # reused only for same settings
            over = [f"seed={seed}", f"train.steps={args.steps}", f"run_dir={run_dir}", "eval.every=10",
                    *args.overrides]
            cfg = load_train_config(method, over)
            metrics_path = Path(run_dir) / "metrics.jsonl"
            if seed not in initial:  # the warm start's accuracy on this seed's validation split
                torch.set_num_threads(cfg.threads)
                probe = setup(load_train_config(method, [*over, f"run_dir={tempfile.mkdtemp()}"]))
                initial[seed] = validate(probe)
            if not (Path(run_dir) / "final").exists():
                start = time.perf_counter()
                train(load_train_config(method, [*over, f"resume={str(metrics_path.exists()).lower()}"]))
                print(f"{method} seed {seed}: {time.perf_counter() - start:.0f} s", flush=True)
            rows = [json.loads(line) for line in metrics_path.read_text().splitlines()]
            val = [r["val_accuracy"] for r in rows if "val_accuracy" in r]
            results.setdefault(method, []).append({
                "final": val[-1], "best": max(val), "train_acc_last10": statistics.mean(r["accuracy"] for r in rows[-10:]),
                "rectified": sum(r["groups_rectified"] for r in rows)})

    def fmt(values):
        return f"{100 * statistics.mean(values):5.1f} +- {100 * (statistics.stdev(values) if len(values) > 1 else 0):4.1f}"

    print(f"\n{args.steps} steps, seeds {args.seeds}, overrides {args.overrides}; validation accuracy in % (greedy), mean +- std over seeds")
    print(f"initial (warm start): {fmt(list(initial.values()))}")
    print(f"{'method':<10} {'final val':>14} {'best val':>14} {'train acc (last 10)':>20} {'groups rectified':>17}")
    for method, rows in results.items():
        print(f"{method:<10} {fmt([r['final'] for r in rows]):>14} {fmt([r['best'] for r in rows]):>14} "
              f"{fmt([r['train_acc_last10'] for r in rows]):>20} {statistics.mean(r['rectified'] for r in rows):>17.0f}")


if __name__ == "__main__":
    main()
