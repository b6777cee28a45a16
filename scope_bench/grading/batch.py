"""Grading many answers with a hard time limit per item.

Math-Verify can run for minutes (or forever) on crafted input, and its own timeouts use SIGALRM,
which only works on the main thread and cannot interrupt a long C-level operation such as a huge
integer power. So the slow path runs in worker processes that the parent kills when an item
overruns its deadline: the item scores 0, is counted in `STATS["timeouts"]`, and a fresh worker
takes its place. Everything the exact fast path decides (most answers) never leaves the parent.

Workers are plain `python -m scope_bench.grading.worker` subprocesses talking JSON lines over pipes
(no fork of a threaded trainer, no re-import of the caller's `__main__`). The pool persists across
calls, so a trainer grading each step pays the start-up (about a second) once; it is shut down at
exit, and a worker also exits when its parent dies (its stdin closes).
"""

from __future__ import annotations

import atexit
import collections
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from scope_bench.grading.equivalence import fast_match, gold_text, quiet_math_verify, verify_slow
from scope_bench.grading.extract import count_items, extract_answer
from scope_bench.grading.policy import DEFAULT_POLICY, GradingPolicy

DEFAULT_TIMEOUT_S = 5.0
WORKER_START_TIMEOUT_S = 120.0
MAX_START_FAILURES = 3
# counts since import: items, fast, slow, timeouts, errors, no_answer (read by trainers and the CLI)
STATS: collections.Counter = collections.Counter()


@dataclass(frozen=True)
class Grade:
    """One graded response. `method`: fast | math_verify | no_answer | timeout | error."""

    correct: bool
    prediction: str | None
    method: str

    @property
    def score(self) -> float:
        return 1.0 if self.correct else 0.0

    @property
    def timed_out(self) -> bool:
        return self.method == "timeout"


def default_workers() -> int:
    """One worker per core this process may run on (its CPU affinity, as containers set it), at most 8."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(8, cores or 1))


def grade_math_batch(
    responses: Sequence[str],
    ground_truths: Sequence,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    workers: int | None = None,
    progress: bool = False,
    policy: GradingPolicy = DEFAULT_POLICY,
) -> list[Grade]:
    """Grade each response against its ground truth; every item finishes within `timeout_s`.

    A verdict is a function of (response, ground truth, policy) alone, whatever the process graded
    before and however loaded the machine: where the time limit decides instead, the grade says so
    (`method="timeout"`, scored 0), never a silent verdict.

    `workers=0` runs the slow path in this process, bounded by SIGALRM on the main thread (a soft
    bound: a single long C call finishes first) and by the worker pool elsewhere; `workers>=1`
    resizes the shared pool of killable worker processes to that many (hard bound); `None` uses
    the shared pool as it is, or starts one worker per core (at most 8).
    """
    return _grade(responses, ground_truths, timeout_s, workers, progress, new_pool_size=default_workers(),
                  policy=policy)


def _grade(responses, ground_truths, timeout_s, workers, progress, *, new_pool_size: int,
           policy: GradingPolicy = DEFAULT_POLICY) -> list[Grade]:
    """Fast path here, the rest (deduplicated) on the pool; `new_pool_size` if a pool must start."""
    if len(responses) != len(ground_truths):
        raise ValueError(f"{len(responses)} responses but {len(ground_truths)} ground truths")
    grades: list[Grade | None] = [None] * len(responses)
    slow: list[tuple[int, str, str]] = []
    for i, (response, truth) in enumerate(zip(responses, ground_truths)):
        gold = gold_text(truth)
        prediction = extract_answer(response or "", gold_items=count_items(gold), policy=policy)
        if prediction is None:
            grades[i] = Grade(False, None, "no_answer")
            continue
        verdict = fast_match(prediction, gold, policy)
        if verdict is None:
            slow.append((i, prediction, gold))
        else:
            grades[i] = Grade(verdict, prediction, "fast")
    if slow:
        items = list(dict.fromkeys((pred, gold) for _, pred, gold in slow))  # rollouts repeat answers
        if workers == 0 and threading.current_thread() is threading.main_thread():
            outcomes = [_verify_with_alarm(pred, gold, timeout_s) for pred, gold in items]
        else:
            size = None if workers is None else max(1, workers)
            outcomes = _run_in_shared_pool(size, new_pool_size, items, timeout_s, progress=progress)
        by_item = dict(zip(items, outcomes))
        for i, prediction, gold in slow:
            status, verdict = by_item[prediction, gold]
            grades[i] = Grade(verdict, prediction, "math_verify" if status == "ok" else status)
    STATS["items"] += len(grades)
    counter_names = {"math_verify": "slow", "timeout": "timeouts", "error": "errors"}
    for grade in grades:
        STATS[counter_names.get(grade.method, grade.method)] += 1
    return grades


def math_rewards(
    responses: Sequence[str],
    ground_truths: Sequence,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    workers: int | None = None,
    policy: GradingPolicy = DEFAULT_POLICY,
) -> list[float]:
    """1.0/0.0 per response (eq. 7's verifiable reward); never hangs, see `grade_math_batch`."""
    grades = grade_math_batch(responses, ground_truths, timeout_s=timeout_s, workers=workers, policy=policy)
    return [g.score for g in grades]


def math_reward(response: str, ground_truth, *, timeout_s: float = DEFAULT_TIMEOUT_S,
                policy: GradingPolicy = DEFAULT_POLICY) -> float:
    """1.0 if the response's final answer equals the ground truth, else 0.0.

    Bounded on any thread: what the fast path cannot decide runs in the shared worker pool (started
    with one worker if there is none yet), killed after `timeout_s`.
    """
    return _grade([response], [ground_truth], timeout_s, None, False, new_pool_size=1, policy=policy)[0].score


class _Timeout(BaseException):  # math_verify catches Exception
    pass


def _verify_with_alarm(pred: str, gold: str, timeout_s: float) -> tuple[str, bool]:
    """Slow path in this (main) thread under SIGALRM; soft bound, see `grade_math_batch`."""
    quiet_math_verify()

    def on_alarm(signum, frame):
        raise _Timeout

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout_s)
    try:
        return "ok", verify_slow(pred, gold)
    except _Timeout:
        return "timeout", False
    except Exception:  # noqa: BLE001 - a grader error scores 0, never stops a batch
        return "error", False
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class _Worker:
    """One grading subprocess; `task` is the index of the item it is working on."""

    def __init__(self):
        env = dict(os.environ)
        package_root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "scope_bench.grading.worker"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1, env=env,
            start_new_session=True,  # Ctrl-C in a terminal reaches the parent only
        )
        self.ready = False
        self.task: int | None = None
        self.gold: str | None = None  # the gold of its recent items (parsed and cached in there)
        self.deadline = time.monotonic() + WORKER_START_TIMEOUT_S

    def send(self, index: int, pred: str, gold: str, timeout_s: float) -> None:
        self.proc.stdin.write(json.dumps({"i": index, "pred": pred, "gold": gold}) + "\n")
        self.proc.stdin.flush()
        self.task, self.deadline = index, time.monotonic() + timeout_s

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass


