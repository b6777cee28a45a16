"""The paper's tables from measured runs, with published numbers as separate reference blocks.

A `Table` is columns plus blocks of rows; a block is either measured or reference (never both), and
the best value of each column is bold within its block (ties all bold, compared as printed). A cell is
a number, a ``(p50, p10, p90)`` triple (Table 4 diversity), or None (shown as missing). Averages of
measured rows are the unweighted mean of the group's tasks and are missing unless every task of the
group was run, so a partial average never looks comparable with the paper's.

The benchmarks come from `tasks/` (`scope_bench.eval.tasks`): Table 1's column groups are the groups
`TABLE1_GROUPS` of `tasks/_groups.yaml` (their tasks in that order, then their average `avg-<short>`,
under the group's `title`), Tables 2-3 show the first of them; a column's header is its task's `title`
and the metric note prints each task's metric label (Avg@n from its `sampling.n`). Nothing here names
a benchmark: adding one to a group in `tasks/` adds its column.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from scope_bench.analysis.diversity import diversity_by_prompt, summarize_diversity
from scope_bench.analysis.dynamics import group_by_label
from scope_bench.eval.tasks import Group, load_group_specs, load_task
from scope_bench.reports.reference import REFERENCE_SUFFIX, reference_sections
from scope_bench.reports.runs import EvalRun

TABLE1_GROUPS = ("math-id", "ood")  # groups of tasks/_groups.yaml: in-distribution, out-of-distribution
AVERAGE_HEADER = "Avg."
# Table 3's methods (trainers/*.yaml names), in the paper's row order. The paper's "Replace Entire
# Rollout" row is `luffy` (its numbers are LUFFY's Table 1 row); `replace`, the gated whole-solution
# variant, gets a row of its own (docs/method.md).
ABLATION_METHODS = ("grpo", "luffy", "replace", "prm-reward", "scope")
PAPER_DIVERSITY_TASK = "aime24"
TABLE4_COLUMNS = ("distinct-1", "distinct-4", "1-self-bleu", "1-self-rouge", "div-score", "pass@1", "pass@10")
TRAINING_COLUMNS = ("reward_mean", "val_accuracy", "entropy", "keep_ratio", "response_length", "near_miss@1")
MISSING_NOTE = "Missing cells (not run, or an average over an incomplete group) are shown as —."
TABLE4_NOTE = ("distinct-n over whitespace tokens pooled across a prompt's samples; 1-self-bleu with sacrebleu "
               "sentence BLEU; 1-self-rouge with ROUGE-L F1 over pairs; div-score = mean of distinct-1, "
               "distinct-4, 1-self-bleu, 1-self-rouge.")
OTHER_NOTE = ("Tasks outside the paper's benchmarks. First column of a task: its metric as each run's summary "
              "reports it (pass@1 = mean accuracy over the samples); pass@k: the unbiased estimator over the k "
              "samples drawn per problem.")
TRAINING_NOTE = ("val_accuracy and near_miss@1 are fractions (0-1); bold: highest reward and validation "
                 "accuracy, lowest near-miss@1.")


@dataclass(frozen=True)
class Benchmarks:
    """The paper's benchmark columns as `tasks/` defines them: Table 1's column groups (in order),
    each column's header and each task's metric label."""

    groups: tuple[Group, ...]
    headers: dict[str, str]
    metric_labels: dict[str, str]

    @property
    def tasks(self) -> tuple[str, ...]:
        """Every task of Table 1, in column order."""
        return tuple(t for g in self.groups for t in g.tasks)

    def columns(self, groups: tuple[Group, ...] | None = None) -> list[str]:
        """Columns of `groups` (default all): each group's tasks, then its average."""
        return [c for g in (self.groups if groups is None else groups) for c in (*g.tasks, g.average_column)]

    def metric_note(self, tasks) -> str:
        """E.g. "AIME24, AIME25, AMC: Avg@32; others: pass@1": tasks by metric label, the most common
        label (first seen on ties) last as "others"."""
        by_label: dict[str, list[str]] = {}
        for t in tasks:
            by_label.setdefault(self.metric_labels[t], []).append(t)
        if len(by_label) == 1:
            return f"All tasks: {next(iter(by_label))}"
        common = max(by_label, key=lambda label: len(by_label[label]))
        parts = [f"{', '.join(self.headers[t] for t in ts)}: {label}" for label, ts in by_label.items()
                 if label != common]
        return "; ".join([*parts, f"others: {common}"])


