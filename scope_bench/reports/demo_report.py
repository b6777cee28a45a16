"""The demo's report: the paper's comparison in miniature and verdicts on its four claims.

`measure_*` turn one evaluated checkpoint and its training run into numbers per seed
(`values[variant][metric][seed]`); `demo_tables` builds Table 1 (ID and OOD accuracy), the Table-3
block (how teacher text is used), Table 4 (diversity and pass@k) and a training table, each cell a
mean ± std over seeds; `judge(CLAIMS, values)` gives the verdicts; `write_demo_report` writes
report.md / report.tex and the figure. Every number comes from the runs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scope_bench.analysis.verdicts import Claim, Comparison, Verdict, judge
from scope_bench.reports.tables import Block, Row, Spread, Table, to_latex, to_markdown

START = "start"  # the variant key of the starting checkpoint (warm start)
SPLIT_NAMES = {"id": "ID", "ood": "OOD"}
# the tail of training whose mean stands for "where training ended" (single steps are noisy)
LAST_SHARE = 1 / 3

CLAIMS = (
    Claim("1", "Where on-policy success is rare, SCOPE beats on-policy RL (Table 1: SCOPE > On-Policy RL)",
          Comparison("scope", "grpo", "id/pass@1"),
          (Comparison("scope", "grpo", "ood/pass@1"), Comparison("scope", "grpo", "train/accuracy"))),
    Claim("2", "Step-wise rectification beats replacing whole rollouts with teacher solutions (Table 3)",
          Comparison("scope", "luffy", "id/pass@1"),
          (Comparison("scope", "luffy", "ood/pass@1"), Comparison("scope-weak", "luffy", "id/pass@1"),
           Comparison("scope", "replace", "id/pass@1"))),
    Claim("3", "PRM scores as dense rewards are not effective (RL w/ PRM reward below SCOPE)",
          Comparison("scope", "prm-reward", "id/pass@1"),
          (Comparison("scope", "prm-step-reward", "id/pass@1"), Comparison("scope", "prm-reward", "ood/pass@1"))),
    Claim("4", "SCOPE keeps exploration broad (Table 4 diversity, pass@k; lower near-miss@k)",
          Comparison("scope", "grpo", "id/div-score"),
          (Comparison("scope", "grpo", "id/pass@k"),
           Comparison("scope", "grpo", "train/near_miss@1", lower_is_better=True))),
)


@dataclass
class Variant:
    """A row of the comparison: a method config plus the world settings it changes."""

    key: str
    label: str
    method: str
    overrides: tuple[str, ...] = ()


# The rows of the comparison: a method config of trainers/ plus the settings it changes.
VARIANTS = {v.key: v for v in (
    Variant("grpo", "On-policy RL (GRPO)", "grpo"),
    Variant("scope", "SCOPE", "scope"),
    Variant("luffy", "LUFFY (Replace Entire Rollout)", "luffy"),
    Variant("replace", "Replace Entire Rollout (gated)", "replace"),
    Variant("prm-reward", "RL w/ PRM reward (scalar)", "prm-reward"),
    Variant("prm-step-reward", "RL w/ PRM reward (per step)", "prm-step-reward"),
    Variant("scope-weak", "SCOPE, weaker teacher (30% slips)", "scope", ("refiner.error_rate=0.3",)),
    Variant("sft", "SFT (teacher solutions)", "sft"),
    Variant("sft+rl", "SFT+RL", "sft+rl"),
)}
START_VARIANT = Variant(START, "Warm start", "")


# ------------------------------------------------------------------------------------ measuring


def measure_eval(summary: dict, responses: dict[str, list[str]], split: str, task: str) -> dict[str, float]:
    """pass@1, pass@k (k = samples per problem) and mean div-score over prompts of one evaluation."""
    from scope_bench.analysis.diversity import diversity_by_prompt

    entry = summary["tasks"][task]
    k = str(entry["samples_per_problem"])
    divs = [m["div-score"] for m in diversity_by_prompt(responses).values() if not math.isnan(m["div-score"])]
    return {f"{split}/pass@1": float(entry["pass@k"]["1"]), f"{split}/pass@k": float(entry["pass@k"][k]),
            f"{split}/div-score": float(np.mean(divs)) if divs else math.nan}


def measure_training(rows: Sequence[dict]) -> dict[str, float]:
    """What the policy did in training, rates in percent like the eval scores: its own accuracy over
    the last third of the steps, and over all steps the share of all-fail groups, near-miss@1, the keep
    ratio in steps, teacher rows and refiner failures per step (unlogged steps are skipped)."""
    rl = [r for r in rows if r.get("phase", "rl") == "rl"]
    tail = rl[int(len(rl) * (1 - LAST_SHARE)):] if rl else []
    out = {"train/accuracy": 100 * _mean_of(tail, "accuracy")}
    for key, scale in (("all_fail_groups", 100), ("near_miss@1", 100), ("keep_ratio_steps", 1),
                       ("groups_rectified", 1), ("refiner_failures", 1)):
        out[f"train/{key}"] = scale * _mean_of(rl, key)
    return out


def _mean_of(rows, key: str) -> float:
    vals = [r[key] for r in rows if isinstance(r.get(key), (int, float))]
    return float(np.mean(vals)) if vals else math.nan


def add_values(values: dict, variant: str, seed, scores: dict[str, float]) -> None:
    """File one checkpoint's scores under `values[variant][metric][seed]` (NaN: not measured)."""
    for metric, value in scores.items():
        if not math.isnan(value):
            values.setdefault(variant, {}).setdefault(metric, {})[seed] = value
    if "id/pass@1" in scores and "ood/pass@1" in scores:  # the mean of ID and OOD accuracy, per seed
        values[variant].setdefault("avg/pass@1", {})[seed] = (scores["id/pass@1"] + scores["ood/pass@1"]) / 2


