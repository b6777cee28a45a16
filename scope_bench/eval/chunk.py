"""One chunk of problems, the piece the in-process runner (runner.py) and the Ray replicas
(parallel.py) share: its generation requests, its grades, and its records appended to the store."""

from __future__ import annotations

from typing import Any

from scope_bench.eval.backends import UNFINISHED, GenerationRequest, derive_seed
from scope_bench.eval.data import Problem, render_prompt
from scope_bench.eval.store import ResultStore
from scope_bench.eval.tasks import Task


def grade(task: Task, responses: list[str], answers: list[str], *, timeout_s: float = 5.0,
          workers: int | None = None) -> tuple[list[int], list[str | None]]:
    """0/1 grades and extracted predictions, with the project's grader."""
    from scope_bench.grading import choice_reward, extract_choice, grade_math_batch

    if task.answer_kind == "math":
        # the prediction recorded is the one graded (all boxes of a list answer, not the last box)
        grades = grade_math_batch(responses, answers, timeout_s=timeout_s, workers=workers)
        return [int(g.correct) for g in grades], [g.prediction for g in grades]
    n = len(task.letters)
    rewards = [choice_reward(r, a, n_options=n) for r, a in zip(responses, answers)]
    return [int(r > 0) for r in rewards], [extract_choice(r, n_options=n) for r in responses]


def _records(ckpt: str, task: Task, problem: Problem, gens: list, grades: list[int],
             preds: list[str | None]) -> list[dict]:
    return [{"checkpoint": ckpt, "task": task.name, "problem_id": problem.id, "sample": j,
             "response": g.text, "prediction": p, "ground_truth": problem.answer, "correct": c,
             "n_tokens": g.n_tokens, "finish_reason": g.finish_reason}
            for j, (g, c, p) in enumerate(zip(gens, grades, preds))]


def requests_for(task: Task, chunk: list[Problem], fmt: str, seed: int) -> list[GenerationRequest]:
    return [GenerationRequest(render_prompt(task, p, fmt), task.sampling, derive_seed(seed, task.name, p.id))
            for p in chunk]


def _grade_finished(task: Task, gens: list, answers: list[str],
                    grading: dict[str, Any]) -> tuple[list[int], list[str | None]]:
    """Grades of the samples the engine finished; one it gave up on (abort, error) is never graded as
    an answer: it scores 0 with no prediction, and the store counts its problem as not done."""
    finished = [k for k, g in enumerate(gens) if g.finish_reason not in UNFINISHED]
    grades, preds = [0] * len(gens), [None] * len(gens)
    if finished:
        got, extracted = grade(task, [gens[k].text for k in finished], [answers[k] for k in finished], **grading)
        for k, c, p in zip(finished, got, extracted):
            grades[k], preds[k] = c, p
    return grades, preds


def store_chunk(ckpt: str, task: Task, chunk: list[Problem], generations: list[list], store: ResultStore,
                grading: dict[str, Any]) -> None:
    """Grade one chunk's generations and append them to the store (the only place anything is written)."""
    n = task.sampling.n
    if [len(g) for g in generations] != [n] * len(chunk):
        raise RuntimeError(f"backend returned {[len(g) for g in generations]} samples for "
                           f"{len(chunk)} problems of {task.name}, expected {n} each")
    flat = [g for gens in generations for g in gens]
    grades, preds = _grade_finished(task, flat, [p.answer for p in chunk for _ in range(n)], grading)
    records = []
    for k, (p, gens) in enumerate(zip(chunk, generations)):
        part = slice(k * n, (k + 1) * n)
        records += _records(ckpt, task, p, gens, grades[part], preds[part])
    store.append(records)
