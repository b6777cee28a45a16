"""The rollout record: per training step, every rollout as sampled, what the method's stage did to its
group and what was trained, one JSON line per rollout in `<rollout dir>/<step>.jsonl`. Both engines
write the same fields through `write_rollouts` (the local trainer into `<run_dir>/rollouts/`, verl
into `trainer.rollout_data_dir`, which defaults to the same place); `scope-bench view` reads them
(docs/view.md). At most `metrics.max_rollout_rows` rows are written over a run, so a long run cannot
fill the disk.

Fields of a row (verl's own dump names first; null where an engine or a stage has no value):
- step, uid (the group), index (position in the group), input (the prompt), gts (the gold answer)
- output (the response as trained), score (the reward trained on), advantage, weights_step (the
  update whose weights sampled it), response_tokens, offpolicy_tokens, offpolicy_is_suffix,
  prefix (the policy's tokens that were trained), suffix (the refiner's tokens, off-policy)
- sampled and reward_sampled (the response and its outcome reward before the stage), steps (the
  sampled response split into steps), prm (the PRM probability of each step, where it was scored)
- step_rewards and step_advantages (verl, the dense PRM reward only): each step's `[token end,
  reward]` and the advantage at its last token
- group: what SCOPE did to the group (the same on each of its rows): status (rectified, skipped,
  not_gated), reason, why (gate, refiner failure, verification failure, ...), refiner_failure (as the
  `refiner_failures` metric counts it), selected, prefix/total steps and tokens, candidates (each
  failure weighed by selection: its lengths, eq. 2's ratios, eq. 3's weights and eq. 4's score S)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from scope_bench.core.rectify import GroupOutcome, Rectification, Rollout, is_refiner_failure
from scope_bench.core.selection import gaussian_length_weight, prefix_ratio
from scope_bench.core.steps import split_steps

ROLLOUT_DIR = "rollouts"  # under the run dir
DEFAULT_MAX_ROWS = 20000  # `metrics.max_rollout_rows` of trainers/base.yaml

# why a group was left as sampled, by the stage's skip reason (`refiner_error:<kind>` is a refiner failure)
WHY = {"too_few_failures": "gate", "suffix_wrong": "verification failure", "prefix_rewritten": "refiner failure",
       "too_long": "too long for the response width"}


def explain(reason: str | None) -> str | None:
    """The issue's words for a skip reason: gate, refiner failure, verification failure, ..."""
    if reason is None:
        return None
    if str(reason).startswith("refiner_error"):
        return "refiner failure"
    return WHY.get(reason, str(reason).replace("_", " "))


def group_record(outcome: GroupOutcome | None) -> dict | None:
    """What the stage did to one group, with each candidate's terms of eqs. 2-4."""
    if outcome is None:
        return None
    record = asdict(outcome.record)
    stats = record.pop("length_stats") or {}
    for cand in record["candidates"]:
        for unit, stat in (("steps", "step"), ("tokens", "tok")):
            cand[f"rho_{stat}"] = float(prefix_ratio([cand[f"prefix_{unit}"]], [cand[f"total_{unit}"]])[0])
            cand[f"w_{stat}"] = float(gaussian_length_weight([cand[f"total_{unit}"]], stats[unit])[0])
    record["length_stats"] = {unit: list(stat) for unit, stat in stats.items()} or None
    record["why"] = explain(record["reason"])
    record["refiner_failure"] = is_refiner_failure(record["reason"])
    return record


def stage_fields(groups: Sequence[Sequence[Rollout]], outcomes: Sequence[GroupOutcome] | None) -> list[list[dict]]:
    """Per group, per rollout: the sampled response, its steps and PRM probabilities, the group's record.
    `outcomes`: SCOPE's, one per group (from `core.rectify.recording_outcomes`), or None."""
    out = []
    for g, group in enumerate(groups):
        outcome = outcomes[g] if outcomes is not None else None
        record = group_record(outcome)
        out.append([{"index": i, "sampled": r.text, "reward_sampled": float(r.reward), "steps": split_steps(r.text),
                     "prm": outcome.step_scores.get(i) if outcome is not None else None, "group": record}
                    for i, r in enumerate(group)])
    return out


def last_outcomes(recorded: list, n_groups: int) -> tuple[list, list[GroupOutcome]] | None:
    """The `(groups, outcomes)` of the step's SCOPE call (`recording_outcomes`), if it covered the batch."""
    if recorded and len(recorded[-1][1]) == n_groups:
        return recorded[-1]
    return None


def local_rows(step: int, prompts: Sequence[str], groups: Sequence[Sequence[Rollout]], rewards: Sequence[float],
               advantages, rectifications: dict[int, Rectification], recorded: list) -> list[dict]:
    """The local trainer's rows: flat index j = group * n + position, as the trainer lays out its batch."""
    found = last_outcomes(recorded, len(groups))
    extra = stage_fields(groups, found[1] if found else None)
    rows, j = [], 0
    for g, group in enumerate(groups):
        for i, rollout in enumerate(group):
            fix = rectifications.get(j)
            output = fix.text if fix else rollout.text
            kept = rollout.text[: rollout.token_offsets[fix.prefix_tokens - 1][1]] if fix and fix.prefix_tokens else ""
            rows.append({
                "step": step, "uid": str(g), "input": prompts[g], "gts": rollout.ground_truth, "output": output,
                "score": float(rewards[j]), "advantage": _first(advantages[j]), "weights_step": step - 1,
                "response_tokens": len(fix.token_ids if fix else rollout.token_ids),
                "offpolicy_tokens": sum(fix.offpolicy_mask) if fix else 0, "offpolicy_is_suffix": True,
                "prefix": kept if fix else output, "suffix": output[len(kept):] if fix else "", **extra[g][i]})
            j += 1
    return rows


def _first(value) -> float:
    """A rollout's advantage: its value (one per rollout), or its first token's (per-token advantages)."""
    value = value.tolist() if hasattr(value, "tolist") else value
    while isinstance(value, (list, tuple)):
        value = value[0] if value else 0.0
    return float(value)


def count_rows(directory: Path) -> int:
    return sum(f.read_bytes().count(b"\n") for f in directory.glob("*.jsonl")) if directory.is_dir() else 0


def write_rollouts(directory: str | Path, step: int, rows: list[dict], max_rows: int | None) -> int:
    """Write `<directory>/<step>.jsonl` (replacing the step's file of a resumed run), keeping the run
    within `max_rows` rows in all (0 or None: write nothing); returns the rows written."""
    directory = Path(directory)
    path = directory / f"{step}.jsonl"
    if not max_rows or not rows:
        return 0
    room = max_rows - (count_rows(directory) - (path.read_bytes().count(b"\n") if path.exists() else 0))
    rows = rows[: max(room, 0)]
    if not rows:
        return 0
    directory.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows))
    tmp.replace(path)
    return len(rows)


def read_rollouts(directory: str | Path) -> list[dict]:
    """Every row under `directory`, step by step; a bad line is an error naming file and line."""
    from scope_bench.io import iter_jsonl

    files = sorted(Path(directory).glob("*.jsonl"), key=lambda p: (not p.stem.isdigit(), int(p.stem)
                                                                   if p.stem.isdigit() else 0, p.name))
    rows = []
    for path in files:
        for n, row in iter_jsonl(path):
            for key in ("step", "uid", "output", "score"):
                if not isinstance(row, dict) or key not in row:
                    raise ValueError(f"{path}:{n}: a rollout row needs field {key!r}")
            rows.append(row)
    return rows
