"""Coverage of the verdicts' 95% interval in simulated demos (the table in docs/verdicts.md).

    .venv/bin/python benchmarks/bench_verdict_coverage.py              # 150 simulated demos per row (minutes)
    .venv/bin/python benchmarks/bench_verdict_coverage.py --runs 40    # a quick look

Greedy correctness per (seed, problem) from a logistic model: problem difficulty (sd 1.5), the
trained method's gain `delta` plus a per-problem effect of training (`sd_eta`) and a seed effect
(`tau`, for every trained method), and a per-(seed, problem) term (sd 0.7). The baseline is either
the shared warm start (evaluated once) or another trained method. The true difference is the
population one, by Monte Carlo. Prints, per row, the share of intervals that cover it and the median
Satterthwaite degrees of freedom.
"""

from __future__ import annotations

import argparse

import numpy as np

from scope_bench.analysis.verdicts import Comparison, paired_test

ROWS = [  # seeds, problems, tau, delta, sd_eta, warm start shared
    (3, 256, 0.0, 0.2, 0.5, True), (3, 256, 0.3, 0.2, 0.5, True), (3, 256, 0.1, 0.3, 0.0, True),
    (3, 256, 0.3, 0.2, 0.5, False), (3, 128, 0.6, 0.2, 0.5, False), (5, 256, 0.3, 0.2, 1.0, False)]


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def demo(rng, seeds, problems, tau, delta, sd_eta, shared) -> tuple[dict, dict]:
    difficulty, eta = rng.normal(0, 1.5, problems), rng.normal(0, sd_eta, problems)

    def runs(shift, extra, seed_keys):
        return {s: {p: 100.0 * (rng.random() < q) for p, q in enumerate(
            sigmoid(difficulty + shift + extra + rng.normal(0, tau if s is not None else 0) + rng.normal(0, 0.7, problems)))}
            for s in seed_keys}

    trained = runs(delta, eta, range(seeds))
    base = runs(0.0, 0.0, [None] if shared else range(seeds))
    return trained, base


def truth(rng, tau, delta, sd_eta, n=400_000) -> float:
    d, e = rng.normal(0, 1.5, n), rng.normal(0, sd_eta, n)
    return 100 * float(sigmoid(d + delta + e + rng.normal(0, tau, n) + rng.normal(0, 0.7, n)).mean()
                       - sigmoid(d + rng.normal(0, 0.7, n)).mean())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=150)
    args = p.parse_args()
    rng = np.random.default_rng(0)
    c = Comparison("a", "b", "id/pass@1")
    print("seeds x problems  tau  delta  sd_eta  shared  true diff  coverage  median df")
    for seeds, problems, tau, delta, sd_eta, shared in ROWS:
        true = truth(rng, tau, delta, sd_eta)
        covered, dfs = 0, []
        for i in range(args.runs):
            r = paired_test(*demo(rng, seeds, problems, tau, delta, sd_eta, shared), c, n_boot=2000, rng_seed=i)
            covered += r.low <= true <= r.high
            dfs.append(r.df)
        print(f"{seeds:>5} x {problems:<9} {tau:>4} {delta:>6} {sd_eta:>7} {shared!s:>7} {true:>9.2f} "
              f"{covered / args.runs:>9.2f} {np.median(dfs):>10.1f}", flush=True)


if __name__ == "__main__":
    main()