def benchmarks(tasks_dir: str | Path | None = None) -> Benchmarks:
    """Table 1's benchmarks read from `tasks_dir` (default: the project's `tasks/`)."""
    return _benchmarks(None if tasks_dir is None else str(Path(tasks_dir).resolve()))


@lru_cache(maxsize=8)
def _benchmarks(tasks_dir: str | None) -> Benchmarks:
    specs = load_group_specs(tasks_dir)
    missing = [g for g in TABLE1_GROUPS if g not in specs]
    if missing:
        raise ValueError(f"tasks/_groups.yaml ({tasks_dir or 'default'}) has no group(s) {missing}: "
                         f"reports lay out Table 1 as groups {list(TABLE1_GROUPS)}")
    groups = tuple(specs[g] for g in TABLE1_GROUPS)
    headers, labels = {}, {}
    for group in groups:
        for name in group.tasks:
            task = load_task(name, tasks_dir)
            headers[name], labels[name] = task.header, task.metric_label
        headers[group.average_column] = AVERAGE_HEADER
    return Benchmarks(groups, headers, labels)


@dataclass(frozen=True)
class Spread:
    """Mean ± standard deviation over `n` seeds (printed "56.3 ± 1.2"; bolding compares the mean)."""

    mean: float
    sd: float
    n: int


@dataclass
class Row:
    name: str
    cells: dict  # column -> float | (p50, p10, p90) | None


@dataclass
class Block:
    title: str
    sections: list[tuple[str | None, list[Row]]]
    reference: bool = False


@dataclass
class Table:
    key: str
    title: str
    columns: list[str]
    blocks: list[Block]
    decimals: dict = field(default_factory=dict)  # column -> decimals (default 1)
    groups: list[tuple[str, int]] = field(default_factory=list)  # header spans over columns
    notes: list[str] = field(default_factory=list)
    task: str | None = None  # the task of a Table 4
    bold: tuple | None = None  # columns where a best value is bolded (None: all)
    lower_better: tuple = ()
    headers: dict = field(default_factory=dict)  # column -> printed header (default: the column)

    def header(self, column: str) -> str:
        return self.headers.get(column, column)

    def fmt(self, column: str, value) -> str | None:
        """The printed text of a cell (None when missing); bold comparisons use this text."""
        d = self.decimals.get(column, 1)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return None
        if isinstance(value, Spread):
            return f"{value.mean:.{d}f}" + (f" ± {value.sd:.{d}f}" if value.n > 1 else "")
        if isinstance(value, (tuple, list)):
            if any(v is None or math.isnan(v) for v in value):
                return None
            return f"{value[0]:.{d}f} [{value[1]:.{d}f}, {value[2]:.{d}f}]"
        return f"{value:.{d}f}"

    def best(self, block: Block) -> dict[str, float]:
        """Per column, the best printed value within a block (largest, or smallest if lower is better)."""
        out = {}
        for col in self.bold if self.bold is not None else self.columns:
            vals = [cell_number(self.fmt(col, r.cells.get(col))) for _, rows in block.sections for r in rows]
            vals = [v for v in vals if v is not None]
            if len(vals) > 1:
                out[col] = min(vals) if col in self.lower_better else max(vals)
        return out


def cell_number(text: str | None) -> float | None:
    """The number a printed cell starts with (what bold compares), None for a missing cell."""
    return None if text is None else float(text.split(" ")[0])


# --- building the tables from runs -----------------------------------------------------------


def _mean(values):
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _group_avg(cells: dict, tasks) -> float | None:
    vals = [cells.get(t) for t in tasks]
    return None if not vals or any(v is None for v in vals) else sum(vals) / len(vals)


