"""Writes the canned runs under tests/golden/runs/ that the report tests read (committed; tests never write
them: `make golden GOLDEN_ARGS=--fixtures` remakes them, then tests/golden/report.md).

Eval runs follow CONTRACTS' summary.json and results.jsonl exactly; training runs its metrics.jsonl.
Scores are invented; response texts are small made-up solutions so Table 4 has real text to measure.

    .venv/bin/python tests/golden/make_fixtures.py
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

ROOT = Path(__file__).parent / "runs"
TASKS = ["aime24", "aime25", "amc", "math500", "minerva", "olympiad", "arc_c", "gpqa_diamond", "mmlu_pro"]
ID, OOD = TASKS[:6], TASKS[6:]
K = 4  # samples per AIME prompt in the fixtures (the paper uses 32)
PHRASES = [
    "We expand the product and collect like terms.", "Let $x$ be the unknown length.",
    "By the Pythagorean theorem, $a^2 + b^2 = c^2$.", "Substituting gives $3x + 5 = 20$, so $x = 5$.",
    "The sum of the roots is $-b/a = 7$.", "Now take the result modulo 9.", "Therefore the area is $24$.",
    "We check the case $n = 1$ separately.", "Dividing both sides by 2 yields the claim.",
    "The probability is the ratio of favourable outcomes.", "Hence the answer is $\\boxed{42}$.",
    "Consider the parity of each term.", "Let us factor the quadratic as $(x-2)(x-3)$.",
]


def task_entry(name: str, score: float, pass_k: dict | None = None) -> dict:
    avg = name in ("aime24", "aime25", "amc")
    n = {"aime24": 30, "aime25": 30, "amc": 83, "math500": 500, "minerva": 272, "olympiad": 675,
         "arc_c": 1172, "gpqa_diamond": 198, "mmlu_pro": 12032}[name]
    return {"metric": "avg@32" if avg else "pass@1", "score": score, "accuracy": score, "n_problems": n,
            "samples_per_problem": 32 if avg else 1, "pass@k": pass_k or {"1": score},
            "sampling": {"temperature": 0.6 if avg else 0.0, "top_p": 0.95, "max_tokens": 4096},
            "data_fingerprint": f"sha256:{name}"}


def summary(label: str, scores: dict, extra: dict | None = None) -> dict:
    tasks = {t: task_entry(t, s, {"1": s, "10": min(100.0, s * 2.1)} if t == "aime24" else None)
             for t, s in scores.items()}
    groups = {}
    for g, members in (("math-id", ID), ("ood", OOD), ("all", TASKS)):
        ran = [t for t in members if t in scores]
        if ran:
            groups[g] = {"score": sum(scores[t] for t in ran) / len(ran), "tasks": ran}
    out = {"label": label, "checkpoint": f"runs/train/{label.lower()}/final", "created": "2026-01-01T00:00:00+00:00",
           "versions": {"scope_bench": "0.1.0"}, "seed": 0, "tasks": tasks, "groups": groups}
    out.update(extra or {})
    return out


def responses(rng: random.Random, spread: float) -> list[str]:
    """K responses to one prompt; `spread` = chance a sentence is swapped for a random one."""
    base = rng.sample(PHRASES, 6)
    out = []
    for _ in range(K):
        steps = [rng.choice(PHRASES) if rng.random() < spread else s for s in base]
        out.append("\n\n".join(steps))
    return out


def write_eval(name: str, label: str, scores: dict, spread: float | None, extra: dict | None = None) -> None:
    d = ROOT / "eval" / name
    d.mkdir(parents=True)
    s = summary(label, scores, extra)
    (d / "summary.json").write_text(json.dumps(s, indent=2) + "\n")
    if spread is None:
        return
    rng = random.Random(name)
    lines = []
    for p in range(5):
        for i, text in enumerate(responses(rng, spread)):
            correct = int(rng.random() < scores["aime24"] / 100)
            lines.append({"checkpoint": s["checkpoint"], "task": "aime24", "problem_id": f"aime24-{p}",
                          "sample": i, "response": text, "prediction": "42" if correct else "7",
                          "ground_truth": "42", "correct": correct, "n_tokens": len(text.split()),
                          "finish_reason": "stop"})
    (d / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))


def write_train(method: str, seed: int, steps: int = 20) -> None:
    d = ROOT / "train" / f"{method}-seed{seed}"
    d.mkdir(parents=True)
    (d / "config.yaml").write_text(f"method: {method}\nseed: {seed}\nmodel: tiny\n")
    rng = random.Random(f"{method}{seed}")
    boost = 0.1 if method == "scope" else 0.0
    rows = []
    for step in range(1, steps + 1):
        r = min(0.95, 0.2 + boost + 0.02 * step + rng.uniform(-0.03, 0.03))
        row = {"step": step, "method": method, "seed": seed, "reward_mean": round(r, 4),
               "accuracy": round(r, 4), "entropy": round(0.8 - 0.01 * step + boost + rng.uniform(0, 0.05), 4),
               "response_length": round(200 + 5 * step * (1.5 if boost else 1.0) + rng.uniform(-5, 5), 1),
               "keep_ratio": round(0.5 + 0.01 * step + rng.uniform(0, 0.02), 4) if method == "scope" else None,
               "near_miss@1": round(0.3 - boost + rng.uniform(0, 0.05), 4),
               "near_miss@2": round(0.45 - boost + rng.uniform(0, 0.05), 4),
               "near_miss@3": round(0.55 - boost + rng.uniform(0, 0.05), 4),
               "groups_total": 8, "groups_gated": 5, "groups_rectified": 4 if method == "scope" else 0,
               "groups_skipped": 1, "refiner_failures": 0, "time/generate": 1.0, "loss": 0.1, "lr": 1e-6}
        if step % 5 == 0:
            row["val_accuracy"] = round(0.3 + boost + 0.01 * step + rng.uniform(0, 0.02), 4)
        rows.append(row)
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def main() -> None:
    if ROOT.exists():
        shutil.rmtree(ROOT)
    full = dict(zip(TASKS, [18.4, 6.8, 54.9, 76.6, 36.0, 42.6, 62.0, 21.7, 43.5]))
    write_eval("grpo", "GRPO", full, spread=0.2)
    write_eval("scope", "SCOPE", {t: v + 3.0 for t, v in full.items()}, spread=0.6)
    write_eval("replace", "Replace Entire Rollout", {t: full[t] + 1.0 for t in ID}, spread=None)
    write_eval("sft", "SFT", {t: full[t] - 1.0 for t in TASKS if t != "minerva"}, spread=None)
    write_eval("scope-1.5b", "SCOPE", {t: full[t] / 3 for t in ID}, spread=None, extra={"backbone": "Qwen2.5-1.5B"})
    for method in ("grpo", "scope"):
        for seed in (1, 2):
            write_train(method, seed)


if __name__ == "__main__":
    main()
