"""`scope-bench demo`: the paper's comparison in miniature on CPU, the project's main job (`make demo`).

    scope-bench demo                     # warm start, 5 methods x 3 seeds, ID and OOD evaluation, verdicts
    scope-bench demo --quick             # a smoke run of the same pipeline (seconds)
    scope-bench demo --full              # longer training, more seeds and eval problems (see --help)
    scope-bench demo --methods grpo,scope,luffy --seeds 0,1 --steps 40 --set train.lr=1e-5

Steps: (1) held-out ID and OOD eval sets, (2) the cached warm start (SFT on 2-4-operation chains),
(3) every (method, seed) trained from it in the demo's world (RL on 4-6-operation chains, a teacher
writing in its own style, a noisy PRM; `WORLD`) and evaluated on both sets (greedy pass@1; samples
for pass@k and diversity on some ID problems), `--workers` runs side by side, (4) the report: the
positive control (GRPO vs the warm start), Table 1 with mean ± std over seeds, the four verdicts
(intervals and detectable effects, docs/verdicts.md), Tables 3 and 4, the training figure.
Everything is written as it is made: a rerun reuses finished training runs and evaluated samples and
resumes whatever was interrupted.

Reproducibility: the warm start and each run are determined by their seed and settings (a run does
not depend on which worker ran it or in what order) for a given thread count: torch's CPU kernels
split reductions by thread, so another `--threads` changes floating-point sums and so the samples.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from scope_bench.paths import PROJECT_ROOT, REPORTS_DIR
from scope_bench.reports.demo_report import START, START_VARIANT, VARIANTS

TASK = "synthetic"
EVAL_SEED = 0
DEFAULT_METHODS = "grpo,scope,luffy,prm-reward,scope-weak"
# The demo's world (each value documented in trainers/base.yaml): RL prompts of 4-6 operations (the
# warm start's hardest, then one and two steps beyond it, where it rarely succeeds), a teacher that
# writes in its own layout, a PRM that errs on 5% of steps, and a warm start that writes a careless
# line (two operations at once, after a careful first line) with chance 0.6: the habit plain RL can
# unlearn on every problem, without which GRPO had nothing shared to learn (docs/demo.md).
WORLD = ("data.difficulties=[hard,ops5,ops6]", "refiner.style=shifted", "prm.fp_rate=0.05", "prm.fn_rate=0.05",
         "model.careless_rate=0.6")
# ID: held-out problems of the RL prompts' own distribution (4-6 operations, as `data.difficulties`);
# OOD: 7-operation chains, longer than anything trained.
ID_DIFFICULTIES, OOD_DIFFICULTIES = ("hard", "ops5", "ops6"), ("ops7",)
# The demo's budget on top of each method's config: sized so that `make demo` (install included)
# stays within 15 minutes on 2 CPU cores with two runs side by side.
DEMO_OVERRIDES = ("train.steps=12", "train.batch_size=8", "train.lr=5e-5", "eval.every=0", "checkpoint.every=10")
FULL_OVERRIDES = ("train.steps=80", "train.batch_size=16", "eval.every=0", "checkpoint.every=10")
# --quick: the same pipeline in seconds (random-init model, a few tiny steps, few problems)
QUICK_OVERRIDES = ("model.warm_start_steps=0", "train.steps=2", "train.batch_size=2", "rollout.n=4",
                   "rollout.max_new_tokens=24", "data.n_train=16", "data.n_val=4", "eval.every=1",
                   "eval.max_new_tokens=24", "checkpoint.keep_last=1")


@dataclass
class Budget:
    """What the demo runs; the defaults are the main job, `quick()` the smoke run, `full()` the long one."""

    methods: list[str] = field(default_factory=lambda: DEFAULT_METHODS.split(","))
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    overrides: list[str] = field(default_factory=lambda: [*WORLD, *DEMO_OVERRIDES])
    # Evaluation (docs/verdicts.md): pass@1 is greedy, one answer for each of `eval_problems` ID and as
    # many OOD problems; pass@k and div-score need samples: `samples` at temperature 1 on the first
    # `sample_problems` ID problems. 192 + 192 + 32 x 4 = 512 answers per checkpoint, the same number of
    # generated sequences as the earlier 64 + 64 problems x 4 samples, with three times the problems.
    eval_problems: int = 192
    sample_problems: int = 32
    samples: int = 4
    eval_max_tokens: int = 128  # a 7-operation solution is ~85 tokens
    threads: int = 1  # torch threads per run
    workers: int = 2  # runs side by side

    @classmethod
    def quick(cls, **kwargs) -> Budget:
        return cls(methods=["grpo", "scope"], seeds=[0], overrides=[*WORLD, *QUICK_OVERRIDES], eval_problems=4,
                   sample_problems=4, samples=4, eval_max_tokens=24, workers=1, **kwargs)

    @classmethod
    def full(cls, **kwargs) -> Budget:
        return cls(methods=[*DEFAULT_METHODS.split(","), "prm-step-reward", "replace"], seeds=[0, 1, 2, 3, 4],
                   overrides=[*WORLD, *FULL_OVERRIDES], eval_problems=500, sample_problems=128, samples=8, **kwargs)


# ------------------------------------------------------------------------------------------- CLI


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo", help="the paper's comparison in miniature on the embedded default, with verdicts (reports/demo/)",
        description=__doc__.splitlines()[0], epilog="\n".join(__doc__.splitlines()[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", help=f"comma-separated rows, from {', '.join(VARIANTS)} (default {DEFAULT_METHODS})")
    p.add_argument("--seeds", help="comma-separated training seeds (default 0,1,2)")
    p.add_argument("--steps", type=int, help="training steps of every method (default 12; --quick: 2)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="trainer config override for every method, repeatable (e.g. train.lr=1e-5)")
    p.add_argument("--eval-problems", type=int,
                   help="held-out problems per split, ID and OOD, decoded greedily for pass@1 (default 192)")
    p.add_argument("--sample-problems", type=int,
                   help="ID problems sampled --samples times for pass@k and div-score (default 32; 0: none)")
    p.add_argument("--samples", type=int, help="samples per sampled problem, temperature 1 (default 4)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="a smoke run: random-init model, 2 steps, 4 problems")
    mode.add_argument("--full", action="store_true",
                      help="7 methods x 5 seeds, 80 steps of 16 prompts, 500 problems, 128 x 8 samples (hours on 2 cores)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads per run (default 1)")
    p.add_argument("--workers", type=int, help="runs side by side (default 2; --quick: 1)")
    p.add_argument("--out", help="report folder (default reports/demo)")
    p.add_argument("--runs", help="training and eval runs folder (default runs/demo)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(func=run)


def budget_from_args(args: argparse.Namespace) -> Budget:
    budget = Budget.quick() if args.quick else Budget.full() if args.full else Budget()
    if args.methods is not None:
        budget.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if args.seeds is not None:
        try:
            budget.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        except ValueError:
            raise ValueError(f"--seeds {args.seeds!r}: expected comma-separated integers") from None
    if not budget.methods or not budget.seeds:
        raise ValueError("--methods and --seeds need at least one entry each")
    if unknown := [m for m in budget.methods if m not in VARIANTS]:
        raise ValueError(f"--methods: unknown {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    budget.threads = args.threads
    budget.workers = args.workers or budget.workers
    budget.overrides += ([f"train.steps={args.steps}"] if args.steps else []) + list(args.overrides)
    if args.eval_problems is not None:
        budget.eval_problems = args.eval_problems
    if args.sample_problems is not None:
        budget.sample_problems = args.sample_problems
    if args.samples is not None:
        budget.samples = args.samples
    return budget


def run(args: argparse.Namespace) -> int:
    result = run_demo(budget_from_args(args), out=args.out, runs=args.runs)
    print(result["comparison"])
    return 0


# -------------------------------------------------------------------------------------- pipeline


@dataclass
class Job:
    """One row's seed: train (unless it is the starting checkpoint) and evaluate on every split."""

    variant: str
    seed: int | None
    cfg: object | None  # the trainer config; None for the starting checkpoint
    checkpoint: str  # what is evaluated (a trained run's final/ once trained)
    name: str  # eval dir name


