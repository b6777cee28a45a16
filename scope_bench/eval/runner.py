"""`evaluate`: generate, grade and store every sample of the chosen tasks, then write the summary.

Flow per task: load problems -> skip those already complete in results.jsonl -> for each chunk of
problems, generate all their samples in one backend call, grade them, append them -> score from the
store. The model is loaded only if something is left to generate.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from scope_bench.eval.backends import UNFINISHED, Backend, make_backend
from scope_bench.eval.checks import check_checkpoint
from scope_bench.eval.chunk import requests_for, store_chunk
from scope_bench.eval.data import NoLocalCopy, Problem, fingerprint, load_problems
from scope_bench.eval.metrics import group_scores, task_metrics
from scope_bench.eval.protocol import DEFAULT_PROTOCOL, apply_protocol, protocol_record
from scope_bench.eval.store import ResultStore
from scope_bench.eval.tasks import Task, load_groups, load_task, resolve_task_names
from scope_bench.identity import checkpoint_label, checkpoint_run, run_identity

RESULTS_FILE = "results.jsonl"
SUMMARY_FILE = "summary.json"
SETTINGS_FILE = "settings.json"


def default_label(ckpt: str) -> str:
    """The checkpoint's name: from its training run ("scope-seed0", "scope-seed0-step_20") when it lies
    in one, so two runs' final/ folders never share a label, else its folder (or .gguf file) name."""
    run = checkpoint_run(ckpt)
    if run is not None:
        return checkpoint_label(ckpt, run)
    path = Path(ckpt)
    name = path.stem if path.suffix == ".gguf" else path.name
    return name or str(ckpt).strip("/").replace("/", "_")


def _grading_record() -> dict:
    """Which rules graded the run: the grader's version and its (default) policy, as the reward's."""
    from scope_bench.grading.policy import grading_record

    return grading_record()


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("scope-bench", "torch", "transformers", "vllm", "datasets", "math-verify"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def _check_settings(out_dir: Path, settings: dict[str, Any], store: ResultStore, ckpt: str) -> None:
    """Refuse to mix samples drawn under different settings in one results file."""
    path = out_dir / SETTINGS_FILE
    old = json.loads(path.read_text()) if path.exists() else {}
    for task, now in settings.items():
        before = old.get(task)
        has_results = any(k[0] == ckpt and k[1] == task for k in store.records)
        if before is not None and before != now and has_results:
            changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
            raise ValueError(f"{out_dir / RESULTS_FILE}: task '{task}' has results drawn with other settings "
                             f"({', '.join(changed)} changed); rerun with --force or use another --out")
    old.update(settings)
    out_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(old, indent=2, sort_keys=True))


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False))
    os.replace(tmp, path)


def _run_task(engine: Backend, ckpt: str, task: Task, todo: list[Problem], total: int, store: ResultStore, *,
              fmt: str, seed: int, chunk_size: int, progress: bool, grading: dict[str, Any]) -> float:
    """Generate, grade and store the samples of `todo`, a chunk at a time; returns generation seconds."""
    from tqdm.auto import tqdm

    gen_seconds = 0.0
    with tqdm(total=total, initial=total - len(todo), desc=task.name, unit="problem",
              disable=not progress) as bar:
        for start in range(0, len(todo), chunk_size):
            chunk = todo[start:start + chunk_size]
            t0 = time.perf_counter()
            generations = engine.generate(requests_for(task, chunk, fmt, seed))
            gen_seconds += time.perf_counter() - t0
            store_chunk(ckpt, task, chunk, generations, store, grading)
            bar.update(len(chunk))
    return gen_seconds


def _generate(work: list[tuple[Task, list[Problem]]], backend: str | Backend, ckpt: str, store: ResultStore, *,
              fmt: str, seed: int, chunk_size: int, progress: bool, backend_kwargs: dict[str, Any],
              grading: dict[str, Any], totals: dict[str, int],
              replicas: tuple[int, str | None, int]) -> tuple[str, float]:
    """Draw, grade and store the unfinished problems of `work`, in this process or on Ray replicas
    (`replicas`: dp, Ray address, restarts); the model loads only if there is work. Returns the
    prompt format used and the seconds spent generating."""
    dp, ray_address, restarts = replicas
    if not work:
        return fmt, 0.0
    if dp > 1 or ray_address:
        from scope_bench.eval.parallel import ReplicaSpec, run_replicas

        spec = ReplicaSpec(str(backend), ckpt, backend_kwargs, dp, ray_address, restarts)
        return run_replicas(spec, work, store, ckpt=ckpt, fmt=fmt, seed=seed, chunk_size=chunk_size,
                            grading=grading, progress=progress)
    engine = backend if not isinstance(backend, str) else make_backend(backend, ckpt, **backend_kwargs)
    if fmt == "auto":
        fmt = "chat" if engine.has_chat_template() else "raw"
    seconds = 0.0
    for task, todo in work:
        seconds += _run_task(engine, ckpt, task, todo, totals[task.name], store, fmt=fmt, seed=seed,
                             chunk_size=chunk_size, progress=progress, grading=grading)
    return fmt, seconds


