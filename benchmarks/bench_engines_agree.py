"""Both engines agree: GRPO in the demo's world, trained by the local engine and by verl's own
`RayPPOTrainer.fit` on CPU (`scope-bench train --backend verl --device cpu`: verl's GRPO advantage,
policy loss and AdamW), for the same steps from the same warm start on the same training problems;
how close the two learning curves are, against the seed-to-seed noise of each engine.

    .venv/bin/python benchmarks/bench_engines_agree.py                       # 2 seeds x 8 steps of 8 x 8
    .venv/bin/python benchmarks/bench_engines_agree.py --seeds 0,1,2 --steps 12 --set model.careless_rate=0.5

Per run it reads the on-policy accuracy of every step (the share of the step's rollouts graded
correct, `accuracy` in each engine's metrics.jsonl), then prints the mean curve of each engine and,
per engine, the level (mean over all steps) and the gain (mean of the second half of the steps minus
the first), with the standard deviation over seeds. The engines agree when the difference of their
means is within about two standard errors of it, the standard error coming from the seeds of both
engines: sqrt(sd_local^2 / K + sd_verl^2 / K). Each engine draws its own rollouts (the local
sampler and verl's HF rollout replica seed differently) and orders the prompts its own way (the
local trainer's seeded permutation, verl's seeded dataloader), so the curves are compared as
distributions over seeds, never step by step.

Aligned on purpose (the rest are the two engines' shared defaults, trainers/base.yaml and
engines/verl/config): model (the world's warm start), training problems (the same rows for both),
prompts per step, rollouts per prompt, learning rate, weight decay 0 (verl's AdamW default is 0.01),
gradient clip 1.0, one update per step (verl: ppo_mini_batch_size = train_batch_size), clip 0.2,
token-mean loss, no KL, temperature 1, 128 new tokens. Wall times are printed as the verl/local ratio
of this run. Runs nice'd, one at a time, one torch thread for the local engine.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(sys.executable).with_name("scope-bench")
CLI = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "scope_bench.cli"]


def world_overrides(extra: list[str]) -> list[str]:
    from scope_bench.demo import WORLD

    return [*WORLD, *extra]


def write_problems(cfg, out: Path) -> tuple[Path, Path]:
    """The training problems of the world's config, as a verl parquet (chat prompts, for verl) and as
    JSONL rows {question, answer} (for the local trainer, which builds the same chat prompt itself; fed
    the parquet, it would wrap the user turn, instruction included, in a second instruction)."""
    from scope_bench.engines.verl.data_cli import to_verl_rows, write_parquet
    from scope_bench.synthetic.task import generate_split

    rows = generate_split("train", cfg.data.n_train, seed=0, difficulties=tuple(cfg.data.difficulties))
    records, _ = to_verl_rows(rows, where="synthetic train", split="train", data_source="synthetic")
    parquet, jsonl = out / "train.parquet", out / "train.jsonl"
    write_parquet(records, parquet)
    jsonl.write_text("".join(json.dumps({"question": r["question"], "answer": r["answer"]}) + "\n" for r in rows))
    return parquet.resolve(), jsonl.resolve()


def run(cmd: list[str], log: Path) -> float:
    t0 = time.perf_counter()
    with log.open("w") as f:
        proc = subprocess.run(["nice", "-n", "5", *cmd], stdout=f, stderr=subprocess.STDOUT, check=False,
                              env={**os.environ, "RAY_DEDUP_LOGS": "0", "TQDM_DISABLE": "1"})
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)} exited {proc.returncode}; log: {log}\n{log.read_text()[-3000:]}")
    return time.perf_counter() - t0


def accuracy_curve(run_dir: Path) -> list[float]:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    steps = {r["step"]: r["accuracy"] for r in rows if "accuracy" in r and "val_accuracy" not in r}
    return [steps[s] for s in sorted(steps)]


def summary(curves: list[list[float]]) -> dict:
    """Level (mean over steps) and gain (second half minus first half) per seed."""
    arr = np.asarray(curves, dtype=float)
    half = arr.shape[1] // 2
    return {"level": arr.mean(axis=1), "gain": arr[:, arr.shape[1] - half:].mean(axis=1) - arr[:, :half].mean(axis=1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--batch", type=int, default=8, help="prompts per step")
    p.add_argument("--n", type=int, default=8, help="rollouts per prompt")
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--set", dest="extra", action="append", default=[], help="world override (trainer config)")
    p.add_argument("--model", help="start from this checkpoint (default: the world's warm start, built if needed)")
    p.add_argument("--out", help="folder for the runs (default: a temporary one)")
    args = p.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]

    from scope_bench.engines.local import load_train_config
    from scope_bench.synthetic.model import warm_start_for

    out = Path(args.out or tempfile.mkdtemp(prefix="engines-agree-")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    world = world_overrides(args.extra)
    cfg = load_train_config("grpo", [*world, "threads=1"])
    model = args.model or warm_start_for(cfg.model, threads=1)
    data, data_local = write_problems(cfg, out)
    print(f"world: {' '.join(world)}\nwarm start: {model}\ntraining problems: {data}\n"
          f"GRPO, {args.steps} steps of {args.batch} prompts x {args.n} rollouts, lr {args.lr}, seeds {seeds}\n")

    local_set = [*world, f"train.steps={args.steps}", f"train.batch_size={args.batch}", f"rollout.n={args.n}",
                 f"train.lr={args.lr}", "train.weight_decay=0.0", "train.grad_clip=1.0", "train.ppo_epochs=1",
                 f"train.micro_batch_size={args.batch * args.n}", "rollout.temperature=1.0",
                 "rollout.max_new_tokens=128", "eval.every=0", f"checkpoint.every={args.steps}", "threads=1",
                 "metrics.near_miss=false"]
    method_blocks = [o for o in world if o.split("=", 1)[0].split(".")[0] in ("prm", "refiner", "loss", "scope")]
    verl_set = [*method_blocks, f"data.train_batch_size={args.batch}",
                f"actor_rollout_ref.actor.ppo_mini_batch_size={args.batch}", f"actor_rollout_ref.rollout.n={args.n}",
                f"actor_rollout_ref.actor.optim.lr={args.lr}", "actor_rollout_ref.actor.optim.weight_decay=0.0",
                "actor_rollout_ref.actor.grad_clip=1.0", f"trainer.save_freq={args.steps}", "metrics.near_miss=false"]
    curves: dict[str, list[list[float]]] = {"local": [], "verl": []}
    wall = {"local": 0.0, "verl": 0.0}
    for seed in seeds:
        for engine in ("local", "verl"):
            run_dir = out / f"{engine}-seed{seed}"
            cmd = [*CLI, "train", "--method", "grpo", "--model", str(model), "--seed", str(seed),
                   "--steps", str(args.steps), "--run-dir", str(run_dir)]
            if engine == "local":
                cmd += [*local_set, f"data.train={data_local}", "data.val=null", "data.n_train=null"]
            else:
                cmd += ["--backend", "verl", "--device", "cpu", "--data", str(data), *verl_set]
            wall[engine] += run(cmd, out / f"{engine}-seed{seed}.log")
            curves[engine].append(accuracy_curve(run_dir))
            print(f"{engine} seed {seed}: " + " ".join(f"{a:.2f}" for a in curves[engine][-1]), flush=True)

    print("\nmean on-policy accuracy per step (over seeds):")
    print("step   " + " ".join(f"{s:>5d}" for s in range(1, args.steps + 1)))
    for engine, c in curves.items():
        print(f"{engine:<6} " + " ".join(f"{a:5.2f}" for a in np.mean(c, axis=0)))
    stats = {e: summary(c) for e, c in curves.items()}
    k = len(seeds)
    print(f"\n{'':<8}{'local (sd)':>16}{'verl (sd)':>16}{'verl - local':>14}{'SE (seeds)':>12}{'|diff|/SE':>11}")
    for key in ("level", "gain"):
        a, b = stats["local"][key], stats["verl"][key]
        sd_a, sd_b = (float(x.std(ddof=1)) if k > 1 else math.nan for x in (a, b))
        se = math.sqrt(sd_a ** 2 / k + sd_b ** 2 / k) if k > 1 else math.nan
        diff = float(b.mean() - a.mean())
        print(f"{key:<8}{a.mean():>9.3f} ({sd_a:.3f}){b.mean():>9.3f} ({sd_b:.3f}){diff:>+14.3f}{se:>12.3f}"
              f"{abs(diff) / se if se else math.nan:>11.2f}")
    print(f"\nwall time: local {wall['local']:.0f} s, verl {wall['verl']:.0f} s (verl/local {wall['verl'] / wall['local']:.1f}x)")
    print(f"runs and logs: {out}")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
