"""A grading worker process (started by `batch.GradingPool`): Math-Verify on one item at a time.

Protocol: one JSON task `{"i", "pred", "gold"}` per stdin line, one JSON verdict `{"i", "ok"}` (plus
`"error"` when grading raised) per stdout line, after a first `{"ready": true}` line. It has no
timeout of its own: the parent kills it when an item overruns.
"""

from __future__ import annotations

import gc
import json
import os
import sys

from scope_bench.grading.equivalence import quiet_math_verify, verify_slow


def main() -> None:
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # stray prints from sympy or latex2sympy must not corrupt the protocol
    quiet_math_verify()
    import math_verify  # noqa: F401 - pay the import before saying ready

    # sympy and ANTLR allocate many small objects that live as long as the worker (the modules, the
    # parser's DFA, the parse caches): keep the cyclic collector off what is already there and let it
    # run less often (about a tenth of the slow path's time otherwise)
    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)
    protocol.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        task = json.loads(line)
        try:
            reply = {"i": task["i"], "ok": bool(verify_slow(task["pred"], task["gold"]))}
        except Exception as err:  # noqa: BLE001 - reported as this item's error, the worker goes on
            reply = {"i": task["i"], "ok": False, "error": repr(err)[:300]}
        protocol.write(json.dumps(reply) + "\n")


if __name__ == "__main__":
    main()
