"""pass@k against brute force, Avg@k, and group means."""

import itertools
import random

import pytest

from scope_bench.eval.metrics import group_scores, pass_at_k, task_metrics


def brute_pass_at_k(grades, k):
    subsets = list(itertools.combinations(grades, k))
    return sum(any(s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", [1, 2, 5, 8])
def test_pass_at_k_matches_enumeration(n):
    rng = random.Random(n)
    for _ in range(10):
        grades = [rng.random() < 0.4 for _ in range(n)]
        for k in range(1, n + 1):
            assert pass_at_k(n, sum(grades), k) == pytest.approx(brute_pass_at_k(grades, k))


def test_pass_at_k_edges():
    assert pass_at_k(32, 0, 1) == 0.0
    assert pass_at_k(32, 32, 1) == 1.0
    assert pass_at_k(32, 8, 1) == pytest.approx(0.25)
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 5)


def test_task_metrics_avg_and_pass():
    correct = [[1, 0, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]]
    m = task_metrics(correct, "avg@32")
    assert m["metric"] == "avg@4"  # labelled by the samples actually drawn
    assert m["score"] == pytest.approx(100 * (0.25 + 1 + 0) / 3)
    assert m["accuracy"] == m["score"] == pytest.approx(m["pass@k"]["1"])
    assert m["pass@k"]["4"] == pytest.approx(100 * 2 / 3)
    expected2 = 100 * (brute_pass_at_k([1, 0, 0, 0], 2) + 1 + 0) / 3
    assert m["pass@k"]["2"] == pytest.approx(expected2)
    p = task_metrics([[1], [0], [1], [1]], "pass@1")
    assert (p["metric"], p["score"], p["n_problems"], p["samples_per_problem"]) == ("pass@1", 75.0, 4, 1)
    with pytest.raises(ValueError):
        task_metrics([[1, 0], [1]], "avg@2")


def test_group_scores_are_unweighted_means():
    groups = {"math-id": ["a", "b", "c"], "ood": ["x"], "all": ["a", "b", "c", "x"]}
    out = group_scores({"a": 10.0, "b": 20.0, "x": 90.0}, groups)
    assert out["math-id"] == {"score": 15.0, "tasks": ["a", "b"], "missing": ["c"]}
    assert out["all"]["score"] == pytest.approx(40.0)
    assert "ood" in out and group_scores({"a": 1.0}, groups).keys() == {"math-id", "all"}
