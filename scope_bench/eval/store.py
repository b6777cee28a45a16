"""Results store: one JSON line per graded sample, appended as each problem completes.

Lines are keyed by (checkpoint, task, problem_id, sample). A problem's samples are written in one
write + flush + fsync, so a killed evaluation leaves at most one truncated last line; opening the
store cuts it off. A problem counts as done only when all its samples are there and none of them is
one the engine gave up on (finish reason "abort" or "error"), so a rerun regenerates exactly the
problems that were not finished and nothing is lost or duplicated.

One writer: with data-parallel replicas (parallel.py) only the driver appends, as results arrive.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from scope_bench.eval.backends import UNFINISHED
from scope_bench.io import drop_torn_end, iter_jsonl

Key = tuple[str, str, str]  # (checkpoint, task, problem_id)


class ResultStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.records: dict[Key, dict[int, dict[str, Any]]] = {}
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        drop_torn_end(self.path)  # every record ends with "\n": a line without one is a write cut short
        try:
            lines = list(iter_jsonl(self.path))
        except ValueError as err:  # not JSON: the reader names the file and line
            raise ValueError(f"{err}; fix it or rerun with --force") from None
        for n, rec in lines:
            try:
                key = (rec["checkpoint"], rec["task"], str(rec["problem_id"]))
                self.records.setdefault(key, {})[int(rec["sample"])] = rec
            except (KeyError, TypeError, ValueError) as err:
                raise ValueError(f"{self.path}:{n}: not a results line ({err}); fix it or rerun with --force") from None

    def samples(self, checkpoint: str, task: str, problem_id: str) -> dict[int, dict[str, Any]]:
        return self.records.get((checkpoint, task, str(problem_id)), {})

    def is_done(self, checkpoint: str, task: str, problem_id: str, n: int) -> bool:
        return _complete(self.samples(checkpoint, task, problem_id), n)

    def drop_incomplete(self, n_by_task: dict[str, int]) -> int:
        """Forget problems of these tasks that are not done (fewer than `n` samples, or one the engine
        gave up on) and rewrite the file without them, so their regeneration does not leave duplicate
        lines. Returns how many problems were dropped."""
        stale = [k for k, v in self.records.items() if k[1] in n_by_task and not _complete(v, n_by_task[k[1]])]
        for key in stale:
            del self.records[key]
        if stale:
            self.rewrite()
        return len(stale)

    def rewrite(self) -> None:
        tmp = self.path.with_suffix(".jsonl.tmp")
        with tmp.open("w") as f:
            for per_sample in self.records.values():
                for j in sorted(per_sample):
                    f.write(json.dumps(per_sample[j], ensure_ascii=False) + "\n")
        os.replace(tmp, self.path)

    def append(self, records: list[dict[str, Any]]) -> None:
        """Append the samples of one or more problems atomically enough to survive a kill."""
        if not records:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        blob = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        with self.path.open("a") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        for rec in records:
            key = (rec["checkpoint"], rec["task"], str(rec["problem_id"]))
            self.records.setdefault(key, {})[int(rec["sample"])] = rec


def _complete(samples: dict[int, dict[str, Any]], n: int) -> bool:
    return all(j in samples and samples[j].get("finish_reason") not in UNFINISHED for j in range(n))