def evaluate(ckpt: str, tasks: str | list[str] = "all", *, backend: str | Backend = "hf",
             out_dir: str | Path | None = None, label: str | None = None,
             data_dir: str | Path | None = None, data_paths: dict[str, str] | None = None,
             limit: int | None = None, n: int | None = None, max_tokens: int | None = None,
             temperature: float | None = None, top_p: float | None = None, seed: int = 0,
             prompt_format: str = "auto", force: bool = False, chunk_size: int = 64,
             grading_timeout_s: float = 5.0, grading_workers: int | None = None,
             backend_kwargs: dict[str, Any] | None = None, tasks_dir: str | Path | None = None,
             progress: bool = True, timings: dict[str, float] | None = None, protocol: str = DEFAULT_PROTOCOL,
             dp: int = 1, ray_address: str | None = None, replica_restarts: int = 3,
             method: str | None = None, backbone: str | None = None) -> dict:
    """Evaluate `ckpt` on `tasks` (names or groups, comma-separated) and return the summary dict.

    Results go to `out_dir` (default runs/eval/<label>/) as results.jsonl and summary.json; a rerun
    resumes where the last one stopped unless `force`. `protocol` (protocol.py; default LUFFY's
    temperature 0.6, top_p 1.0, 8,192 tokens) sets the paper's benchmarks' sampling; `n`,
    `max_tokens`, `temperature`, `top_p` then override every task's; `limit` keeps the first problems
    of each task. `backend` is "hf", "vllm", "openai" or a ready object with
    `generate`/`has_chat_template`. `dp` > 1 or a `ray_address` runs that many replicas of the named
    backend as Ray actors (parallel.py), restarting a dead one up to `replica_restarts` times.
    `method` and `backbone` (default: those of the checkpoint's training run) go into the summary.
    `timings`, if given, receives seconds spent in generation and in total."""
    if prompt_format not in ("auto", "chat", "raw"):
        raise ValueError(f"prompt format must be auto, chat or raw, got {prompt_format!r}")
    t_start = time.perf_counter()
    label = label or default_label(ckpt)
    identity = checkpoint_identity(ckpt, method, backbone)
    out = Path(out_dir) if out_dir is not None else Path("runs") / "eval" / label
    data_paths = dict(data_paths or {})
    names = resolve_task_names(tasks, tasks_dir)
    if not names:
        raise ValueError("no tasks given")
    if isinstance(backend, str):  # a missing checkpoint folder fails now, not as a Hub id error later
        check_checkpoint(ckpt, backend)
    overrides = {"n": n, "max_tokens": max_tokens, "temperature": temperature, "top_p": top_p}
    # unknown task or protocol names fail here, before any work
    loaded, protocols = apply_protocol([load_task(name, tasks_dir) for name in names], protocol, overrides,
                                       tasks_dir)
    if dp < 1:
        raise ValueError(f"--dp must be at least 1, got {dp}")
    if (dp > 1 or ray_address) and not isinstance(backend, str):
        raise ValueError("data-parallel evaluation (dp > 1 or a Ray address) needs a backend name, "
                         "not an object")
    unknown = set(data_paths) - set(names)
    if unknown:
        raise ValueError(f"--data given for tasks not being evaluated: {sorted(unknown)}")

    problems: dict[str, list[Problem]] = {}
    origins: dict[str, str] = {}
    full_prints: dict[str, str] = {}  # of the whole benchmark, so --limit can change between reruns
    skipped: dict[str, str] = {}
    for task in loaded:
        try:
            rows, origins[task.name] = load_problems(task, data_dir, data_paths.get(task.name))
            full_prints[task.name] = fingerprint(rows)
            problems[task.name] = rows[:limit] if limit is not None else rows
        except NoLocalCopy as err:
            skipped[task.name] = str(err)
            print(f"scope-bench eval: skipping {task.name}: {err}", file=sys.stderr)
    runnable = [t for t in loaded if t.name in problems]
    if not runnable:
        raise FileNotFoundError(f"none of the tasks can run: {skipped}")

    out.mkdir(parents=True, exist_ok=True)
    if force:
        for f in (RESULTS_FILE, SUMMARY_FILE, SETTINGS_FILE):
            (out / f).unlink(missing_ok=True)
    store = ResultStore(out / RESULTS_FILE)
    settings = {t.name: {**t.sampling.to_dict(), "seed": seed, "prompt_format": prompt_format,
                         "data_fingerprint": full_prints[t.name]} for t in runnable}
    _check_settings(out, settings, store, ckpt)  # before anything in the store is touched
    store.drop_incomplete({t.name: t.sampling.n for t in runnable})

    pending = {t.name: [p for p in problems[t.name] if not store.is_done(ckpt, t.name, p.id, t.sampling.n)]
               for t in runnable}
    work = [(t, pending[t.name]) for t in runnable if pending[t.name]]
    fmt, gen_seconds = _generate(work, backend, ckpt, store, fmt=prompt_format, seed=seed, chunk_size=chunk_size,
                                 progress=progress, backend_kwargs=backend_kwargs or {},
                                 grading={"timeout_s": grading_timeout_s, "workers": grading_workers},
                                 totals={t.name: len(problems[t.name]) for t in runnable},
                                 replicas=(dp, ray_address, replica_restarts))

    summary = summarize(ckpt, label, runnable, problems, origins, store, seed=seed, prompt_format=fmt,
                        skipped=skipped, groups=load_groups(tasks_dir), protocols=protocols,
                        protocol=protocol_record(protocol, overrides), identity=identity)
    _write_json(out / SUMMARY_FILE, summary)
    if timings is not None:
        timings.update(generation_s=gen_seconds, total_s=time.perf_counter() - t_start)
    return summary