def _by_label(runs: list[EvalRun]) -> dict[str, list[EvalRun]]:
    """Runs under the name of their row: one row per label and method (runs of two methods never share
    a row, even under one label), named by the label, with the method added when a label has several."""
    groups = group_by_label(runs, key=lambda r: (r.label, r.method))
    methods = Counter(label for label, _ in groups)
    return {label if methods[label] == 1 else f"{label} ({method or 'method unknown'})": group
            for (label, method), group in groups.items()}


def guessed_note(runs: list[EvalRun]) -> list[str]:
    """A note naming the runs whose method was guessed from their label (a summary without `method`)."""
    guessed = list(dict.fromkeys(f"{r.label} -> {r.method}" for r in runs if r.method_guessed))
    if not guessed:
        return []
    return ["Method read from the run label (its summary.json names none): " + ", ".join(guessed) + "."]


def score_rows(runs: list[EvalRun], tasks, tasks_dir: str | Path | None = None) -> list[Row]:
    """One row per label, with cells of the columns `tasks`: task scores (mean over that label's runs),
    group averages."""
    bench = benchmarks(tasks_dir)
    rows = []
    for label, group in _by_label(runs).items():
        cells = {t: _mean([r.score(t) for r in group]) for t in bench.tasks}
        for g in bench.groups:
            cells[g.average_column] = _group_avg(cells, g.tasks)
        name = label if len(group) == 1 else f"{label} (mean of {len(group)} runs)"
        rows.append(Row(name, {c: cells.get(c) for c in tasks}))
    return rows


def _reference_block(table: str, title: str = "Published (paper, not measured)") -> list[Block]:
    sections = [(t, [Row(n + REFERENCE_SUFFIX, cells) for n, cells in rows.items()])
                for t, rows in reference_sections(table)]
    if table == "table2":  # one block per backbone: different backbones are not compared
        return [Block(f"{title}: {t}", [(None, rows)], reference=True) for t, rows in sections]
    return [Block(title, sections, reference=True)]


def main_backbone(runs: list[EvalRun]) -> str | None:
    """The backbone most runs used (first seen on ties); None when runs do not say."""
    counts: dict = {}
    for run in runs:
        counts[run.backbone] = counts.get(run.backbone, 0) + 1
    return max(counts, key=counts.get) if counts else None


def protocol_note(runs: list[EvalRun], tasks) -> list[str]:
    """A note naming the runs when a table's rows were sampled under different protocols (each task's
    `sampling.protocol` in summary.json, "unrecorded" in summaries older than that), so a table never
    compares two protocols silently."""
    by_protocol: dict[str, list[str]] = {}
    for run in runs:
        for task in tasks:
            entry = run.summary["tasks"].get(task)
            if entry is not None:
                names = by_protocol.setdefault((entry.get("sampling") or {}).get("protocol", "unrecorded"), [])
                names += [] if run.label in names else [run.label]
    if len(by_protocol) < 2:
        return []
    runs_by = "; ".join(f"{protocol}: {', '.join(names)}" for protocol, names in by_protocol.items())
    return [f"Warning: mixed sampling protocols, rows drawn differently are not comparable: {runs_by}."]


def version_note(runs: list[EvalRun], tasks, tasks_dir: str | Path | None = None) -> list[str]:
    """A warning naming the cells whose task definition has changed since they were measured: the
    `task_version` in summary.json (1 in summaries older than versions, as in a task file without
    one) against the task file's `version` today, so old numbers never pass under new definitions."""
    changed = []
    for task in tasks:
        now = _task_version(task, None if tasks_dir is None else str(Path(tasks_dir).resolve()))
        for run in runs:
            entry = run.summary["tasks"].get(task)
            if now is not None and entry is not None and entry.get("task_version", 1) != now:
                changed.append(f"{task} of {run.label} (v{entry.get('task_version', 1)}, tasks/ has v{now})")
    if not changed:
        return []
    return ["Warning: measured under another task definition than the one in tasks/ now, not comparable "
            "with the other cells: " + "; ".join(changed) + "."]


@lru_cache(maxsize=256)
def _task_version(task: str, tasks_dir: str | None) -> int | None:
    """The task file's version today; None for a column that is no task (an average) or a task gone."""
    try:
        return load_task(task, tasks_dir).version
    except (ValueError, FileNotFoundError):
        return None