def run_demo(budget: Budget | None = None, *, out: str | Path | None = None, runs: str | Path | None = None) -> dict:
    """Run the demo; returns the paths written, run dirs, values per variant/metric/seed, the verdicts
    and the comparison text."""
    from scope_bench.engines.local import load_train_config

    budget = budget or Budget()
    out = Path(out) if out is not None else REPORTS_DIR / "demo"
    runs = (Path(runs) if runs is not None else PROJECT_ROOT / "runs" / "demo").resolve()
    t0 = time.perf_counter()
    # every config is resolved (and validated) before any work, so a bad --set fails at once
    configs = {(m, s): load_train_config(VARIANTS[m].method, [
        *budget.overrides, *VARIANTS[m].overrides, f"seed={s}", f"threads={budget.threads}",
        f"run_dir={runs / 'train' / f'{m}-seed{s}'}", "resume=true"]) for m in budget.methods for s in budget.seeds}
    steps = {cfg.train.steps for cfg in configs.values()}
    if len(steps) != 1:
        raise ValueError(f"methods would train different numbers of steps {sorted(steps)}; pass --steps")
    steps = steps.pop()

    _stage(1, "held-out eval sets")
    data = {"id": write_eval_set(runs / "data", ID_DIFFICULTIES), "ood": write_eval_set(runs / "data", OOD_DIFFICULTIES)}
    for split, path in data.items():
        print(f"  {split}: {path} (first {budget.eval_problems} evaluated greedily"
              + (f", first {budget.sample_problems} sampled {budget.samples} times)" if split == "id" and sampled(budget)
                 else ")"))

    _stage(2, "starting checkpoint")
    starts = {starting_checkpoint(cfg) for cfg in configs.values()}
    if len(starts) != 1:
        raise ValueError(f"methods would start from different checkpoints {sorted(starts)}; "
                         f"drop the per-method model overrides")
    start = starts.pop()
    first = next(iter(configs.values()))
    start_variant = START_VARIANT if first.model.warm_start_steps and not first.model.path else \
        replace(START_VARIANT, label="Initial model")
    print(f"  {start_variant.label}: {start}")

    _stage(3, f"train {len(configs)} runs ({steps} steps each, {budget.workers} side by side) and evaluate")
    jobs = [Job(m, s, cfg, "", f"{m}-seed{s}-step{steps}") for (m, s), cfg in configs.items()]
    jobs.append(Job(START, None, None, start, "start"))
    results = run_jobs(jobs, budget, data, runs / "eval")

    _stage(4, "report")
    from scope_bench.analysis.dynamics import group_by_label, load_training_run
    from scope_bench.reports.demo_report import add_values, write_demo_report

    values: dict = {}
    for job, scores in results:
        add_values(values, job.variant, job.seed, scores)
    variants = [VARIANTS[m] for m in budget.methods]
    train_dirs = {(m, s): Path(cfg.run_dir) for (m, s), cfg in configs.items()}
    groups = group_by_label([load_training_run(d, VARIANTS[m].label) for (m, _), d in train_dirs.items()])
    elapsed = time.perf_counter() - t0
    written = write_demo_report(out, values, variants, start_variant, budget.samples, groups,
                                preamble(budget, steps, elapsed))
    comparison = _summary_text(out, written["verdicts"], written["control"], start_variant.label)
    comparison += f"\nruns: {runs}   time: {elapsed:.0f} s"
    return {"written": written, "train_dirs": train_dirs, "values": values, "verdicts": written["verdicts"],
            "control": written["control"],
            "data": data, "comparison": comparison}


