"""`scope-bench view RUN_DIR...`: one self-contained HTML page to look inside runs (docs/view.md).

- a training run (either engine): its rollout record (`engines/rollouts.py`), step by step and group by
  group: each step of a response coloured by its PRM probability, the rectified rollout's verified
  prefix and refiner suffix, every candidate's selection score (eqs. 2-4), why a group was skipped;
- eval runs: per problem, each sample's extracted answer, grade and finish reason against the gold
  answer; with two or more runs the problems where they differ come first, and each run's paired
  difference from the first run carries a 95% interval (problems as the unit, their samples averaged:
  `analysis.verdicts.paired_test` with the problems as the only level);
- the grader audit: samples where the project's grade (as stored by `scope-bench eval`) and plain
  Math-Verify (`verify(parse("\\boxed{gold}"), parse(response))`, as RL code runs it) disagree.

The page is static: data and code are inlined (no server, no network); it opens from disk.
"""

from __future__ import annotations

import argparse
import html
import json
import math
import sys
from datetime import UTC, datetime
from pathlib import Path

import yaml

from scope_bench.io import iter_jsonl

TEMPLATE = Path(__file__).with_name("view.html")
DEFAULT_OUT = "view.html"


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "view", help="one static HTML page to look inside training and eval runs",
        description="Writes one self-contained HTML file (no server, no network) for training runs of "
                    "either engine (their rollouts/ record: PRM step scores, prefix and suffix, selection "
                    "scores, skip reasons), eval runs (per-problem samples; with several runs the paired "
                    "difference with a 95%% interval) and the grader audit (project grader vs Math-Verify).")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="training run dirs and/or eval run dirs")
    p.add_argument("--out", default=DEFAULT_OUT, metavar="FILE.html", help=f"default ./{DEFAULT_OUT}")
    p.add_argument("--no-audit", action="store_true", help="skip the grader audit (Math-Verify on every sample)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    data = collect(args.run_dirs, audit=not args.no_audit)
    out = Path(args.out)
    write_page(data, out)
    counts = {k: sum(r["kind"] == k for r in data["runs"]) for k in ("train", "eval")}
    print(f"wrote {out} ({counts['train']} training run(s), {counts['eval']} eval run(s), "
          f"{len(data['audit'])} grader disagreement(s))", file=sys.stderr)
    return 0


def write_page(data: dict, out: Path) -> None:
    blob = json.dumps(data, ensure_ascii=False, allow_nan=False, default=str).replace("</", "<\\/")
    page = TEMPLATE.read_text().replace("__TITLE__", html.escape(data["title"])).replace("__DATA__", blob)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page)


# ------------------------------------------------------------------------------------------ runs


def collect(run_dirs, *, audit: bool = True) -> dict:
    runs = []
    for raw in run_dirs:
        path = Path(raw)
        if (path / "summary.json").exists():
            runs.append(eval_run(path))
        elif (path / "metrics.jsonl").exists():
            runs.append(training_run(path))
        elif not path.exists():
            raise FileNotFoundError(f"run dir {path} does not exist")
        else:
            raise FileNotFoundError(f"{path}: neither an eval run (summary.json) nor a training run (metrics.jsonl)")
    evals = [r for r in runs if r["kind"] == "eval"]
    labels = [r["label"] for r in runs]
    return {"title": "scope-bench view: " + ", ".join(labels),
            "generated": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "runs": runs, "comparison": compare(evals) if evals else None,
            "audit": grader_audit(evals) if audit else [], "audited": audit and bool(evals)}


def _clean(value):
    """JSON without NaN/inf (the page's JSON.parse refuses them)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def training_run(path: Path) -> dict:
    """A training run: its config's method and engine, its metrics per step, its rollout record."""
    from scope_bench.engines.rollouts import ROLLOUT_DIR, read_rollouts

    config = yaml.safe_load((path / "config.yaml").read_text()) if (path / "config.yaml").exists() else {}
    config = config or {}
    engine = "verl" if "actor_rollout_ref" in config else "local"
    folder = (config.get("trainer") or {}).get("rollout_data_dir") or path / ROLLOUT_DIR
    folder = Path(folder) if Path(folder).is_dir() else path / ROLLOUT_DIR
    metrics = [row for _, row in iter_jsonl(path / "metrics.jsonl", torn_end="skip") if isinstance(row, dict)]
    rows = read_rollouts(folder) if folder.is_dir() else []
    steps: dict[int, dict] = {}
    for row in rows:
        step = steps.setdefault(int(row["step"]), {"step": int(row["step"]), "groups": {}})
        step["groups"].setdefault(str(row["uid"]), []).append(row)
    scope = config.get("scope") or {}
    budget_spent = {m["step"] for m in metrics if m.get("budget/skipped_groups")}  # engines/bill.py
    return _clean({
        "kind": "train", "label": path.resolve().name, "path": str(path), "engine": engine,
        "method": config.get("method"), "tau": scope.get("tau"), "rollout_dir": str(folder),
        "metrics": [m for m in metrics if "step" in m and "val_accuracy" not in m],
        "steps": [{"step": s["step"], "groups": [_group(uid, members, s["step"] in budget_spent)
                                                 for uid, members in s["groups"].items()]}
                  for s in sorted(steps.values(), key=lambda s: s["step"])],
        "note": None if rows else f"no rollout record in {folder} (written by runs since `scope-bench view` "
                                  "existed; metrics.max_rollout_rows=0 turns it off)",
    })