def table1(runs: list[EvalRun], reference: bool = True, backbone: str | None = None, *,
           tasks_dir: str | Path | None = None) -> Table:
    bench = benchmarks(tasks_dir)
    columns = bench.columns()
    rows = score_rows([r for r in runs if r.backbone == backbone], columns, tasks_dir)
    blocks = [Block("Measured" + (f" ({backbone})" if backbone else ""), [(None, rows)])]
    if reference:
        blocks += _reference_block("table1", "Published (paper, Qwen2.5-Math-7B, not measured)")
    return Table("table1", "Table 1. In-distribution (math) and out-of-distribution accuracy (%)",
                 columns, blocks, groups=[(g.title or g.name, len(g.tasks) + 1) for g in bench.groups],
                 notes=[f"{bench.metric_note(bench.tasks)} (as each run's summary reports).",
                        MISSING_NOTE, *protocol_note([r for r in runs if r.backbone == backbone], columns),
                        *version_note([r for r in runs if r.backbone == backbone], columns, tasks_dir)],
                 headers=dict(bench.headers))


def table2(runs: list[EvalRun], reference: bool = True, main: str | None = None, *,
           tasks_dir: str | Path | None = None) -> Table:
    bench = benchmarks(tasks_dir)
    columns = bench.columns(bench.groups[:1])
    blocks = []
    for bb in dict.fromkeys(r.backbone for r in runs if r.backbone != main):
        rows = score_rows([r for r in runs if r.backbone == bb], columns, tasks_dir)
        blocks.append(Block(f"Measured: {bb}", [(None, rows)]))
    if reference:
        blocks += _reference_block("table2")
    return Table("table2", "Table 2. More backbones: in-distribution accuracy (%)", columns, blocks,
                 notes=["Runs whose summary names a backbone other than the main one.", MISSING_NOTE,
                        *protocol_note([r for r in runs if r.backbone != main], columns),
                        *version_note([r for r in runs if r.backbone != main], columns, tasks_dir)],
                 headers=dict(bench.headers))


def table3(runs: list[EvalRun], reference: bool = True, backbone: str | None = None, *,
           tasks_dir: str | Path | None = None) -> Table:
    bench = benchmarks(tasks_dir)
    columns = bench.columns(bench.groups[:1])
    chosen = [r for r in runs if r.backbone == backbone and r.method in ABLATION_METHODS]
    blocks = [Block("Measured", [(None, score_rows(chosen, columns, tasks_dir))])]
    if reference:
        blocks += _reference_block("table3")
    return Table("table3", "Table 3. Ablation on refinement strategies: in-distribution accuracy (%)",
                 columns, blocks, notes=["Runs of methods " + ", ".join(ABLATION_METHODS) + "; the paper's "
                                         "Replace Entire Rollout row is luffy.", MISSING_NOTE,
                                         *guessed_note(chosen), *protocol_note(chosen, columns),
                                         *version_note(chosen, columns, tasks_dir)],
                 headers=dict(bench.headers))


def other_tasks(runs: list[EvalRun], tasks_dir: str | Path | None = None) -> list[str]:
    """Tasks the runs measured that are not among the paper's columns, in order of first appearance."""
    paper = set(benchmarks(tasks_dir).tasks)
    return list(dict.fromkeys(t for r in runs for t in r.summary["tasks"] if t not in paper))