def _stage(n: int, text: str) -> None:
    print(f"[demo {n}/4] {text}", flush=True)


def preamble(budget: Budget, steps: int, elapsed: float) -> str:
    world = ", ".join(budget.overrides)
    return (f"{len(budget.methods)} methods x {len(budget.seeds)} seeds (seeds {', '.join(map(str, budget.seeds))}), "
            f"{steps} RL steps each, evaluated on {budget.eval_problems} held-out ID and {budget.eval_problems} OOD "
            f"problems by greedy decoding (pass@1)"
            + (f", and {budget.samples} samples at temperature 1 on {budget.sample_problems} of the ID problems "
               f"(pass@{budget.samples}, diversity)" if sampled(budget) else "")
            + f". Settings: `{world}`. "
            f"Wall time of this invocation: {elapsed / 60:.1f} min (not counting install, a cached warm start, or "
            f"runs and evaluations reused from an earlier invocation).")


def _summary_text(out: Path, verdicts, control, start_label: str) -> str:
    table1 = (out / "tables" / "demo-table1.md").read_text().strip()
    names = {k: v.label for k, v in VARIANTS.items()} | {START: start_label}
    lines = ["", f"RL learns here (positive control): {control.outcome}  ({control.primary.describe(names)})"]
    if control.outcome != "holds":
        lines.append("  -> the verdicts below cannot be read: plain RL does not beat its starting checkpoint here")
    lines += ["", table1, "", "Verdicts (paired by seed and problem, hierarchical bootstrap):"]
    lines += [f"  claim {v.claim.name}: {v.outcome}  ({v.primary.describe(names)})" for v in verdicts]
    lines.append(f"\nreport: {out / 'report.md'} (LaTeX: {out / 'report.tex'}, figures: {out / 'figures'})")
    return "\n".join(lines)