def spread(values: dict, variant: str, metric: str) -> Spread | None:
    per_seed = list(values.get(variant, {}).get(metric, {}).values())
    if not per_seed:
        return None
    arr = np.asarray(per_seed, dtype=float)
    return Spread(float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0, len(arr))


# ------------------------------------------------------------------------------------------ tables


def _table(key: str, title: str, columns: dict[str, str], variants, values, notes, decimals=None,
           lower_better=()) -> Table:
    """Rows = variants that measured something here; `columns` = header -> metric."""
    rows = []
    for v in variants:
        cells = {h: spread(values, v.key, metric) for h, metric in columns.items()}
        if any(c is not None for c in cells.values()):
            rows.append(Row(v.label, cells))
    return Table(key, title, list(columns), [Block("Measured (mean ± std over seeds)", [(None, rows)])],
                 decimals or {}, notes=list(notes), lower_better=tuple(lower_better))


def demo_tables(values: dict, variants: Sequence[Variant], start: Variant, k: int) -> list[Table]:
    by_key = {v.key: v for v in variants}
    table1 = [start, *variants]
    table3 = [by_key[x] for x in ("luffy", "replace", "scope", "scope-weak") if x in by_key]
    acc = {"ID pass@1": "id/pass@1", "OOD pass@1": "ood/pass@1", "Avg.": "avg/pass@1"}
    return [
        _table("demo-table1", "Table 1 (miniature). Accuracy (%) on held-out synthetic problems", acc, table1, values,
               [("ID: held-out 5- and 6-operation chains (beyond the warm start's 2-4; RL trains on 4-6); OOD: "
                 "7-operation chains (longer than anything trained). pass@1 = mean accuracy over the samples at "
                 "temperature 1.")]),
        _table("demo-table3", "Table 3 (miniature). How the teacher's text is used",
               {**acc, "teacher rows / step": "train/groups_rectified",
                "refiner failures / step": "train/refiner_failures"}, table3, values,
               [("LUFFY: one whole teacher solution in every group (the paper's Replace Entire Rollout numbers); "
                "Replace (gated): one failure of a gated group replaced; SCOPE: the policy's verified prefix, "
                "the teacher's continuation; weaker teacher: it slips on a step of a share of its answers.")],
               decimals={"teacher rows / step": 2, "refiner failures / step": 2}),
        _table("demo-table4", "Table 4 (miniature). Diversity and quality on the ID split",
               {"div-score": "id/div-score", "pass@1": "id/pass@1", f"pass@{k}": "id/pass@k"},
               table1, values,
               [(f"div-score per prompt over its {k} samples (mean of distinct-1, distinct-4, 1-self-bleu, "
                "1-self-rouge), averaged over prompts; pass@k by the unbiased estimator.")],
               decimals={"div-score": 3}),
        _table("demo-training", "Training: what the policy itself did",
               {"on-policy acc. (%)": "train/accuracy", "all-fail groups (%)": "train/all_fail_groups",
                "near-miss@1 (%)": "train/near_miss@1", "keep ratio (steps)": "train/keep_ratio_steps"},
               variants, values,
               [(f"On-policy accuracy: the policy's own rollouts over the last {LAST_SHARE:.0%} of the steps (a "
                "rectified row's reward is 1 by construction, so the training reward would flatter SCOPE); the "
                "others over all steps. Near-miss@1: share of failed rollouts one step short of a verified "
                "solution (PRM-scored, every method).")],
               decimals={"keep ratio (steps)": 2}, lower_better=("near-miss@1 (%)", "all-fail groups (%)")),
    ]