def other_tasks_table(runs: list[EvalRun], backbone: str | None = None, *,
                      tasks_dir: str | Path | None = None) -> Table:
    """Measured scores on tasks outside Table 1 (e.g. the synthetic task of `scope-bench demo`): per
    task, its own metric as the summaries report it, and pass@k at the largest k that every run drew."""
    runs = [r for r in runs if r.backbone == backbone]
    specs = []  # (column, task, k): k None = the task's own score
    for task in other_tasks(runs, tasks_dir):
        entries = [r.summary["tasks"][task] for r in runs if task in r.summary["tasks"]]
        metrics = {e.get("metric") for e in entries}
        specs.append((f"{task} {metrics.pop()}" if len(metrics) == 1 and None not in metrics else task, task, None))
        k = min(int(e.get("samples_per_problem") or 1) for e in entries)
        if k > 1:
            specs.append((f"{task} pass@{k}", task, k))
    rows = []
    for label, group in _by_label(runs).items():
        cells = {col: _mean([r.score(task) if k is None else r.pass_at(task, k) for r in group])
                 for col, task, k in specs}
        if any(v is not None for v in cells.values()):
            rows.append(Row(label if len(group) == 1 else f"{label} (mean of {len(group)} runs)", cells))
    return Table("other", "Other tasks: measured accuracy (%)", [c for c, _, _ in specs],
                 [Block("Measured" + (f" ({backbone})" if backbone else ""), [(None, rows)])],
                 notes=[OTHER_NOTE, MISSING_NOTE, *protocol_note(runs, other_tasks(runs, tasks_dir)),
                        *version_note(runs, other_tasks(runs, tasks_dir), tasks_dir)])


def diversity_rows(runs: list[EvalRun], task: str, progress: bool = False) -> tuple[list[Row], dict]:
    """Table 4 rows (diversity p50 [p10, p90] across prompts, pass@1, pass@10) and the per-prompt
    metrics of each label, for runs whose results.jsonl has samples of ``task``."""
    rows, per_prompt = [], {}
    for label, group in _by_label(runs).items():
        prompts = {}
        for i, run in enumerate(group):  # several runs of one label: their prompts pooled
            for pid, samples in run.responses(task).items():
                prompts[f"{i}:{pid}" if len(group) > 1 else pid] = samples
        if not prompts:
            continue
        metrics = diversity_by_prompt(prompts, progress=progress)
        per_prompt[label] = metrics
        summary = summarize_diversity(metrics)
        cells = {m: (summary[m]["p50"], summary[m]["p10"], summary[m]["p90"]) for m in TABLE4_COLUMNS[:5]}
        cells["pass@1"] = _mean([r.pass_at(task, 1) for r in group])
        cells["pass@10"] = _mean([r.pass_at(task, 10) for r in group])
        k = sorted({len(s) for s in prompts.values()})
        name = f"{label} (k={k[0]})" if len(k) == 1 else f"{label} (k={k[0]}-{k[-1]})"
        rows.append(Row(name, cells))
    return rows, per_prompt


def table4(rows: list[Row], task: str, reference: bool = True) -> Table:
    blocks = [Block(f"Measured: {task}", [(None, rows)])]
    if reference:
        blocks += _reference_block("table4", "Published (paper, AIME24, not measured)")
    decimals = {c: 2 for c in TABLE4_COLUMNS}
    key = "table4" if task == PAPER_DIVERSITY_TASK else f"table4-{task}"
    return Table(key, f"Table 4. Diversity and quality on {task}", list(TABLE4_COLUMNS), blocks, decimals,
                 task=task, groups=[("Diversity (p50 [p10, p90] across prompts)", 5), ("Quality (%)", 2)],
                 notes=[TABLE4_NOTE, MISSING_NOTE])


def training_table(train_groups: dict) -> Table:
    """Last logged value of the main training metrics per method (mean over seeds)."""
    from scope_bench.analysis.dynamics import final_values

    rows = []
    for label, runs in train_groups.items():
        cells = final_values(runs, TRAINING_COLUMNS)
        cells["seeds"] = float(len(runs))
        cells["steps"] = float(max((r.rows[-1]["step"] for r in runs if r.rows), default=0))
        rows.append(Row(label, cells))
    columns = ["seeds", "steps", *TRAINING_COLUMNS]
    decimals = {"seeds": 0, "steps": 0, "response_length": 0, **{c: 3 for c in TRAINING_COLUMNS[:4]},
                "near_miss@1": 3}
    return Table("training", "Training runs: last logged values (mean over seeds)", columns,
                 [Block("Measured", [(None, rows)])], decimals,
                 notes=[TRAINING_NOTE, MISSING_NOTE],
                 bold=("reward_mean", "val_accuracy", "near_miss@1"), lower_better=("near_miss@1",))