def write_eval_set(folder: Path, difficulties=ID_DIFFICULTIES, size: int = 500) -> Path:
    """Held-out problems as JSONL: the synthetic "test" split, which no training split and no warm
    start ever draws from (`synthetic.split_of`), each question once. The file is named by its
    content, so eval results are never mixed across different sets."""
    from scope_bench.synthetic import generate_split

    rows = generate_split("test", size, seed=EVAL_SEED, difficulties=tuple(difficulties))
    text = "".join(json.dumps({"id": f"{TASK}-{i}", **r}) + "\n" for i, r in enumerate(rows))
    path = folder / f"{TASK}-{'-'.join(difficulties)}-{hashlib.sha256(text.encode()).hexdigest()[:8]}.jsonl"
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
    from scope_bench.synthetic import tiny_model
    from scope_bench.synthetic.model import warm_start_for

    if cfg.model.warm_start_steps:
        return str(warm_start_for(cfg.model, threads=cfg.threads or None))
    return str(tiny_model())


def run_jobs(jobs: list[Job], budget: Budget, data: dict, eval_root: Path) -> list[tuple[Job, dict]]:
    """Every job, `budget.workers` at a time (separate processes, `budget.threads` torch threads each);
    results in the jobs' order. A run does not depend on the worker that ran it."""
    if budget.workers <= 1:
        _init_worker(budget.threads, quiet=False)
        return [(job, run_job(job, budget, data, eval_root)) for job in jobs]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    ctx = multiprocessing.get_context("spawn")  # torch and fork do not mix
    with ProcessPoolExecutor(budget.workers, mp_context=ctx, initializer=_init_worker,
                             initargs=(budget.threads, True)) as pool:
        futures = [pool.submit(run_job, job, budget, data, eval_root) for job in jobs]
        return [(job, f.result()) for job, f in zip(jobs, futures)]


def _init_worker(threads: int, quiet: bool) -> None:
    import torch

    if threads:
        torch.set_num_threads(threads)
    if quiet:  # progress bars of runs side by side would interleave; each run prints a line when done
        os.environ["TQDM_DISABLE"] = "1"


def run_job(job: Job, budget: Budget, data: dict, eval_root: Path) -> dict[str, float]:
    """Train (or reuse) the job's run, evaluate its checkpoint on every split; returns its scores."""
    from scope_bench.analysis.dynamics import read_metrics
    from scope_bench.analysis.verdicts import seed_mean
    from scope_bench.reports.demo_report import eval_grades, measure_greedy, measure_samples, measure_training

    t0 = time.perf_counter()
    scores: dict[str, float] = {}
    checkpoint = job.checkpoint
    if job.cfg is not None:
        run_dir = train_run(job.cfg)
        checkpoint = str(run_dir / "final")
        scores.update(measure_training(read_metrics(run_dir / "metrics.jsonl")))
    for split, path in data.items():  # pass@1: greedy, one answer per problem
        eval_dir = eval_root / f"{split}-greedy" / job.name
        evaluate_checkpoint(checkpoint, job.name, eval_dir, path, budget, budget.eval_problems, n=1, temperature=0.0)
        scores.update(measure_greedy(eval_grades(eval_dir, TASK, eval_ids(path, budget.eval_problems))[0], split))
    if sampled(budget):  # pass@k and diversity: samples at the training temperature
        eval_dir = eval_root / "id-sampled" / job.name
        evaluate_checkpoint(checkpoint, job.name, eval_dir, data["id"], budget, budget.sample_problems,
                            n=budget.samples, temperature=1.0)
        scores.update(measure_samples(*eval_grades(eval_dir, TASK, eval_ids(data["id"], budget.sample_problems)), "id"))
    print(f"  done: {job.name} ({time.perf_counter() - t0:.0f} s): ID pass@1 {seed_mean(scores['id/pass@1']):.1f}, "
          f"OOD pass@1 {seed_mean(scores['ood/pass@1']):.1f}", flush=True)
    return scores


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


def sampled(budget: Budget) -> bool:
    """Whether the budget samples for pass@k and diversity (which need two samples or more)."""
    return budget.sample_problems > 0 and budget.samples > 1


def eval_ids(data: Path, limit: int) -> list[str]:
    """The ids of the first `limit` problems of an eval set (those an evaluation with that limit scores)."""
    with open(data) as f:
        return [str(json.loads(line)["id"]) for line, _ in zip(f, range(limit))]


def evaluate_checkpoint(ckpt: str, label: str, out_dir: Path, data: Path, budget: Budget, limit: int, *, n: int,
                        temperature: float) -> dict:
    from scope_bench.eval import evaluate

    return evaluate(ckpt, TASK, backend="hf", out_dir=out_dir, label=label, data_paths={TASK: str(data)},
                    limit=limit, n=n, temperature=temperature, max_tokens=budget.eval_max_tokens,
                    seed=EVAL_SEED, chunk_size=16, backend_kwargs={"batch_size": 64})
