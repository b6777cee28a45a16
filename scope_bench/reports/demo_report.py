"""The demo's report: the paper's comparison in miniature and verdicts on its four claims.

`measure_*` turn one evaluated checkpoint and its training run into numbers per seed
(`values[variant][metric][seed]`: per-problem scores `{problem_id: score}` for evaluation metrics, a
number for training metrics; the warm start's seed is None, shared by every seed); `demo_tables`
builds Table 1 (ID and OOD accuracy, each method's change from the warm start), the Table-3 block
(how teacher text is used), Table 4 (diversity and pass@k) and a training table, each cell a mean ±
std over seeds; `judge((POSITIVE_CONTROL, *CLAIMS), values)` gives the verdicts; `write_demo_report`
writes report.md / report.tex and the figure. Every number comes from the runs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scope_bench.analysis.verdicts import HOLDS, Claim, Comparison, Verdict, judge, seed_mean
from scope_bench.reports.render import to_latex, to_markdown
from scope_bench.reports.tables import Block, Row, Spread, Table

START = "start"  # the variant key of the starting checkpoint (warm start)
SPLIT_NAMES = {"id": "ID", "ood": "OOD"}
# the tail of training whose mean stands for "where training ended" (single steps are noisy)
LAST_SHARE = 1 / 3

# Before any claim: can plain RL learn in this world at all? If GRPO does not beat the checkpoint it
# started from, no comparison of RL methods here can be read.
POSITIVE_CONTROL = Claim(
    "0", "RL learns here: GRPO beats the warm start it started from on held-out ID problems",
    Comparison("grpo", START, "id/pass@1"), (Comparison("grpo", START, "ood/pass@1"),))

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


def eval_grades(eval_dir: Path, task: str, problem_ids: Sequence[str]) -> tuple[dict, dict]:
    """Per problem of `problem_ids`, the 0/1 grades and the responses of one evaluation, in sample
    order (the results file may hold more problems, from an earlier, larger evaluation)."""
    from scope_bench.eval.store import ResultStore

    path = Path(eval_dir) / "summary.json"
    summary = json.loads(path.read_text())
    try:
        checkpoint, n = summary["checkpoint"], int(summary["tasks"][task]["samples_per_problem"])
    except (KeyError, TypeError) as err:
        raise ValueError(f"{path}: missing field {err}") from None
    store = ResultStore(Path(eval_dir) / "results.jsonl")
    grades, responses = {}, {}
    for pid in problem_ids:
        have = store.samples(checkpoint, task, pid)
        if any(j not in have for j in range(n)):
            raise ValueError(f"{store.path}: problem {pid!r} has {len(have)} of {n} samples; rerun the evaluation")
        grades[pid] = [int(have[j]["correct"]) for j in range(n)]
        responses[pid] = [have[j].get("response") or "" for j in range(n)]
    return grades, responses


def measure_greedy(grades: dict[str, list[int]], split: str) -> dict[str, dict]:
    """pass@1 of a greedy evaluation, per problem (0 or 100)."""
    return {f"{split}/pass@1": {pid: 100.0 * g[0] for pid, g in grades.items()}}


def measure_samples(grades: dict[str, list[int]], responses: dict[str, list[str]], split: str) -> dict[str, dict]:
    """Per problem of a sampled evaluation (k samples at temperature 1): the mean accuracy of the
    samples (`sampled@1`), the unbiased pass@k with k = all samples, and the div-score."""
    from scope_bench.analysis.diversity import diversity_by_prompt
    from scope_bench.eval.metrics import pass_at_k

    divs = diversity_by_prompt(responses)
    return {f"{split}/sampled@1": {p: 100.0 * float(np.mean(g)) for p, g in grades.items()},
            f"{split}/pass@k": {p: 100.0 * pass_at_k(len(g), sum(g), len(g)) for p, g in grades.items()},
            f"{split}/div-score": {p: m["div-score"] for p, m in divs.items() if not math.isnan(m["div-score"])}}


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


def add_values(values: dict, variant: str, seed, scores: dict) -> None:
    """File one checkpoint's scores under `values[variant][metric][seed]`: per-problem mappings or
    numbers (NaN, or an empty mapping: not measured). The warm start's seed is None."""
    for metric, value in scores.items():
        if isinstance(value, dict):
            value = {p: float(x) for p, x in value.items() if not math.isnan(x)}
            if not value:
                continue
        elif math.isnan(value):
            continue
        values.setdefault(variant, {}).setdefault(metric, {})[seed] = value
    if "id/pass@1" in scores and "ood/pass@1" in scores:  # the mean of ID and OOD accuracy, per seed
        values[variant].setdefault("avg/pass@1", {})[seed] = (
            seed_mean(scores["id/pass@1"]) + seed_mean(scores["ood/pass@1"])) / 2


