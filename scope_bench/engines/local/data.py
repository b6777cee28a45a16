"""Training and validation prompts: the synthetic task, a local parquet/JSONL file, or a hub dataset.

Every row becomes {"question", "answer"}; a row without them fails at start, naming file, row and field.
The order of training prompts is a seeded permutation per epoch, a pure function of (seed, step), so a
resumed run sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import numpy as np

from scope_bench.engines.fields import ANSWER_FIELDS, QUESTION_FIELDS, answer_value
from scope_bench.io import read_rows


def load_rows(source: str, *, split: str, n: int | None, seed: int, cfg_data, keep: tuple[str, ...] = ()) -> list[dict]:
    """Rows {question, answer} from `source` ("synthetic", a .parquet/.jsonl/.json path, or a hub id),
    plus the columns named in `keep` (e.g. LUFFY's pre-collected teacher solutions), which must exist."""
    if source == "synthetic":
        from scope_bench.synthetic.task import generate_split

        return generate_split("train" if split == "train" else "val", n, seed=seed,
                              difficulties=tuple(cfg_data.difficulties))
    raw = read_rows(source, split)
    rows = [{**_normalise(row, i, source, cfg_data), **{k: _field(row, k, (), i, source) for k in keep}}
            for i, row in enumerate(raw)]
    if not rows:
        raise ValueError(f"data {source}: no rows")
    return rows[:n] if n else rows


def _normalise(row, i: int, source: str, cfg_data) -> dict:
    if not isinstance(row, dict):
        raise ValueError(f"{source}: row {i} is not an object")  # noqa: TRY004 - bad input, not a bug
    question = _field(row, cfg_data.question_key, QUESTION_FIELDS, i, source)
    answer = answer_value(_field(row, cfg_data.answer_key, ANSWER_FIELDS, i, source))
    if isinstance(question, list):  # verl's chat-format prompt column: take the user turn
        question = next((m.get("content") for m in question if isinstance(m, dict) and m.get("role") == "user"), None)
    if not isinstance(question, str) or not question.strip():
        raise ValueError(f"{source}: row {i} has an empty or non-text question")
    if answer is None or not str(answer).strip():
        raise ValueError(f"{source}: row {i} has an empty answer")
    return {"question": question, "answer": str(answer)}


def _field(row: dict, key, candidates, i: int, source: str):
    keys = [key] if key else list(candidates)
    for k in keys:
        if k in row and row[k] is not None:
            return row[k]
    raise ValueError(f"{source}: row {i} has no field {' or '.join(keys)} (fields: {sorted(row)})")


def batch_indices(n_rows: int, batch_size: int, step: int, seed: int) -> list[int]:
    """Row indices of training step `step` (1-based): consecutive slices of a per-epoch permutation."""
    start = (step - 1) * batch_size
    out = []
    while len(out) < batch_size:
        epoch, offset = divmod(start + len(out), n_rows)
        perm = np.random.default_rng([seed, epoch]).permutation(n_rows)
        out.extend(perm[offset: offset + batch_size - len(out)].tolist())
    return out