# ----------------------------------------------------------------------------------------- verdicts


def verdict_markdown(verdicts: Sequence[Verdict], labels: dict[str, str]) -> str:
    lines = ["## Verdicts on the paper's claims", "",
             ("Computed from the runs above: per seed, the difference between two methods trained with the same "
             "seed (same warm start, prompts and evaluation set); a one-sided paired t-test over seeds, "
             "p < 0.05. *holds*: the claimed direction is significant; *does not hold*: the opposite direction "
             "is; *within noise*: neither. The verdict is the first comparison's; the others are shown beside it."),
             ""]
    for v in verdicts:
        lines.append(f"**Claim {v.claim.name}: {v.claim.text}: {v.outcome}.**")
        lines += [f"- {r.describe(labels)}" for r in (v.primary, *v.others)]
        lines.append("")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------- write


def write_demo_report(out: Path, values: dict, variants: Sequence[Variant], start: Variant, k: int,
                      train_groups: dict, preamble: str) -> dict[str, list[Path]]:
    """report.md (Table 1 and the verdicts first), report.tex, tables/*.md|.tex, figures/exploration.*"""
    from scope_bench.reports.plots import plot_exploration

    out.mkdir(parents=True, exist_ok=True)
    tables = demo_tables(values, variants, start, k)
    verdicts = judge(CLAIMS, values)
    labels = {v.key: v.label for v in (start, *VARIANTS.values(), *variants)}
    figures = plot_exploration(train_groups, out / "figures" / "exploration") if train_groups else []
    (out / "tables").mkdir(exist_ok=True)
    written: dict[str, list[Path]] = {"md": [], "latex": [], "figures": figures}
    for t in tables:
        for ext, render, kind in (("md", to_markdown, "md"), ("tex", to_latex, "latex")):
            path = out / "tables" / f"{t.key}.{ext}"
            path.write_text(render(t) + ("\n" if ext == "tex" else ""))
            written[kind].append(path)
    pngs = [p for p in figures if p.suffix == ".png"]
    md = "\n\n".join([
        "# SCOPE in miniature: the demo's comparison", preamble, to_markdown(tables[0]).rstrip(),
        verdict_markdown(verdicts, labels).rstrip(), *(to_markdown(t).rstrip() for t in tables[1:]),
        "## Figures\n\n" + "\n\n".join(f"![{p.stem}]({p.relative_to(out).as_posix()})" for p in pngs)]) + "\n"
    (out / "report.md").write_text(md)
    tex = "\n".join([r"\documentclass{article}", r"\usepackage[utf8]{inputenc}", r"\usepackage{booktabs}",
                     r"\usepackage[a4paper,landscape,margin=1.5cm]{geometry}", r"\begin{document}",
                     r"\section*{SCOPE in miniature}", *(to_latex(t) for t in tables), r"\end{document}", ""])
    (out / "report.tex").write_text(tex)
    written["md"].append(out / "report.md")
    written["latex"].append(out / "report.tex")
    return written | {"verdicts": verdicts}
