"""The embedded default's full run: `scope-bench train --method M` with no other arguments (synthetic
task, warm-started tiny model, rule-based PRM, programmatic refiner), run as a user would, in a child
process. Prints wall time and peak memory (max RSS of the child). Targets: under 5 minutes and
under 2 GB on 2 cores. The cached warm start is built first and not counted.

    .venv/bin/python benchmarks/bench_train_full.py [--method scope] [KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="scope")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()

    from scope_bench.synthetic import warm_start_model

    warm_start_model()  # cached; a first build takes a few minutes and is not part of the run
    run_dir = tempfile.mkdtemp(prefix=f"bench-full-{args.method}-")
    cmd = [sys.executable, "-m", "scope_bench.cli", "train", "--method", args.method, "--run-dir", run_dir,
           *args.overrides]
    start = time.perf_counter()
    proc = subprocess.run(cmd, check=False)
    wall = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB on Linux
    print(f"\n{' '.join(cmd[1:])}\nexit {proc.returncode}; wall {wall:.0f} s ({wall / 60:.1f} min, target < 5); "
          f"peak RSS {peak_mb:.0f} MB (target < 2048); run dir {run_dir}")


if __name__ == "__main__":
    main()
