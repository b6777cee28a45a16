"""Data-parallel evaluation on a local Ray cluster: two transformers replicas (real actor processes)
give the same results and summary as one process, and a replica that dies mid-run is replaced with
nothing lost or duplicated; a run that runs out of restarts resumes from the results file."""

import json

import pytest
import torch
from _tiny_model import build_tiny_model

from scope_bench.eval import evaluate
from scope_bench.eval.parallel import CRASH_ENV, ReplicaSpec, check_resources

ray = pytest.importorskip("ray")
torch.set_num_threads(1)
N_PROBLEMS = 8  # 4 chunks of 2: each of the 2 replicas gets two


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny checkpoint, a synthetic benchmark file, and a local Ray cluster for the whole module."""
    root = tmp_path_factory.mktemp("dp")
    ckpt = build_tiny_model(root / "tiny")
    data = root / "synthetic.jsonl"
    rows = [{"id": f"p{i}", "question": f"What is {i} + {2 * i}?", "answer": str(3 * i)} for i in range(N_PROBLEMS)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ckpt, data
    ray.shutdown()


def run(setup, out, **kw):
    ckpt, data = setup
    return evaluate(str(ckpt), "synthetic", backend="hf", out_dir=out, data_paths={"synthetic": str(data)}, n=2,
                    temperature=0.0, max_tokens=6, chunk_size=2, progress=False, grading_workers=1,
                    backend_kwargs={"batch_size": 4, "device": "cpu"}, **kw)


def results(out):
    return sorted((r["problem_id"], r["sample"], r["response"], r["correct"], r["finish_reason"])
                  for r in map(json.loads, (out / "results.jsonl").read_text().splitlines()))


def without_time(summary):
    return {k: v for k, v in summary.items() if k != "created"}


def test_replicas_equal_one_process_through_a_crash_and_a_resume(setup, tmp_path, monkeypatch, capfd):
    single = run(setup, tmp_path / "single")
    expected = results(tmp_path / "single")
    assert len(expected) == 2 * N_PROBLEMS

    # replica 1 exits its process on its 2nd chunk and no restart is allowed: the run stops after
    # storing replica 0's two chunks (and replica 1's first, if its reply left before the crash)
    monkeypatch.setenv(CRASH_ENV, "1:2")
    with pytest.raises(RuntimeError, match="no restart left"):
        run(setup, tmp_path / "dp", dp=2, replica_restarts=0)
    kept = len((tmp_path / "dp" / "results.jsonl").read_text().splitlines())
    assert 2 * 4 <= kept <= 2 * 6

    # the rerun resumes; this time replica 0 dies on its first chunk and a fresh one takes its place
    monkeypatch.setenv(CRASH_ENV, "0:1")
    resumed = run(setup, tmp_path / "dp", dp=2)
    assert "replica 0 died" in capfd.readouterr().err
    assert results(tmp_path / "dp") == expected  # sorted equal, so no sample is missing or there twice
    assert without_time(resumed) == without_time(single)


def test_a_cluster_too_small_is_refused_not_left_hanging():
    spec = ReplicaSpec("vllm", "m", {"tensor_parallel_size": 2}, dp=8)
    with pytest.raises(RuntimeError, match="--dp 8 needs 16 GPUs .* has 4"):
        check_resources(spec, {"CPU": 64, "GPU": 4})
    check_resources(ReplicaSpec("hf", "m", {}, dp=2), {"CPU": 2})
