"""`scope-bench demo`: the embedded default end to end on CPU, the project's main job (`make demo`).

    scope-bench demo                     # warm start, train GRPO and SCOPE, evaluate, report in reports/demo/
    scope-bench demo --quick             # a smoke run of the same pipeline (seconds)
    scope-bench demo --methods grpo,scope,replace --seeds 0,1 --steps 40 --set train.lr=1e-5

Steps: (1) a held-out synthetic eval set, (2) the cached warm-started tiny model, (3) each method
trained from it with the same seeds and steps, (4) the starting checkpoint and every trained one
sampled k times per eval problem (pass@1, pass@k, diversity), (5) `write_report` over all of it.
Everything is written as it is made, so a rerun reuses finished training runs and evaluated samples
and resumes whatever was interrupted.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from scope_bench.paths import PROJECT_ROOT, REPORTS_DIR

TASK = "synthetic"
METHOD_NAMES = {"grpo": "GRPO", "scope": "SCOPE", "replace": "Replace Entire Rollout", "prm-reward": "PRM reward",
                "sft": "SFT", "sft+rl": "SFT+RL"}
START_LABEL = "Warm start"
EVAL_SET_SIZE = 500  # rows written; --eval-problems takes the first N, so it can change between reruns
EVAL_SEED = 0
# The demo's budget on top of each method's config (trainers/*.yaml), a quarter of the configs' 60
# steps of 16 prompts, so that the whole main job stays within minutes on 2 CPU cores.
DEMO_OVERRIDES = ("train.steps=30", "train.batch_size=8", "eval.every=5")
# --quick: the same pipeline in seconds (random-init model, a few tiny steps, few problems)
QUICK_OVERRIDES = ("model.warm_start_steps=0", "train.steps=2", "train.batch_size=2", "rollout.n=4",
                   "rollout.max_new_tokens=24", "data.n_train=16", "data.n_val=4", "eval.every=1",
                   "eval.max_new_tokens=24", "checkpoint.keep_last=1")


@dataclass
class Budget:
    """What the demo runs; the defaults are the main job, `Budget.quick()` the smoke run."""

    methods: list[str] = field(default_factory=lambda: ["grpo", "scope"])
    seeds: list[int] = field(default_factory=lambda: [0])
    overrides: list[str] = field(default_factory=lambda: list(DEMO_OVERRIDES))
    eval_problems: int = 300
    samples: int | None = None  # None: the task's n (tasks/synthetic.yaml)
    eval_max_tokens: int | None = None
    threads: int = 2

    @classmethod
    def quick(cls, **kwargs) -> Budget:
        return cls(overrides=list(QUICK_OVERRIDES), eval_problems=4, samples=4, eval_max_tokens=24, **kwargs)


# ------------------------------------------------------------------------------------------- CLI


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo", help="train GRPO and SCOPE on the embedded default, evaluate both, write reports/demo/",
        description=__doc__.splitlines()[0], epilog="\n".join(__doc__.splitlines()[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", default="grpo,scope", help="comma-separated trainers/<method>.yaml (default grpo,scope)")
    p.add_argument("--seeds", default="0", help="comma-separated training seeds (default 0)")
    p.add_argument("--steps", type=int, help="training steps of every method (default 30; --quick: 2)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="trainer config override for every method, repeatable (e.g. train.lr=1e-5)")
    p.add_argument("--eval-problems", type=int, help="held-out problems evaluated (default 300)")
    p.add_argument("--samples", type=int, help="samples per eval problem (default: tasks/synthetic.yaml's n)")
    p.add_argument("--quick", action="store_true", help="a smoke run: random-init model, 2 steps, 4 problems")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    p.add_argument("--out", help="report folder (default reports/demo)")
    p.add_argument("--runs", help="training and eval runs folder (default runs/demo)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(func=run)


def budget_from_args(args: argparse.Namespace) -> Budget:
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--seeds {args.seeds!r}: expected comma-separated integers") from None
    if not methods or not seeds:
        raise ValueError("--methods and --seeds need at least one entry each")
    budget = Budget.quick() if args.quick else Budget()
    budget.methods, budget.seeds, budget.threads = methods, seeds, args.threads
    budget.overrides += ([f"train.steps={args.steps}"] if args.steps else []) + list(args.overrides)
    if args.eval_problems is not None:
        budget.eval_problems = args.eval_problems
    if args.samples is not None:
        budget.samples = args.samples
    return budget


def run(args: argparse.Namespace) -> int:
    result = run_demo(budget_from_args(args), out=args.out, runs=args.runs)
    print(result["comparison"])
    return 0


# -------------------------------------------------------------------------------------- pipeline


def run_demo(budget: Budget | None = None, *, out: str | Path | None = None, runs: str | Path | None = None) -> dict:
    """Run the demo; returns the paths written (report files by kind, run dirs) and the comparison text."""
    import torch

    from scope_bench.engines.local import load_train_config
    from scope_bench.reports.report import write_report

    budget = budget or Budget()
    out = Path(out) if out is not None else REPORTS_DIR / "demo"
    runs = (Path(runs) if runs is not None else PROJECT_ROOT / "runs" / "demo").resolve()
    if budget.threads:
        torch.set_num_threads(budget.threads)
    t0 = time.perf_counter()
    # every config is resolved (and validated) before any work, so a bad --set fails at once
    configs = {(m, s): load_train_config(m, [*budget.overrides, f"seed={s}", f"threads={budget.threads}",
                                             f"run_dir={runs / 'train' / f'{m}-seed{s}'}", "resume=true"])
               for m in budget.methods for s in budget.seeds}
    steps = {cfg.train.steps for cfg in configs.values()}
    if len(steps) != 1:
        raise ValueError(f"methods would train different numbers of steps {sorted(steps)}; pass --steps")
    steps = steps.pop()

    _stage(1, "held-out eval set")
    data = write_eval_set(runs / "data")
    print(f"  {data} ({EVAL_SET_SIZE} problems, first {budget.eval_problems} evaluated)")

    _stage(2, "starting checkpoint")
    starts = {starting_checkpoint(cfg) for cfg in configs.values()}
    if len(starts) != 1:
        raise ValueError(f"methods would start from different checkpoints {sorted(starts)}; "
                         f"drop the per-method model overrides")
    start = starts.pop()
    first = next(iter(configs.values()))
    start_label = START_LABEL if first.model.warm_start_steps and not first.model.path else "Initial model"
    print(f"  {start_label}: {start}")

    train_dirs = {}
    for i, ((method, seed), cfg) in enumerate(configs.items(), 1):
        _stage(3, f"train {method} seed {seed} ({i}/{len(configs)}, {steps} steps)")
        train_dirs[method, seed] = train_run(cfg)

    _stage(4, f"evaluate on {budget.eval_problems} held-out problems")
    eval_root = runs / "eval" / data.stem
    targets = [(start_label, start, eval_root / "start")]
    targets += [(METHOD_NAMES.get(m, m), str(d / "final"), eval_root / f"{m}-seed{s}-step{steps}")
                for (m, s), d in train_dirs.items()]
    summaries = {}
    for label, ckpt, eval_dir in targets:
        print(f"  {label}: {ckpt}")
        summaries[eval_dir] = evaluate_checkpoint(ckpt, label, eval_dir, data, budget)

    _stage(5, "report")
    labels = {str(d): METHOD_NAMES.get(m, m) for (m, _), d in train_dirs.items()}
    labels.update({str(d): label for label, _, d in targets})
    written = write_report([d for _, _, d in targets] + list(train_dirs.values()), out, ("md", "latex"),
                           labels=labels, reference=False, diversity_task=TASK, progress=True)
    comparison = compare(summaries, targets, train_dirs, labels)
    comparison += f"\nreport: {out / 'report.md'} (LaTeX: {out / 'report.tex'}, figures: {out / 'figures'})"
    comparison += f"\nruns: {runs}   time: {time.perf_counter() - t0:.0f} s"
    return {"written": written, "train_dirs": train_dirs, "eval_dirs": [d for _, _, d in targets],
            "data": data, "comparison": comparison}


def _stage(n: int, text: str) -> None:
    print(f"[demo {n}/5] {text}", flush=True)


def write_eval_set(folder: Path) -> Path:
    """The held-out problems as JSONL: the synthetic "test" split, which no training split and no warm
    start ever draws from (`synthetic.split_of`), each question once. The file is named by its
    content, so eval results are never mixed across different sets."""
    from scope_bench.synthetic import generate_split

    rows = generate_split("test", EVAL_SET_SIZE, seed=EVAL_SEED)
    text = "".join(json.dumps({"id": f"{TASK}-{i}", **r}) + "\n" for i, r in enumerate(rows))
    path = folder / f"{TASK}-{hashlib.sha256(text.encode()).hexdigest()[:8]}.jsonl"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(path)
    return path


def starting_checkpoint(cfg) -> str:
    """The checkpoint a fresh run of `cfg` starts from (the trainer's rule: model.path, else the cached
    warm start, else the random-init tiny model); built and cached here if needed."""
    if cfg.model.path:
        return str(cfg.model.path)
    from scope_bench.synthetic import tiny_model, warm_start_model

    if cfg.model.warm_start_steps:
        return str(warm_start_model(steps=cfg.model.warm_start_steps, threads=cfg.threads or None))
    return str(tiny_model())


def train_run(cfg) -> Path:
    """Train `cfg` (which has resume=true), or reuse it when its run dir already holds the finished run."""
    from scope_bench.analysis.dynamics import read_metrics
    from scope_bench.engines.local import train

    run_dir = Path(cfg.run_dir)
    metrics = run_dir / "metrics.jsonl"
    logged = max((r["step"] for r in read_metrics(metrics)), default=0) if metrics.exists() else 0
    if logged > cfg.train.steps:
        raise ValueError(f"{run_dir} already trained {logged} steps, more than the {cfg.train.steps} asked for; "
                         f"pass --steps {logged} or use another --runs folder")
    done = logged == cfg.train.steps and (run_dir / "final" / "config.json").exists()
    print(f"  {run_dir}" + (" (finished: reused)" if done else f" (resuming after step {logged})" if logged else ""),
          flush=True)
    try:
        # also when done: the trainer checks the saved config matches and trains nothing
        return Path(train(cfg))
    except ValueError as err:
        raise ValueError(f"{err} (a demo with other settings needs another --runs folder)") from None


def evaluate_checkpoint(ckpt: str, label: str, out_dir: Path, data: Path, budget: Budget) -> dict:
    from scope_bench.eval import evaluate

    return evaluate(ckpt, TASK, backend="hf", out_dir=out_dir, label=label, data_paths={TASK: str(data)},
                    limit=budget.eval_problems, n=budget.samples, max_tokens=budget.eval_max_tokens,
                    seed=EVAL_SEED, chunk_size=16, backend_kwargs={"batch_size": 64})


def compare(summaries: dict, targets, train_dirs: dict, labels: dict) -> str:
    """A short table for the terminal: eval scores per model, final validation accuracy and groups
    rectified per method (mean over seeds)."""
    from scope_bench.analysis.dynamics import group_by_label, load_training_run

    rows: dict[str, dict] = {}
    for label, _, eval_dir in targets:
        entry = summaries[eval_dir]["tasks"][TASK]
        for k in dict.fromkeys(("1", str(entry["samples_per_problem"]))):
            rows.setdefault(label, {}).setdefault(f"pass@{k}", []).append(entry["pass@k"][k])
    trains = [load_training_run(d, labels[str(d)]) for d in train_dirs.values()]
    for label, group in group_by_label(trains).items():
        val = [r.series("val_accuracy")[1][-1] * 100 for r in group if len(r.series("val_accuracy")[1])]
        rectified = [sum(x.get("groups_rectified") or 0 for x in r.rows) for r in group]
        rows.setdefault(label, {}).update({"val acc (greedy)": val, "groups rectified": rectified})
    columns = list(dict.fromkeys(c for r in rows.values() for c in r))
    width = max(len(n) for n in rows) + 2
    lines = [f"{'':<{width}}" + "".join(f"{c:>18}" for c in columns)]
    for name, row in rows.items():
        cells = []
        for c in columns:
            vals = row.get(c) or []
            cells.append(f"{sum(vals) / len(vals):>18.1f}" if vals else f"{'-':>18}")
        lines.append(f"{name:<{width}}" + "".join(cells))
    return "\n".join(["", "Demo results (held-out synthetic problems, %; groups rectified: total over training)",
                      *lines])


if __name__ == "__main__":
    from scope_bench.cli import main

    sys.exit(main(["demo", *sys.argv[1:]]))
