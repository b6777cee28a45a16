"""Data-parallel evaluation: N replicas of a backend as Ray actors, one writer on the driver.

Why this shape: a 7B model is fastest as one engine per GPU (`--dp 8 --tp 1`), not one
tensor-parallel engine over all of them, and the harnesses that offer data parallelism have open
reports of hangs; Ray actors fail loudly (a dead actor raises on the driver) instead of hanging.

- Each replica builds its own backend (`make_backend`: a vLLM engine with its own `tp` GPUs, or a
  transformers model) and only generates; it never touches the results file.
- The driver splits each task's unfinished problems into chunks and hands them out from one queue as
  replicas free up (two in flight per replica, so a replica never idles while the driver grades).
  Each finished chunk is graded and appended on the driver, the store's only writer, so there are no
  file races and a kill at any moment leaves the same resumable file a single process would.
- A replica that dies (process crash, `ray.kill`, a lost node) raises on the driver: its chunks go
  back on the queue and a fresh replica takes its place, up to `restarts` times; after that the live
  replicas' chunks are still stored, the run stops, and a rerun resumes from the store. Samples depend only on (prompt, seed, sample index), so
  which replica drew a chunk, and when, does not change the results.
- Resources are checked before any actor starts: asking for more GPUs or CPUs than the cluster has
  fails at once instead of leaving actors pending forever.

Test hook: SCOPE_EVAL_DP_CRASH="R:K" makes replica R exit its process (os._exit) at its K-th
generate call, in its first incarnation only; tests/test_eval_dp.py uses it to kill a replica mid-run.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from scope_bench.eval.backends import GenerationRequest, make_backend
from scope_bench.eval.chunk import requests_for, store_chunk
from scope_bench.eval.data import Problem
from scope_bench.eval.store import ResultStore
from scope_bench.eval.tasks import Task

CRASH_ENV = "SCOPE_EVAL_DP_CRASH"
IN_FLIGHT = 2  # chunks queued per replica


@dataclasses.dataclass(frozen=True)
class ReplicaSpec:
    backend: str  # hf, vllm or openai
    ckpt: str
    backend_kwargs: dict[str, Any]
    dp: int = 1
    ray_address: str | None = None  # None: a local Ray started here (and stopped at the end)
    restarts: int = 3  # replicas that may die before the run gives up
    gpu: bool = True  # False: vLLM's CPU build on a cluster without GPUs (run_replicas decides)

    def resources(self) -> dict[str, float]:
        """What one replica reserves: `tp` GPUs for vLLM (none with its CPU build), one GPU for a
        transformers model on cuda, one CPU otherwise."""
        if self.backend == "vllm":
            return {"num_cpus": 1, "num_gpus": int(self.backend_kwargs.get("tensor_parallel_size", 1)) * self.gpu}
        if self.backend == "hf" and str(self.backend_kwargs.get("device") or "").startswith("cuda"):
            return {"num_cpus": 1, "num_gpus": 1}
        return {"num_cpus": 1, "num_gpus": 0}


class Replica:
    """One backend in its own process. `crash_at` (the test hook) exits the process at that call."""

    def __init__(self, spec: ReplicaSpec, crash_at: int | None = None):
        cpus = int(spec.resources()["num_cpus"])
        if spec.backend == "hf":
            import torch

            torch.set_num_threads(cpus)  # replicas share the machine: no oversubscription
        kwargs = dict(spec.backend_kwargs)
        if spec.backend == "vllm" and kwargs.get("tensor_parallel_size", 1) > 1:
            # the actor already holds its tp GPUs (CUDA_VISIBLE_DEVICES); vLLM's Ray executor would ask
            # the cluster for tp more and wait forever, its multiprocessing one uses the actor's own
            kwargs.setdefault("distributed_executor_backend", "mp")
        self.engine = make_backend(spec.backend, spec.ckpt, **kwargs)
        self.calls, self.crash_at = 0, crash_at

    def has_chat_template(self) -> bool:
        return self.engine.has_chat_template()

    def generate(self, requests: list[GenerationRequest]) -> list[list]:
        self.calls += 1
        if self.calls == self.crash_at:
            os._exit(1)
        return self.engine.generate(requests)


def _crash_at(replica: int) -> int | None:
    raw = os.environ.get(CRASH_ENV, "")
    index, _, call = raw.partition(":")
    return int(call) if raw and int(index) == replica else None


def _start_ray(spec: ReplicaSpec) -> bool:
    """Connect to the cluster, or start a local one sized to fit the replicas; True if started here."""
    try:
        import ray
    except ImportError as err:
        raise ImportError("--dp and --ray-address need Ray: pip install 'ray[default]' "
                          "(it comes with scope-bench[verl])") from err

    if ray.is_initialized():
        return False
    if spec.ray_address:
        ray.init(address=spec.ray_address, log_to_driver=False)
    else:  # a CPU machine with fewer cores than replicas still runs them (slowly) instead of hanging
        need = spec.dp * spec.resources()["num_cpus"]
        ray.init(num_cpus=max(os.cpu_count() or 1, int(need)), log_to_driver=False, include_dashboard=False)
    return True


def check_resources(spec: ReplicaSpec, available: dict[str, float]) -> None:
    """Refuse a run the cluster cannot hold, naming what is missing (Ray would wait forever)."""
    per = spec.resources()
    for key, ray_key in (("num_gpus", "GPU"), ("num_cpus", "CPU")):
        need, have = spec.dp * per[key], available.get(ray_key, 0)
        if need > have:
            raise RuntimeError(f"--dp {spec.dp} needs {need:g} {ray_key}s ({per[key]:g} per replica) but the "
                               f"Ray cluster has {have:g}; lower --dp or --tp, or add nodes")


class _Pool:
    """The replicas and what each has in flight; replaces a dead one, counting restarts."""

    def __init__(self, spec: ReplicaSpec):
        import ray

        self.spec, self.restarts = spec, 0
        self.actor_cls = ray.remote(Replica).options(**spec.resources(), max_restarts=0)
        self.actors = [self.actor_cls.remote(spec, _crash_at(i)) for i in range(spec.dp)]
        self.in_flight: dict[Any, tuple[int, Any]] = {}  # object ref -> (replica, work item)

    def load(self, replica: int) -> int:
        return sum(1 for r, _ in self.in_flight.values() if r == replica)

    def replace(self, replica: int) -> list[Any]:
        """Start a fresh replica in place of a dead one; returns the other items it had in flight."""
        import ray

        self.restarts += 1
        lost = [ref for ref, (r, _) in self.in_flight.items() if r == replica]
        items = [self.in_flight.pop(ref)[1] for ref in lost]
        ray.kill(self.actors[replica])
        self.actors[replica] = self.actor_cls.remote(self.spec, None)
        return items

    def drive(self, queue: deque, requests: Callable, on_result: Callable) -> None:
        """Hand out `queue` breadth first (one item per replica, then a second) and pass each result to
        `on_result` as it arrives. A dead replica's items go back on the queue for a fresh replica;
        once no restart is left, nothing new is handed out, the live replicas' results are still
        stored, and then the run stops."""
        import ray
        from ray.exceptions import RayActorError

        gave_up = False
        while self.in_flight or (queue and not gave_up):
            for depth, replica in itertools.product(range(1, IN_FLIGHT + 1), range(self.spec.dp)):
                if queue and not gave_up and self.load(replica) < depth:
                    item = queue.popleft()
                    self.in_flight[self.actors[replica].generate.remote(requests(item))] = (replica, item)
            [ref], _ = ray.wait(list(self.in_flight), num_returns=1)
            replica, item = self.in_flight.pop(ref)
            try:
                result = ray.get(ref)
            except RayActorError as err:
                if not gave_up:
                    gave_up = self.restarts >= self.spec.restarts
                    print(f"scope-bench eval: replica {replica} died ({type(err).__name__}); " + (
                        "no restart left: storing what the others finish, then stopping" if gave_up else
                        f"restart {self.restarts + 1} (at most {self.spec.restarts}) takes its chunks"),
                        file=sys.stderr)
                    if not gave_up:
                        queue.extendleft(reversed([item, *self.replace(replica)]))
                continue
            on_result(item, result)
        if gave_up:
            raise RuntimeError(f"a replica died with no restart left ({self.restarts} used); finished problems "
                               "are in the results file and a rerun resumes from there")

    def close(self) -> None:
        import ray

        for actor in self.actors:
            ray.kill(actor)


Work = list[tuple[Task, list[Problem]]]


def _chunks(work: Work, chunk_size: int, dp: int) -> Work:
    """Each task's problems in chunks of at most `chunk_size`, and at least `dp` chunks when there are
    enough problems, so that a small task (AIME's 30) still keeps every replica busy."""
    out = []
    for task, todo in work:
        size = max(1, min(chunk_size, -(-len(todo) // dp)))
        out += [(task, todo[i:i + size]) for i in range(0, len(todo), size)]
    return out


def run_replicas(spec: ReplicaSpec, work: Work, store: ResultStore, *, ckpt: str,
                 fmt: str, seed: int, chunk_size: int, grading: dict[str, Any],
                 progress: bool) -> tuple[str, float]:
    """Generate `work` (task, unfinished problems) on `spec.dp` replicas and store every graded chunk
    as it arrives. Returns the prompt format used and the wall seconds spent generating."""
    from tqdm.auto import tqdm

    started = _start_ray(spec)  # first: it names the package if Ray is missing
    import ray

    pool = None
    try:
        if spec.backend == "vllm" and not ray.cluster_resources().get("GPU"):
            print("scope-bench eval: the Ray cluster has no GPU: vLLM replicas run on its CPU build",
                  file=sys.stderr)
            spec = dataclasses.replace(spec, gpu=False)
        check_resources(spec, ray.cluster_resources())
        pool = _Pool(spec)
        templates = ray.get([a.has_chat_template.remote() for a in pool.actors])  # every replica loaded
        if fmt == "auto":
            fmt = "chat" if templates[0] else "raw"
        queue = deque(_chunks(work, chunk_size, spec.dp))
        t0 = time.perf_counter()
        with tqdm(total=sum(len(todo) for _, todo in work), desc=f"eval x{spec.dp}", unit="problem",
                  disable=not progress) as bar:

            def on_result(item: tuple[Task, list[Problem]], generations: list[list]) -> None:
                store_chunk(ckpt, item[0], item[1], generations, store, grading)
                bar.update(len(item[1]))

            pool.drive(queue, lambda item: requests_for(item[0], item[1], fmt, seed), on_result)
        return fmt, time.perf_counter() - t0
    finally:
        if pool is not None:
            pool.close()
        if started:
            ray.shutdown()