def changes_from_start(values: dict) -> dict:
    """`values` plus, for every variant trained from the start, `<split>/vs-start`: per seed its pass@1
    minus the starting checkpoint's on the same problems."""
    out = {k: dict(v) for k, v in values.items()}
    start = values.get(START, {})
    for variant, metrics in values.items():
        if variant == START:
            continue
        for split in SPLIT_NAMES:
            base = start.get(f"{split}/pass@1", {}).get(None)
            mine = metrics.get(f"{split}/pass@1", {})
            if base is not None and mine:
                out[variant][f"{split}/vs-start"] = {
                    s: float(np.mean([v[p] - base[p] for p in v if p in base])) for s, v in mine.items()}
    return out


def spread(values: dict, variant: str, metric: str) -> Spread | None:
    per_seed = [seed_mean(v) for v in values.get(variant, {}).get(metric, {}).values()]
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
    changes = {"ID vs start": "id/vs-start", "OOD vs start": "ood/vs-start"}
    with_changes = changes_from_start(values)
    return [
        _table("demo-table1", "Table 1 (miniature). Accuracy (%) on held-out synthetic problems",
               {**acc, **changes}, table1, with_changes,
               [("ID: held-out 4- to 6-operation chains, the RL prompts' own distribution (the warm start "
                 "learned 2-4); OOD: "
                 "7-operation chains (longer than anything trained). pass@1: greedy decoding, one answer per "
                 f"problem. vs start: each seed's pass@1 minus that of {start.label.lower()}, the checkpoint every "
                 "method started from, on the same problems (intervals: the positive control below).")]),
        _table("demo-table3", "Table 3 (miniature). How the teacher's text is used",
               {**acc, "teacher rows / step": "train/groups_rectified",
                "refiner failures / step": "train/refiner_failures"}, table3, values,
               [("LUFFY: one whole teacher solution in every group (the paper's Replace Entire Rollout numbers); "
                "Replace (gated): one failure of a gated group replaced; SCOPE: the policy's verified prefix, "
                "the teacher's continuation; weaker teacher: it slips on a step of a share of its answers.")],
               decimals={"teacher rows / step": 2, "refiner failures / step": 2}),
        _table("demo-table4", "Table 4 (miniature). Diversity and quality on the ID split",
               {"div-score": "id/div-score", "pass@1 (T=1)": "id/sampled@1", f"pass@{k}": "id/pass@k"},
               table1, values,
               [(f"{k} samples per problem at temperature 1 on the first ID problems: div-score per problem "
                "(mean of distinct-1, distinct-4, 1-self-bleu, 1-self-rouge), averaged over problems; pass@1 "
                "(T=1): the samples' mean accuracy; pass@k by the unbiased estimator.")],
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


_HOW = ("Each line: the difference between two methods (positive favours the first), paired by training seed "
        "(same warm start, prompts and evaluation set) and by evaluation problem; its 95% interval, with the "
        "standard error from a hierarchical bootstrap over seeds and problems (per-run training metrics: a "
        "t-interval over seeds); "
        "and the smallest difference this budget detects with 80% power (docs/verdicts.md). *holds*: the "
        "interval lies above 0; *does not hold*: below 0; *within noise*: it contains 0, or one seed only.")


def opening_line(control: Verdict, labels: dict[str, str]) -> str:
    """The report's first line: whether RL learns here, and if not, that the claims cannot be read."""
    r = control.primary
    if control.outcome == HOLDS:
        return f"**RL learns here: holds.** {r.describe(labels)}."
    return (f"**RL learns here: {control.outcome}. The verdicts on the paper's claims below cannot be read**: "
            f"plain RL does not measurably beat the checkpoint it started from in this world, so a comparison "
            f"of RL methods here cannot show one learning more. {r.describe(labels)}.")


def control_markdown(control: Verdict, vs_start: Sequence, labels: dict[str, str]) -> str:
    lines = ["## Positive control: RL learns here", "",
             f"**{control.claim.text}: {control.outcome}.**", ""]
    lines += [f"- {r.describe(labels)}" for r in (control.primary, *control.others)]
    if vs_start:
        lines += ["", "Every method against the checkpoint it started from (ID pass@1):", ""]
        lines += [f"- {r.describe(labels)}" for r in vs_start]
    return "\n".join(lines)


def verdict_markdown(verdicts: Sequence[Verdict], labels: dict[str, str], readable: bool = True) -> str:
    lines = ["## Verdicts on the paper's claims", ""]
    if not readable:
        lines += [("**Not readable: the positive control above does not hold, so these outcomes say nothing "
                   "about the methods.**"), ""]
    lines += [_HOW + " The verdict is the first comparison's; the others are shown beside it.", ""]
    for v in verdicts:
        lines.append(f"**Claim {v.claim.name}: {v.claim.text}: {v.outcome}.**")
        lines += [f"- {r.describe(labels)}" for r in (v.primary, *v.others)]
        lines.append("")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------- write


def write_demo_report(out: Path, values: dict, variants: Sequence[Variant], start: Variant, k: int,
                      train_groups: dict, preamble: str) -> dict:
    """report.md (the positive control first, then Table 1 and the verdicts), report.tex,
    tables/*.md|.tex, figures/exploration.*"""
    from scope_bench.analysis.verdicts import paired_test
    from scope_bench.reports.plots import plot_exploration

    out.mkdir(parents=True, exist_ok=True)
    tables = demo_tables(values, variants, start, k)
    control, *verdicts = judge((POSITIVE_CONTROL, *CLAIMS), values)
    vs_start = [paired_test(values.get(v.key, {}).get("id/pass@1", {}), values.get(START, {}).get("id/pass@1", {}),
                            Comparison(v.key, START, "id/pass@1")) for v in variants if v.key != "grpo"]
    labels = {v.key: v.label for v in (start, *VARIANTS.values(), *variants)}
    figures = plot_exploration(train_groups, out / "figures" / "exploration") if train_groups else []
    (out / "tables").mkdir(exist_ok=True)
    written: dict = {"md": [], "latex": [], "figures": figures}
    for t in tables:
        for ext, render, kind in (("md", to_markdown, "md"), ("tex", to_latex, "latex")):
            path = out / "tables" / f"{t.key}.{ext}"
            path.write_text(render(t) + ("\n" if ext == "tex" else ""))
            written[kind].append(path)
    pngs = [p for p in figures if p.suffix == ".png"]
    md = "\n\n".join([
        "# SCOPE in miniature: the demo's comparison", opening_line(control, labels), preamble,
        to_markdown(tables[0]).rstrip(), control_markdown(control, vs_start, labels),
        verdict_markdown(verdicts, labels, readable=control.outcome == HOLDS).rstrip(),
        *(to_markdown(t).rstrip() for t in tables[1:]),
        "## Figures\n\n" + "\n\n".join(f"![{p.stem}]({p.relative_to(out).as_posix()})" for p in pngs)]) + "\n"
    (out / "report.md").write_text(md)
    tex = "\n".join([r"\documentclass{article}", r"\usepackage[utf8]{inputenc}", r"\usepackage{booktabs}",
                     r"\usepackage[a4paper,landscape,margin=1.5cm]{geometry}", r"\begin{document}",
                     r"\section*{SCOPE in miniature}", *(to_latex(t) for t in tables), r"\end{document}", ""])
    (out / "report.tex").write_text(tex)
    written["md"].append(out / "report.md")
    written["latex"].append(out / "report.tex")
    return written | {"verdicts": verdicts, "control": control, "vs_start": vs_start}
