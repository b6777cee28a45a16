"""Time the Table 4 diversity block: fast `diversity_metrics` vs the reference libraries.

Workload as in the paper: 30 prompts x 32 samples of about 500 words. Samples are built from real
MATH-500 solutions (../shared/data, fallback: a seeded synthetic vocabulary): each sample of a prompt
starts from that prompt's solution with some sentences dropped, then continues with sentences from
other solutions, so samples of one prompt overlap as real policy samples do.

The reference is what a user would write: `sacrebleu.sentence_bleu` of each sample against the other
k-1, and `RougeScorer(['rougeL']).score` for every ordered pair. Its self-ROUGE takes about an hour
for the full block, so by default it runs on `--ref-prompts` prompts and the full time is extrapolated
(printed as such); `--ref-prompts 30` measures it all.

    .venv/bin/python benchmarks/bench_diversity.py [--prompts 30 --samples 32 --words 500 --ref-prompts 2]
"""

from __future__ import annotations

import argparse
import json
import random
import time

from scope_bench.analysis.diversity import diversity_metrics
from scope_bench.paths import SHARED_DATA_DIR


def load_texts() -> list[str]:
    path = SHARED_DATA_DIR / "benchmarks" / "qwen" / "math500.jsonl"
    if path.exists():
        return [json.loads(line)["solution"] for line in path.open()]
    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(3000)] + list("=+-()$\\{}.,")
    return [" ".join(rng.choice(vocab) for _ in range(rng.randint(40, 200))) + "." for _ in range(500)]


def make_block(n_prompts: int, k: int, words: int, seed: int = 0) -> list[list[str]]:
    """`n_prompts` groups of `k` samples, each about `words` whitespace words."""
    rng = random.Random(seed)
    texts = load_texts()
    sentences = [s for t in texts for s in t.split(". ") if s.strip()]
    block = []
    for p in range(n_prompts):
        base = texts[p % len(texts)].split(". ")
        group = []
        for _ in range(k):
            parts = [s for s in base if rng.random() > 0.3]
            while sum(len(s.split()) for s in parts) < words:
                parts.append(rng.choice(sentences))
            sample = " ".join(". ".join(parts).split()[:words])
            group.append(sample)
        block.append(group)
    return block


def reference_metrics(samples: list[str]) -> dict[str, float]:
    """The straightforward computation with sacrebleu and rouge-score (self-BLEU and self-ROUGE)."""
    from rouge_score import rouge_scorer
    from sacrebleu import sentence_bleu

    k = len(samples)
    bleu = [sentence_bleu(samples[i], samples[:i] + samples[i + 1 :]).score for i in range(k)]
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    rouge = [
        scorer.score(samples[j], samples[i])["rougeL"].fmeasure
        for i in range(k) for j in range(k) if i != j
    ]
    return {"1-self-bleu": 1 - sum(bleu) / k / 100, "1-self-rouge": 1 - sum(rouge) / len(rouge)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=30)
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--words", type=int, default=500)
    parser.add_argument("--ref-prompts", type=int, default=2, help="prompts the slow reference runs on")
    args = parser.parse_args()

    block = make_block(args.prompts, args.samples, args.words)
    n_words = sum(len(s.split()) for g in block for s in g) / (args.prompts * args.samples)
    print(f"block: {args.prompts} prompts x {args.samples} samples, {n_words:.0f} words/sample")

    t0 = time.perf_counter()
    fast = [diversity_metrics(g) for g in block]
    t_fast = time.perf_counter() - t0
    print(f"fast diversity_metrics, whole block (all 6 metrics): {t_fast:.2f} s")

    n_ref = min(args.ref_prompts, args.prompts)
    if n_ref <= 0:
        return
    t0 = time.perf_counter()
    ref = [reference_metrics(g) for g in block[:n_ref]]
    t_ref = time.perf_counter() - t0
    t_ref_full = t_ref * args.prompts / n_ref
    diff = max(abs(f[m] - r[m]) for f, r in zip(fast, ref) for m in r)
    note = "measured" if n_ref == args.prompts else f"extrapolated from {n_ref} prompts"
    print(f"reference (sacrebleu + rouge-score), {n_ref} prompts: {t_ref:.1f} s; "
          f"whole block {t_ref_full:.0f} s ({note})")
    t_fast_same = t_fast * n_ref / args.prompts
    print(f"speed-up on the same prompts: {t_ref / t_fast_same:.0f}x (fast does distinct-n too)")
    print(f"largest |fast - reference| over 1-self-bleu and 1-self-rouge: {diff:.3g}")


if __name__ == "__main__":
    main()
