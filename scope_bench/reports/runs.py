"""Finding and reading the run dirs a report is made from.

An evaluation run dir has ``summary.json`` (and ``results.jsonl``); a training run dir has
``metrics.jsonl``. A path that is neither is searched below for both, so ``scope-bench report runs/``
takes everything under it.

Names in reports: a run's row label is ``--label DIR=NAME`` if given, else its summary ``label``.
``method`` (a `trainers/*.yaml` name) and ``backbone`` come from the summary, where `scope-bench eval`
writes them from the checkpoint's training run. A summary without a method (a run from elsewhere)
gets one guessed from its label ("grpo-seed1" -> grpo, "RL w/ PRM reward" -> none; `infer_method`),
and tables that select by method say which runs were guessed. Without a backbone, all such runs
share one. The method decides which runs the ablation table (Table 3) shows.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from scope_bench.analysis.dynamics import TrainingRun, load_training_run
from scope_bench.engines.methods import available_methods
from scope_bench.io import iter_jsonl

# label prefixes that are not a method's own name (the paper's spellings), after normalising
_ALIASES = {"on-policy": "grpo", "prm": "prm-reward", "sft-rl": "sft+rl", "replace-entire": "luffy"}


def infer_method(label: str) -> str | None:
    """A fallback for runs from elsewhere: the `trainers/*.yaml` name a run label starts with
    (longest first, "_" and spaces read as "-"), or an alias of one; None when nothing matches."""
    norm = re.sub(r"[\s_\-]+", "-", label.strip().lower())
    known = {m: m for m in available_methods()} | _ALIASES
    for prefix in sorted(known, key=len, reverse=True):
        if norm.startswith(prefix):
            return known[prefix]
    return None


@dataclass
class EvalRun:
    path: Path
    label: str
    method: str | None
    backbone: str | None
    summary: dict = field(repr=False)
    method_guessed: bool = False  # True: the summary had no method, `infer_method` read the label

    def score(self, task: str) -> float | None:
        entry = self.summary["tasks"].get(task)
        return None if entry is None else float(entry["score"])

    def pass_at(self, task: str, k: int) -> float | None:
        entry = self.summary["tasks"].get(task) or {}
        value = (entry.get("pass@k") or {}).get(str(k))
        return None if value is None else float(value)

    def responses(self, task: str) -> dict[str, list[str]]:
        """``{problem_id: [response, ...]}`` of one task from results.jsonl, in sample order.

        Only rows of the summary's checkpoint count when the file holds several checkpoints. Every
        line must be JSON, the last one too: a finished run's file is complete."""
        path = self.path / "results.jsonl"
        if not path.exists():
            return {}
        checkpoint = self.summary.get("checkpoint")
        rows = []
        for n, row in iter_jsonl(path):
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{n}: each line must be a JSON object")  # noqa: TRY004 (bad file content)
            if row.get("task") == task:
                for key in ("problem_id", "sample", "response"):
                    if key not in row:
                        raise ValueError(f"{path}:{n}: missing field {key!r}")
                rows.append(row)
        if checkpoint and any(r.get("checkpoint") == checkpoint for r in rows):
            rows = [r for r in rows if r.get("checkpoint") == checkpoint]
        groups: dict[str, list] = {}
        for row in sorted(rows, key=lambda r: (str(r["problem_id"]), r["sample"])):
            groups.setdefault(str(row["problem_id"]), []).append(row["response"] or "")
        return groups


def load_eval_run(run_dir: str | Path, label: str | None = None) -> EvalRun:
    """An evaluation run from its summary.json, checked for the fields reports read."""
    run_dir = Path(run_dir)
    path = run_dir / "summary.json"
    try:
        summary = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err.msg})") from None
    if not isinstance(summary, dict) or not isinstance(summary.get("tasks"), dict):
        raise ValueError(f"{path}: field 'tasks' must be an object of task -> scores")  # noqa: TRY004
    for task, entry in summary["tasks"].items():
        if not isinstance(entry, dict) or not isinstance(entry.get("score"), (int, float)):
            raise ValueError(f"{path}: tasks.{task}.score must be a number (percent)")  # noqa: TRY004
    label = label or summary.get("label") or run_dir.resolve().name
    method = summary.get("method") or infer_method(label)
    return EvalRun(run_dir, label, method, summary.get("backbone"), summary,
                   method_guessed=not summary.get("method") and method is not None)


def discover(paths, labels: dict | None = None) -> tuple[list[EvalRun], list[TrainingRun]]:
    """Eval and training runs at or below ``paths``, in the order given (then sorted below a path).

    ``labels`` maps a run dir (as given or resolved) to the name its rows get."""
    labels = {str(Path(k).resolve()): v for k, v in (labels or {}).items()}
    evals, trains, seen = [], [], set()
    for p in map(Path, paths):
        if not p.exists():
            raise FileNotFoundError(f"run dir {p} does not exist")
        found = sorted(f.parent for f in p.rglob("summary.json")) if not (p / "summary.json").exists() else [p]
        found_train = (
            sorted(f.parent for f in p.rglob("metrics.jsonl")) if not (p / "metrics.jsonl").exists() else [p]
        )
        if not found and not found_train:
            raise FileNotFoundError(f"{p}: no summary.json or metrics.jsonl at or below it")
        for d in found:
            key = ("eval", d.resolve())
            if key not in seen:
                seen.add(key)
                evals.append(load_eval_run(d, labels.get(str(d.resolve()))))
        for d in found_train:
            key = ("train", d.resolve())
            if key not in seen:
                seen.add(key)
                trains.append(load_training_run(d, labels.get(str(d.resolve()))))
    return evals, trains
