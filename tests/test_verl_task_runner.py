"""The task runner as the launcher creates it: a real Ray actor (regression: verl's TaskRunner calls
zero-argument `super().__init__()`, which failed in the actor process for the subclass)."""

from __future__ import annotations

import pytest

pytest.importorskip("verl", reason="verl is installed by the test command (pip install -e .[verl])")

import ray


def test_scope_task_runner_starts_as_a_ray_actor():
    from scope_bench.engines.verl.trainer import ScopeTaskRunner

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        runner = ScopeTaskRunner.remote()  # what verl's run_ppo does with task_runner_class
        state = ray.get(runner.__ray_call__.remote(
            lambda self: (self.role_worker_mapping, self.mapping, type(self).__mro__[1].__name__)))
        assert state == ({}, {}, "_ScopeTaskRunner")
    finally:
        ray.shutdown()
