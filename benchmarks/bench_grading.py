"""Grading throughput: scope_bench's grader against a plain Math-Verify loop, same rows, same run.

Responses are built from the real benchmark rows in ../shared/data/benchmarks: for each MATH-500,
Minerva and AIME24 problem, its solution as written (right, boxed), the same solution with another
problem's answer in its box (wrong, boxed), "The final answer is $X$." with its own answer (right,
unboxed) and with another problem's (wrong, unboxed); AMC answers boxed, right and wrong; AIME
answers without their leading zeros; LUFFY's Minerva golds (58 in plain scientific notation)
answered in LaTeX. The baseline is `verify(parse("\\boxed{gold}"), parse(response))` per item in one process,
as most RL code does it, with Math-Verify as shipped (LL parsing, see `two_stage_parsing`). Prints both
throughputs and the ratio for each worker count (the single-worker ratio tells the algorithm from the
parallelism), and every label difference by cause.

Two halves with disjoint problems: "cold" is a fresh start (our worker processes started, their
imports and ANTLR's parser warm-up, which every new process pays, all inside the timing; the plain loop
pays its own import and warm-up), "warm" is the steady state of a training run (the pool already
running, both graders having parsed the other half before). The headline is the steady state with 2
workers. Timings on a loaded machine mean little: the load average is printed before and after.

    .venv/bin/python benchmarks/bench_grading.py [--workers 2,1] [--limit N]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import re
import sys
import time
from collections import Counter

from scope_bench.grading import grade_math_batch, shutdown_pool
from scope_bench.grading.antlr import two_stage_parsing
from scope_bench.grading.equivalence import _gold_forms, gold_text
from scope_bench.grading.extract import last_boxed
from scope_bench.grading.normalize import normalize_answer
from scope_bench.paths import SHARED_DATA_DIR

DATA = SHARED_DATA_DIR / "benchmarks"


def to_latex(answer: str) -> str:
    """`4.5e33` -> `4.5 \\times 10^{33}`: how a model writes a LUFFY gold."""
    return re.sub(r"^(-?[\d.]+)[eE]([-+]?\d+)$", r"\1 \\times 10^{\2}", answer)


def build_items(seed: int = 0) -> list[tuple[str, str, str, int]]:
    """(kind, response, gold, problem number) from the real rows."""
    rng = random.Random(seed)
    items = []
    solved = []
    for name in ("math500", "minerva_math", "aime24"):
        for line in (DATA / "qwen" / f"{name}.jsonl").read_text().splitlines():
            row = json.loads(line)
            solved.append((row["solution"], gold_text(row.get("answer") or last_boxed(row["solution"]))))
    answers = [a for _, a in solved]
    for n, (solution, answer) in enumerate(solved):
        box = last_boxed(solution)
        items.append(("solution", solution, answer, n))
        if box is not None:
            other = answer
            while normalize_answer(other) == normalize_answer(answer):
                other = rng.choice(answers)
            items.append(("wrong", solution.replace(f"\\boxed{{{box}}}", f"\\boxed{{{other}}}"), answer, n))
        items.append(("unboxed", f"We are done. The final answer is ${answer}$.", answer, n))
        other = answer
        while normalize_answer(other) == normalize_answer(answer):
            other = rng.choice(answers)
        items.append(("wrong-unboxed", f"We are done. The final answer is ${other}$.", answer, n))
    n = len(solved)
    for line in (DATA / "qwen" / "amc23.jsonl").read_text().splitlines():
        answer = gold_text(json.loads(line)["answer"])
        items.append(("short", f"Adding up, we get $\\boxed{{{answer}}}$.", answer, n))
        items.append(("short-wrong", f"so \\boxed{{{int(answer) + 1}}}", answer, n))
        n += 1
    for line in (DATA / "qwen" / "aime24.jsonl").read_text().splitlines():
        answer = json.loads(line)["answer"]  # AIME golds keep leading zeros: 025
        items.append(("aime-zeros", f"The answer is $\\boxed{{{int(answer)}}}$", answer, n))
        n += 1
    luffy = DATA / "luffy" / "valid.all.parquet"
    if luffy.exists():
        import pandas as pd

        df = pd.read_parquet(luffy)
        for truth in df[df.data_source == "minerva"].reward_model:
            gold = gold_text(truth["ground_truth"])
            items.append(("luffy-minerva", f"Thus $\\boxed{{{to_latex(gold)}}}$.", gold, n))
            n += 1
    return items


def plain_loop(items) -> list[bool]:
    from math_verify import parse, verify

    two_stage_parsing(False)  # Math-Verify as shipped, should anything in this process have installed it
    return [verify(parse(f"\\boxed{{{gold}}}"), parse(response)) for _, response, gold, _ in items]


def explain(kind: str, prediction: str | None, gold: str, ours: bool, method: str) -> str:
    """Why the two graders disagree on one item (checked by reading the listed examples)."""
    if re.fullmatch(r"-?[\d.]+[eE][-+]?\d+", gold):
        return "gold in plain scientific notation: Math-Verify reads 4.5e33 as 4.5*e*33"
    if method == "no_answer":
        return "no box or final-answer phrase: we grade no answer, Math-Verify takes the last expression"
    if kind.endswith("unboxed") and "$" in gold:
        return "gold itself contains `$`, so the unboxed `$gold$` response is cut at it"
    if method == "timeout":
        return "our time limit ran out (Math-Verify alone took longer)"
    if kind == "unboxed" and not ours:
        return "unboxed answer our fallback reads differently from Math-Verify's any-match"
    if ours and method == "fast" and _gold_forms(gold)[1] is not None and _gold_forms(gold)[1][1] != "exact":
        return "relative tolerance 1e-4 on a decimal gold"
    if ours and method == "fast":
        return "normalised strings equal (Hendrycks), Math-Verify disagrees"
    if not ours and "," in (prediction or "") + gold:
        return "lists/sets: first_match parse vs Math-Verify's any-match"
    return "other"


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def reset_parent_caches() -> None:
    """Forget what this process cached for the previous worker count (its workers are restarted)."""
    from scope_bench.grading import equivalence

    for cached in (equivalence._gold_forms, equivalence.gold_latex, equivalence._parse_boxed):
        cached.cache_clear()


def load_line() -> str:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = os.getloadavg()[0]
    warning = "  (busy machine: the timings mean little)" if load > 0.75 * cores else ""
    return f"load average {load:.2f} on {cores} cores{warning}"


def ours(items, workers: int, timeout_s: float):
    return grade_math_batch([r for _, r, _, _ in items], [g for _, _, g, _ in items],
                            timeout_s=timeout_s, workers=workers)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="2,1", help="worker counts to measure, comma-separated")
    parser.add_argument("--timeout-s", type=float, default=5.0)
    parser.add_argument("--limit", type=int, default=None, help="grade only the first N items")
    parser.add_argument("--show", type=int, default=40, help="label differences to print")
    args = parser.parse_args()
    if not DATA.exists():
        print(f"real rows not found at {DATA}", file=sys.stderr)
        return 1
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    items = build_items()[: args.limit]
    print(f"{len(items)} responses: {dict(Counter(k for k, _, _, _ in items))}")
    # Two halves with disjoint problems. The first is graded cold by both (our worker start-up
    # included: each worker count starts a fresh pool); the second is the steady state of a training
    # run, where the pool persists and both graders have parsed other answers before (Math-Verify's
    # parser warms up as it goes).
    halves = {"cold": [it for it in items if it[3] % 2 == 0], "warm": [it for it in items if it[3] % 2 == 1]}
    titles = {"cold": "cold half (fresh start: worker start-up, imports and parser warm-up included)",
              "warm": "warm half (steady state: pool running, parsers warmed on the cold half)"}
    print(f"before: {load_line()}")
    plain = {name: timed(plain_loop, half) for name, half in halves.items()}
    graded: dict[int, dict] = {}
    for workers in (int(w) for w in args.workers.split(",")):
        shutdown_pool()
        reset_parent_caches()
        graded[workers] = {name: timed(ours, half, workers, args.timeout_s) for name, half in halves.items()}
    shutdown_pool()
    print(f"after:  {load_line()}")
    for name, half in halves.items():
        plain_s = plain[name][1]
        print(f"\n{titles[name]}, {len(half)} responses:")
        print(f"  plain parse+verify loop: {len(half) / plain_s:8.1f} items/s ({plain_s:.1f} s)")
        for workers, runs in graded.items():
            grades, ours_s = runs[name]
            print(f"  scope_bench ({workers} worker{'s' if workers > 1 else ''}): {len(half) / ours_s:8.1f} items/s "
                  f"({ours_s:.1f} s), ratio {plain_s / ours_s:.1f}x", dict(Counter(g.method for g in grades)))

    print()
    for workers, runs in sorted(graded.items(), reverse=True):
        ratio = {name: plain[name][1] / runs[name][1] for name in halves}
        label = "headline" if workers == 2 else "        "
        print(f"{label} {workers} worker{'s' if workers > 1 else ' '}: steady state (warm) {ratio['warm']:.1f}x, "
              f"cold start (worker start-up, parser warm-up) {ratio['cold']:.1f}x, of the plain loop's throughput")

    first = next(iter(graded.values()))
    labels = {w: [g.correct for name in halves for g in runs[name][0]] for w, runs in graded.items()}
    print(f"\nsame labels with every worker count: {len({tuple(v) for v in labels.values()}) == 1}")
    merged = [(kind, g, p, gold) for name, half in halves.items()
              for (kind, _, gold, _), g, p in zip(half, first[name][0], plain[name][0])]
    print(f"accuracy over all {len(items)}: ours {sum(g.correct for _, g, _, _ in merged)}, "
          f"plain {sum(bool(p) for _, _, p, _ in merged)}")
    diffs = [(kind, g, p, gold) for kind, g, p, gold in merged if g.correct != bool(p)]
    causes = Counter(explain(kind, g.prediction, gold, g.correct, g.method) for kind, g, _, gold in diffs)
    print(f"{len(diffs)} label differences (ours 1 / plain 0: {sum(g.correct for _, g, _, _ in diffs)}, "
          f"ours 0 / plain 1: {sum(not g.correct for _, g, _, _ in diffs)})")
    for cause, count in causes.most_common():
        print(f"  {count:4d}  {cause}")
    for kind, g, plain_ok, gold in diffs[: args.show]:
        print(f"  [{kind}] ours={int(g.correct)} ({g.method}) plain={int(bool(plain_ok))} "
              f"pred={g.prediction!r:.60} gold={gold!r:.60}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