def checkpoint_identity(ckpt: str, method: str | None = None, backbone: str | None = None) -> dict:
    """`method` and `backbone` for summary.json: as given, else from the checkpoint's training run
    (its config.yaml), else null (reports then guess the method from the label, and say so)."""
    run = checkpoint_run(ckpt)
    known = (run_identity(run) if run is not None else None) or {}
    return {"method": method or known.get("method"), "backbone": backbone or known.get("backbone"),
            "training_run": str(run) if run is not None else None}


def summarize(ckpt: str, label: str, tasks: list[Task], problems: dict[str, list[Problem]],
              origins: dict[str, str], store: ResultStore, *, seed: int, prompt_format: str,
              skipped: dict[str, str], groups: dict[str, list[str]], protocols: dict[str, str] | None = None,
              protocol: dict | None = None, identity: dict | None = None) -> dict:
    """The summary.json of the contract, scored from the stored results. Each task's sampling names
    its protocol (`protocols`, labels from protocol.py) and `finish_reasons` counts its samples by how
    they ended: "abort"/"error" samples are scored 0, never graded."""
    per_task: dict[str, dict] = {}
    for task in tasks:
        n = task.sampling.n
        correct, reasons = [], Counter()
        for p in problems[task.name]:
            have = store.samples(ckpt, task.name, p.id)
            correct.append([int(have[j]["correct"]) for j in range(n)])
            reasons.update(str(have[j].get("finish_reason")) for j in range(n))
        entry = task_metrics(correct, task.metric)
        entry["sampling"] = {**task.sampling.to_dict(), "seed": seed, "prompt_format": prompt_format,
                             "protocol": (protocols or {}).get(task.name, "unrecorded")}
        entry["finish_reasons"] = dict(sorted(reasons.items()))
        entry["task_version"] = task.version  # reports flag a score made under another definition
        entry["data_fingerprint"] = fingerprint(problems[task.name])
        entry["data_source"] = origins[task.name]
        if task.answer_kind == "choice" and task.shuffle_seed is not None:
            entry["options_shuffle_seed"] = task.shuffle_seed
        per_task[task.name] = entry
    return {
        "label": label, "checkpoint": ckpt, **(identity or {}),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": versions(), "seed": seed, "protocol": protocol or {},
        "grading": _grading_record(),  # the grader's version and policy (docs/grading.md)
        "tasks": per_task,
        "groups": group_scores({t: v["score"] for t, v in per_task.items()}, groups),
        "skipped": skipped,
    }


def format_summary(summary: dict) -> str:
    """A short table for the terminal."""
    rows = [f"{'task':<14} {'metric':<8} {'score':>6}  problems"]
    for name, t in summary["tasks"].items():
        rows.append(f"{name:<14} {t['metric']:<8} {t['score']:6.1f}  {t['n_problems']}")
    for name, g in summary["groups"].items():
        rows.append(f"{name:<14} {'mean':<8} {g['score']:6.1f}  ({len(g['tasks'])} tasks)")
    for name, t in summary["tasks"].items():
        gave_up = {k: v for k, v in t.get("finish_reasons", {}).items() if k in UNFINISHED}
        if gave_up:
            rows.append(f"{name:<14} {sum(gave_up.values())} samples not finished by the engine {gave_up}: "
                        "scored 0; a rerun draws them again")
    for name, why in summary.get("skipped", {}).items():
        rows.append(f"{name:<14} skipped: {why}")
    return "\n".join(rows)

