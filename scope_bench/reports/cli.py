"""`scope-bench report RUN_DIR...`: the paper's tables and figures from eval and training runs."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "report", help="tables (Markdown/LaTeX) and plots from eval and training run dirs",
        description="Tables 1-4 in the paper's layout (published numbers as separate reference rows), "
                    "a training summary and figures, from eval run dirs (summary.json, results.jsonl) "
                    "and training run dirs (metrics.jsonl). A folder holding run dirs is searched.",
    )
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--format", choices=("md", "latex", "both"), default="md")
    p.add_argument("--out", default=None, help="output folder (default reports/latest)")
    p.add_argument("--label", action="append", default=[], metavar="DIR=NAME",
                   help="name the rows of run DIR as NAME (repeatable)")
    p.add_argument("--diversity-task", default="aime24", help="task(s) of Table 4, comma-separated (default aime24)")
    p.add_argument("--backbone", default=None,
                   help="backbone of Tables 1, 3, 4 (default: the one most runs name in their summary)")
    p.add_argument("--no-reference", action="store_true", help="leave out the paper's published numbers")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--tasks-dir", default=None,
                   help="folder of task YAMLs naming the benchmarks, groups and headers (default: the project's tasks/)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(func=run)


def parse_labels(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        path, sep, name = item.partition("=")
        if not sep or not path or not name:
            raise ValueError(f"--label {item!r}: expected DIR=NAME")
        out[path] = name
    return out


def run(args: argparse.Namespace) -> int:
    from scope_bench.paths import REPORTS_DIR
    from scope_bench.reports.report import write_report

    out = args.out or REPORTS_DIR / "latest"
    written = write_report(
        args.run_dirs, out, [args.format], labels=parse_labels(args.label), reference=not args.no_reference,
        plots=not args.no_plots, diversity_task=args.diversity_task, backbone=args.backbone, progress=True,
        tasks_dir=args.tasks_dir,
    )
    for kind, paths in written.items():
        if paths:
            print(f"{kind}: " + ", ".join(str(p) for p in paths))
    return 0
