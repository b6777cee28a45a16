"""The report's bill table: what each method's training runs spent on the refiner and the PRM
(`refiner/*`, `prm/*`, `cost/usd` in metrics.jsonl, `bill.json`; engines/bill.py, docs/cost.md)."""

from __future__ import annotations

import json

import numpy as np

from scope_bench.reports.tables import MISSING_NOTE, Block, Row, Table

TOKENS = {"refiner in": "refiner/prompt_tokens", "refiner out": "refiner/completion_tokens",
          "PRM in": "prm/prompt_tokens"}
PER_STEP = {"refiner p50 s": "refiner/latency_p50_s", "refiner p95 s": "refiner/latency_p95_s",
            "stage share": "time/stage_share"}
COLUMNS = ["steps", *TOKENS, "USD", *PER_STEP, "budget spent at step"]
NOTE = ("Totals over each run's steps, mean over seeds. Tokens: the servers' `usage` where they send it, "
        "else counted with the policy's tokenizer. USD: from the config's price table (— when unpriced). "
        "Latency and the stage's share of the step's wall time: mean over steps of each step's value. Budget: "
        "the step after which the refiner's budget was spent (— never, or no budget).")


def run_bill(run) -> dict:
    """One training run's bill: token totals, cost so far, mean per-step latency and stage share."""
    rows = [r for r in run.rows if "refiner/prompt_tokens" in r]
    cells = {"steps": float(len(rows))}
    cells.update({col: float(sum(r.get(key) or 0 for r in rows)) for col, key in TOKENS.items()})
    costs = [r["cost/usd"] for r in rows if r.get("cost/usd") is not None]
    cells["USD"] = costs[-1] if costs else None
    for col, key in PER_STEP.items():
        values = [r[key] for r in rows if r.get(key) is not None]
        cells[col] = float(np.mean(values)) if values else None
    summary = run.path / "bill.json"
    spent = json.loads(summary.read_text()).get("budget_spent_at_step") if summary.exists() else None
    cells["budget spent at step"] = float(spent) if spent is not None else None
    return cells


def bill_table(train_groups: dict) -> Table | None:
    """Per method, the bill of its runs (mean over seeds); None when no run logged one."""
    rows = []
    for label, runs in train_groups.items():
        billed = [run_bill(r) for r in runs if any("refiner/prompt_tokens" in row for row in r.rows)]
        if not billed:
            continue
        cells = {}
        for col in COLUMNS:
            values = [b[col] for b in billed if b[col] is not None]
            cells[col] = float(np.mean(values)) if values else None
        rows.append(Row(label, cells))
    if not rows:
        return None
    decimals = {"steps": 0, **dict.fromkeys(TOKENS, 0), "USD": 4, **dict.fromkeys(PER_STEP, 3),
                "stage share": 2, "budget spent at step": 0}
    return Table("bill", "Refiner and PRM bill per method", COLUMNS, [Block("Measured", [(None, rows)])], decimals,
                 notes=[NOTE, MISSING_NOTE], bold=())
