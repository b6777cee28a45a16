"""`write_report`: tables, plots and per-prompt diversity from run dirs, into one folder.

Layout of ``out_dir``:
    report.md              all tables (GitHub Markdown) and links to the figures
    report.tex             a standalone LaTeX document with all tables (booktabs)
    tables/<key>.md|.tex   each table alone, to paste into a paper
    figures/*.png|.pdf     bars per benchmark group, training dynamics, near-miss, diversity vs quality
    diversity/<label>.jsonl  per-prompt diversity metrics behind Table 4
Nothing written depends on the time or on absolute paths, so a report from the same runs is the same.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from pathlib import Path

from scope_bench.analysis.dynamics import group_by_label
from scope_bench.reports import tables as T
from scope_bench.reports.bill import bill_table
from scope_bench.reports.reference import paper_reference
from scope_bench.reports.render import latex_escape, to_latex, to_markdown
from scope_bench.reports.runs import discover

FORMATS = ("md", "latex")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "run"


def diversity_tasks(spec) -> list[str]:
    """Tasks of Table 4 from "aime24", "aime24,aime25" or a list."""
    tasks = [t.strip() for t in spec.split(",")] if isinstance(spec, str) else list(spec)
    return [t for t in tasks if t]


def build_tables(evals, trains, *, reference: bool = True, diversity_task="aime24",
                 backbone: str | None = None, progress: bool = False, tasks_dir: str | Path | None = None):
    """The report's tables (in order), the per-prompt diversity behind Table 4 as
    ``{task: {label: {prompt: metrics}}}``, and the main backbone. Tables 1-3 appear when a run measured
    one of the paper's benchmarks (Table 1's groups in `tasks_dir`, default `tasks/`) or the paper's
    numbers are shown; tasks outside them (the demo's synthetic task) get their own "Other tasks" table."""
    main = backbone if backbone is not None else T.main_backbone(evals)
    out = []
    paper_tasks = set(T.benchmarks(tasks_dir).tasks)
    if reference or any(paper_tasks & set(r.summary["tasks"]) for r in evals):
        out.append(T.table1(evals, reference, main, tasks_dir=tasks_dir))
        if reference or any(r.backbone != main for r in evals):
            out.append(T.table2(evals, reference, main, tasks_dir=tasks_dir))
        out.append(T.table3(evals, reference, main, tasks_dir=tasks_dir))
    if T.other_tasks([r for r in evals if r.backbone == main], tasks_dir):  # e.g. the demo's synthetic task
        out.append(T.other_tasks_table(evals, main, tasks_dir=tasks_dir))
    per_prompt = {}
    for task in diversity_tasks(diversity_task):
        rows, per_prompt[task] = T.diversity_rows([r for r in evals if r.backbone == main], task, progress)
        paper = reference and task == T.PAPER_DIVERSITY_TASK  # the paper measured AIME24 only
        if rows or paper:
            out.append(T.table4(rows, task, paper))
    if trains:
        out.append(T.training_table(group_by_label(trains)))
        if bill := bill_table(group_by_label(trains)):  # tokens and cost per method, beside it
            out.append(bill)
    return out, per_prompt, main


def write_report(run_dirs: Iterable[str | Path], out_dir: str | Path, formats: Iterable[str] = ("md",), *,
                 labels: dict | None = None, reference: bool = True, plots: bool = True,
                 diversity_task: str = "aime24", backbone: str | None = None,
                 progress: bool = False, tasks_dir: str | Path | None = None) -> dict[str, list[Path]]:
    """Write the report of ``run_dirs`` (eval and/or training run dirs, or folders holding them).

    ``formats``: any of "md", "latex" ("both" = both). ``labels`` maps a run dir to its row name.
    ``reference`` adds the paper's published numbers as separate, marked blocks. Returns the written
    paths by kind ("md", "latex", "figures", "diversity"). Benchmarks, their groups and headers come
    from ``tasks_dir`` (default: the project's ``tasks/``)."""
    formats = set(FORMATS if "both" in formats else formats)
    if unknown := formats - set(FORMATS):
        raise ValueError(f"unknown report format(s) {sorted(unknown)}; use md, latex or both")
    evals, trains = discover(run_dirs, labels)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tables, per_prompt, main = build_tables(evals, trains, reference=reference, diversity_task=diversity_task,
                                            backbone=backbone, progress=progress, tasks_dir=tasks_dir)
    written: dict[str, list[Path]] = {"md": [], "latex": [], "figures": [], "diversity": []}

    for task, by_label in per_prompt.items():
        for label, metrics in by_label.items():
            path = out / "diversity" / f"{_slug(label)}-{task}.jsonl"
            path.parent.mkdir(exist_ok=True)
            path.write_text("".join(json.dumps({"prompt": pid, **{k: _num(v) for k, v in m.items()}}) + "\n"
                                    for pid, m in metrics.items()))
            written["diversity"].append(path)

    figures = _plots(evals, trains, tables, main, out / "figures", tasks_dir) if plots else []
    written["figures"] = figures

    (out / "tables").mkdir(exist_ok=True)
    if "md" in formats:
        for t in tables:
            path = out / "tables" / f"{t.key}.md"
            path.write_text(to_markdown(t))
            written["md"].append(path)
        path = out / "report.md"
        path.write_text(_markdown(tables, evals, trains, figures, out, reference))
        written["md"].append(path)
    if "latex" in formats:
        for t in tables:
            path = out / "tables" / f"{t.key}.tex"
            path.write_text(to_latex(t) + "\n")
            written["latex"].append(path)
        path = out / "report.tex"
        path.write_text(_latex(tables, reference))
        written["latex"].append(path)
    return written


def _num(v):
    return None if isinstance(v, float) and math.isnan(v) else v


def _run_names(runs) -> str:
    return ", ".join(sorted({f"{r.label} ({r.path.name})" for r in runs})) or "none"


def _markdown(tables, evals, trains, figures, out: Path, reference: bool) -> str:
    parts = ["# scope-bench report", f"Evaluation runs: {_run_names(evals)}.\n\nTraining runs: {_run_names(trains)}."]
    if reference:
        parts.append("Rows marked (paper) are the paper's published numbers, in their own blocks; they were "
                     "not measured here. Bold: best value of a column within its block.")
    parts += [to_markdown(t) for t in tables]
    pngs = [p for p in figures if p.suffix == ".png"]
    if pngs:
        parts.append("## Figures\n\n" + "\n\n".join(f"![{p.stem}]({p.relative_to(out).as_posix()})" for p in pngs))
    return "\n\n".join(p.rstrip("\n") for p in parts) + "\n"


def _latex(tables, reference: bool) -> str:
    body = "\n\n".join(to_latex(t) for t in tables)
    source = latex_escape(" ".join(paper_reference()["source"].split())) if reference else ""
    return "\n".join([
        r"\documentclass{article}", r"\usepackage[utf8]{inputenc}", r"\usepackage{booktabs}",
        r"\usepackage[a4paper,landscape,margin=1.5cm]{geometry}",  # Table 1 and 4 are wide
        r"\begin{document}",
        r"\section*{scope-bench report}",
        (r"Rows marked (paper) are published numbers, not measured: " + source) if reference else "",
        body, r"\end{document}", "",
    ])


def _plots(evals, trains, tables, main, fig_dir: Path, tasks_dir=None) -> list[Path]:
    from scope_bench.reports import plots as P

    paths: list[Path] = []
    runs = [r for r in evals if r.backbone == main]
    if runs:
        bench = T.benchmarks(tasks_dir)
        rows = T.score_rows(runs, list(bench.tasks), tasks_dir)
        for group in bench.groups:  # one figure per Table 1 group: bars_id, bars_ood
            tasks = group.tasks
            scores = {r.name: {t: r.cells.get(t) for t in tasks} for r in rows
                      if any(r.cells.get(t) is not None for t in tasks)}  # methods not run here: no bar
            if scores:
                paths += P.plot_benchmark_bars(scores, list(tasks), bench.headers,
                                               fig_dir / f"bars_{group.short or group.name}", group.title or group.name)
    for other in (t for t in tables if t.key == "other"):
        scores = {r.name: r.cells for _, rows in other.blocks[0].sections for r in rows}
        if scores:
            paths += P.plot_benchmark_bars(scores, other.columns, other.headers, fig_dir / "bars_other", "Other tasks")
    if trains:
        groups = group_by_label(trains)
        paths += P.plot_dynamics(groups, fig_dir / "training_dynamics")
        paths += P.plot_near_miss(groups, fig_dir / "near_miss")
    for t4 in (t for t in tables if t.key.startswith("table4")):
        measured = [r for b in t4.blocks if not b.reference for _, rows in b.sections for r in rows]
        points = {r.name: {"div": r.cells["div-score"], "pass@1": r.cells["pass@1"], "pass@10": r.cells["pass@10"]}
                  for r in measured if not any(math.isnan(v) for v in r.cells["div-score"])}
        if points:
            stem = "diversity_quality" if t4.task == T.PAPER_DIVERSITY_TASK else f"diversity_quality-{t4.task}"
            paths += P.plot_diversity_quality(points, fig_dir / stem, t4.task)
    return paths