# a group the stage never saw because the run's refiner budget was spent (`budget/skipped_groups`)
BUDGET_SKIP = {"status": "skipped", "reason": "budget_spent", "why": "refiner budget spent", "refiner_failure": False,
               "candidates": []}


def _group(uid: str, members: list[dict], budget_spent: bool = False) -> dict:
    members = sorted(members, key=lambda r: r.get("index", 0))
    record = next((m.get("group") for m in members if m.get("group")), BUDGET_SKIP if budget_spent else None)
    sampled = [m.get("reward_sampled", m["score"]) for m in members]
    return {"uid": uid, "input": members[0].get("input"), "gts": members[0].get("gts"), "record": record,
            "all_fail": all((r or 0) <= 0 for r in sampled),
            "rectified": any((m.get("offpolicy_tokens") or 0) > 0 for m in members),
            "refiner_failure": bool(record and record.get("refiner_failure")),
            "rollouts": [{k: v for k, v in m.items() if k not in ("group", "input", "gts")} for m in members]}


# ------------------------------------------------------------------------------------------ eval


def eval_run(path: Path) -> dict:
    from scope_bench.reports.runs import load_eval_run

    run = load_eval_run(path)
    checkpoint = run.summary.get("checkpoint")
    results = path / "results.jsonl"
    samples = []
    if results.exists():
        for n, row in iter_jsonl(results, torn_end="skip"):
            for key in ("task", "problem_id", "sample", "correct"):
                if not isinstance(row, dict) or key not in row:
                    raise ValueError(f"{results}:{n}: missing field {key!r}")
            samples.append(row)
    if checkpoint and any(r.get("checkpoint") == checkpoint for r in samples):
        samples = [r for r in samples if r.get("checkpoint") == checkpoint]
    tasks = {t: {"score": e.get("score"), "finish_reasons": e.get("finish_reasons")}
             for t, e in run.summary["tasks"].items()}
    return _clean({"kind": "eval", "label": run.label, "path": str(path), "checkpoint": checkpoint,
                   "tasks": tasks, "samples": sorted(samples, key=lambda r: (r["task"], str(r["problem_id"]),
                                                                             r["sample"]))})


def _per_problem(run: dict) -> dict[str, dict[str, float]]:
    """`{task: {problem_id: mean grade over its samples}}`."""
    grades: dict = {}
    for s in run["samples"]:
        grades.setdefault(s["task"], {}).setdefault(str(s["problem_id"]), []).append(float(s["correct"]))
    return {t: {p: sum(g) / len(g) for p, g in problems.items()} for t, problems in grades.items()}


def compare(evals: list[dict]) -> dict:
    """Problems of every task joined across runs (where they differ first), and each run's paired
    difference from the first run with its 95% interval, problems as the unit."""
    from scope_bench.analysis.verdicts import SHARED, Comparison, paired_test

    means = [_per_problem(r) for r in evals]
    tasks = sorted({t for m in means for t in m})
    diffs = []
    for task in tasks:
        for k in range(1, len(evals)):
            a, b = means[k].get(task), means[0].get(task)
            if not a or not b:
                continue
            res = paired_test({SHARED: a}, {SHARED: b}, Comparison(evals[k]["label"], evals[0]["label"], task))
            diffs.append({"task": task, "run": evals[k]["label"], "baseline": evals[0]["label"],
                          "estimate": 100 * res.estimate, "low": 100 * res.low, "high": 100 * res.high,
                          "n_problems": res.n_problems})
    problems = []
    for task in tasks:
        ids = sorted({p for m in means for p in m.get(task, {})}, key=str)
        for pid in ids:
            per_run = [m.get(task, {}).get(pid) for m in means]
            known = [v for v in per_run if v is not None]
            problems.append({"task": task, "problem_id": pid, "means": per_run,
                             "differs": len(evals) > 1 and (len(known) < len(per_run) or max(known) != min(known))})
    problems.sort(key=lambda p: not p["differs"])  # stable: task and id order within each part
    return _clean({"labels": [r["label"] for r in evals], "diffs": diffs, "problems": problems})


def grader_audit(evals: list[dict]) -> list[dict]:
    """Samples where the stored grade (the project's grader) and plain Math-Verify disagree. Math
    tasks only (a task whose definition says `choice` is skipped); unfinished samples were never graded."""
    from math_verify import parse, verify

    from scope_bench.eval.backends import UNFINISHED
    from scope_bench.grading.equivalence import quiet_math_verify

    quiet_math_verify()
    out = []
    for run in evals:
        kinds = {t: _answer_kind(t) for t in run["tasks"]}
        for s in run["samples"]:
            if kinds.get(s["task"]) == "choice" or s.get("finish_reason") in UNFINISHED:
                continue
            gold, response = str(s.get("ground_truth") or ""), s.get("response") or ""
            try:
                plain = bool(verify(parse(f"\\boxed{{{gold}}}"), parse(response)))
            except Exception:  # noqa: BLE001 - Math-Verify's own failure is its verdict: not verified
                plain = False
            if plain != bool(s["correct"]):
                out.append({"run": run["label"], "task": s["task"], "problem_id": str(s["problem_id"]),
                            "sample": s["sample"], "gold": gold, "prediction": s.get("prediction"),
                            "project": bool(s["correct"]), "math_verify": plain, "response": response})
    return out


def _answer_kind(task: str) -> str:
    from scope_bench.eval.tasks import load_task

    try:
        return load_task(task).answer_kind
    except (ValueError, FileNotFoundError, KeyError):
        return "math"
