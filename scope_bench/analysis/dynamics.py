"""Training dynamics: the per-step metrics of training runs, grouped by method over seeds.

A training run dir holds ``metrics.jsonl`` (one JSON object per step, appended as training goes; see
CONTRACTS) and ``config.yaml``. Runs with the same label (by default the ``method`` they log) are
seeds of one method: curves show their mean and a band of +- one standard deviation (population std,
so one seed gives a zero-width band) at every step that at least one seed logged.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from scope_bench.io import iter_jsonl

DYNAMICS_METRICS = ("reward_mean", "entropy", "keep_ratio", "response_length", "val_accuracy")
NEAR_MISS_METRICS = ("near_miss@1", "near_miss@2", "near_miss@3")
_SEED_SUFFIX = re.compile(r"[-_]seed\d+$")


@dataclass
class TrainingRun:
    path: Path
    label: str
    method: str | None
    seed: int | None
    rows: list[dict] = field(repr=False)

    def series(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """Steps and values where ``key`` was logged with a number (null and missing skipped)."""
        pts = [(r["step"], r[key]) for r in self.rows if isinstance(r.get(key), (int, float))]
        pts = [(s, v) for s, v in pts if not math.isnan(v)]
        return np.array([p[0] for p in pts], dtype=float), np.array([p[1] for p in pts], dtype=float)


def read_metrics(path: str | Path) -> list[dict]:
    """Rows of a metrics.jsonl. A truncated last line (a run killed mid-write) is skipped; a bad line
    elsewhere is an error naming the file and line."""
    path = Path(path)
    rows = []
    for n, row in iter_jsonl(path, torn_end="skip"):
        if not isinstance(row, dict) or not isinstance(row.get("step"), int):
            raise ValueError(f"{path}:{n}: each row must be an object with an integer 'step'")  # noqa: TRY004 (bad file content)
        rows.append(row)
    return rows


def load_training_run(run_dir: str | Path, label: str | None = None) -> TrainingRun:
    """A training run from its dir; label = ``label``, else the logged ``method``, else the dir name
    without its ``-seedN`` suffix."""
    run_dir = Path(run_dir)
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{run_dir}: no metrics.jsonl (not a training run dir)")
    rows = read_metrics(path)
    method = next((r["method"] for r in rows if r.get("method")), None)
    seed = next((r["seed"] for r in rows if isinstance(r.get("seed"), int)), None)
    config = run_dir / "config.yaml"
    if (method is None or seed is None) and config.exists():
        import yaml

        cfg = yaml.safe_load(config.read_text()) or {}
        method = method or cfg.get("method")
        seed = seed if seed is not None else cfg.get("seed")
    label = label or method or _SEED_SUFFIX.sub("", run_dir.resolve().name)
    return TrainingRun(run_dir, label, method, seed, sorted(rows, key=lambda r: r["step"]))


def seed_curve(runs: list[TrainingRun], key: str) -> dict[str, np.ndarray] | None:
    """Mean and +-std band over seeds of one metric against step; None if no run logged it."""
    by_step: dict[float, list[float]] = {}
    for run in runs:
        for step, value in zip(*run.series(key)):
            by_step.setdefault(step, []).append(value)
    if not by_step:
        return None
    steps = np.array(sorted(by_step))
    mean = np.array([np.mean(by_step[s]) for s in steps])
    std = np.array([np.std(by_step[s]) for s in steps])
    n = np.array([len(by_step[s]) for s in steps])
    return {"step": steps, "mean": mean, "lo": mean - std, "hi": mean + std, "n": n}


def group_by_label(runs: list, key=lambda run: run.label) -> dict:
    """Runs (training or evaluation) under each `key` (default the label: the seeds of each method),
    in the order keys first appear."""
    out: dict = {}
    for run in runs:
        out.setdefault(key(run), []).append(run)
    return out


def final_values(runs: list[TrainingRun], keys: tuple[str, ...]) -> dict[str, float | None]:
    """Mean over seeds of each metric's last logged value (None if no seed logged it)."""
    out = {}
    for key in keys:
        last = [vals[-1] for _, vals in (r.series(key) for r in runs) if len(vals)]
        out[key] = float(np.mean(last)) if last else None
    return out