class GradingPool:
    """Killable worker processes with a deadline per item (see the module docstring)."""

    def __init__(self, size: int):
        self.workers = [_Worker() for _ in range(size)]
        self.start_failures = 0

    def resize(self, size: int) -> None:
        while len(self.workers) > size:
            self.workers.pop().kill()
        self.workers += [_Worker() for _ in range(size - len(self.workers))]

    def close(self) -> None:
        while self.workers:
            self.workers.pop().kill()

    def run(self, items: Sequence[tuple[str, str]], timeout_s: float, *, progress: bool = False):
        """(status, verdict) per (pred, gold); status is ok | timeout | error."""
        from tqdm.auto import tqdm

        results: list[tuple[str, bool] | None] = [None] * len(items)
        pending: dict[str, collections.deque] = {}  # gold -> its items, so a worker parses a gold once
        for i, (_, gold) in enumerate(items):
            pending.setdefault(gold, collections.deque()).append(i)
        bar = tqdm(total=len(items), desc="math-verify", disable=not progress, leave=False)
        while pending or any(w.task is not None for w in self.workers):
            for w in self.workers:
                if w.ready and w.task is None and pending:
                    i = self._next_item(w, pending)
                    try:
                        w.send(i, *items[i], timeout_s)
                    except OSError:  # the worker died between items: retry on a fresh one
                        pending.setdefault(items[i][1], collections.deque()).appendleft(i)
                        self._replace(w)
            wait = max(0.0, min(w.deadline for w in self.workers) - time.monotonic())
            readable, _, _ = select.select([w.proc.stdout for w in self.workers], [], [], wait)
            for w in list(self.workers):
                if w.proc.stdout in readable:
                    self._receive(w, results, bar)
            now = time.monotonic()
            for w in list(self.workers):
                if now < w.deadline or (w.ready and w.task is None):
                    continue
                if not w.ready:
                    raise RuntimeError(f"grading worker did not start within {WORKER_START_TIMEOUT_S:.0f}s")
                results[w.task] = ("timeout", False)
                bar.update()
                self._replace(w)
        bar.close()
        return results

    def _next_item(self, w: _Worker, pending: dict) -> int:
        """The next item of the gold `w` works on, else of a gold no worker has, else any."""
        if w.gold not in pending:
            busy = {x.gold for x in self.workers if x.task is not None}
            w.gold = next((g for g in pending if g not in busy), next(iter(pending)))
        queue = pending[w.gold]
        i = queue.popleft()
        if not queue:
            del pending[w.gold]
        return i

    def _receive(self, w: _Worker, results: list, bar) -> None:
        line = w.proc.stdout.readline()
        if not line:  # the worker died (crash or out of memory): its item is an error
            if not w.ready:
                self.start_failures += 1
                if self.start_failures > MAX_START_FAILURES:
                    raise RuntimeError("grading workers keep exiting at start-up: "
                                       "run `python -m scope_bench.grading.worker` to see why")
            if w.task is not None:
                results[w.task] = ("error", False)
                bar.update()
            self._replace(w)
            return
        message = json.loads(line)
        if message.get("ready"):
            w.ready, w.deadline = True, float("inf")
            return
        results[message["i"]] = ("error" if "error" in message else "ok", bool(message["ok"]))
        w.task, w.deadline = None, float("inf")
        bar.update()

    def _replace(self, w: _Worker) -> None:
        w.kill()
        self.workers[self.workers.index(w)] = _Worker()


_POOL: GradingPool | None = None
_POOL_LOCK = threading.Lock()


def _run_in_shared_pool(size: int | None, new_size: int, items, timeout_s: float, *, progress: bool = False):
    """Run on the persistent pool, one caller at a time (rewards may come from several threads).

    `size` None: the pool as it is, or `new_size` workers if there is none yet.
    """
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = GradingPool(size or new_size)
            atexit.register(shutdown_pool)
        elif size is not None and len(_POOL.workers) != size:
            _POOL.resize(size)
        return _POOL.run(items, timeout_s, progress=progress)


def shutdown_pool() -> None:
    """Stop the shared worker processes (done automatically at exit)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is not None:
            _POOL.close()
            _POOL = None
