"""`scope-bench grade`: grade a JSONL or parquet of responses; labels and a summary out.

    scope-bench grade results.jsonl --response-field response --answer-field ground_truth
    scope-bench grade rollouts.parquet --answer-field reward_model.ground_truth --out-dir runs/grade/x

Labels (`labels.jsonl`, one line per input row, in order) are appended chunk by chunk, so an
interrupted run resumes where it stopped; `summary.json` is rebuilt from all labels at the end.
Rows whose source (`--source-field`, e.g. LUFFY's `data_source`) is ARC/GPQA/MMLU are graded as
multiple choice, the rest as math, unless `--kind` says otherwise. The grading policy options
(`--unboxed`, `--percent`, `--decimal-comma`) default to what eval and the training reward use;
`summary.json` records them with the grader's version (docs/grading.md).
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

from scope_bench.grading.policy import grading_record
from scope_bench.io import read_rows

CHUNK = 512


def register(subparsers) -> None:
    p = subparsers.add_parser("grade", help="grade responses against ground truths (math or multiple choice)",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("input", type=Path, help="a .jsonl or .parquet file, one response per row")
    p.add_argument("--response-field", default="response", help="field with the model response")
    p.add_argument("--answer-field", default="ground_truth",
                   help="field with the ground truth; dots reach nested fields: reward_model.ground_truth")
    p.add_argument("--source-field", default="data_source",
                   help="field naming the benchmark (optional; decides math vs multiple choice)")
    p.add_argument("--kind", choices=("auto", "math", "choice"), default="auto")
    p.add_argument("--out-dir", type=Path, default=None, help="default: runs/grade/<input name>")
    p.add_argument("--workers", type=int, default=None,
                   help="grading processes (default: one per core, max 8)")
    p.add_argument("--timeout-s", type=float, default=None, help="time limit per answer (default 5)")
    policy = p.add_argument_group("grading policy (defaults: what eval and the training reward use; "
                                  "docs/grading.md)")
    policy.add_argument("--unboxed", choices=("anchored", "last_math"), default="anchored",
                        help="a response with no box: anchored = only an answer phrase (`The final answer "
                             "is`, `Answer:`, `####`) gives its answer (default); last_math = else its "
                             "last math span or number, for models that neither box nor say so")
    policy.add_argument("--percent", choices=("drop", "either"), default="drop",
                        help="drop = `28\\%%` is 28 on both sides, as the MATH benchmark means it (default); "
                             "either = a gold `28\\%%` also accepts 0.28")
    policy.add_argument("--decimal-comma", action="store_true",
                        help="read `1,5` and `0,111` as decimals (default: `1,5` is two items, `1,234` "
                             "is a thousands separator)")
    p.add_argument("--overwrite", action="store_true", help="start again instead of resuming")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(func=run)


def field(row: dict, path: str, where: str):
    """`row[a][b]` for path `a.b`; ValueError naming the file, row and field when absent."""
    value = row
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            raise ValueError(f"{where}: no field {path!r} (has {sorted(row)})")
        value = value[key]
    return value


def _kind(row: dict, args) -> str:
    if args.kind != "auto":
        return args.kind
    from scope_bench.grading.verl_reward import is_choice_source

    source = row.get(args.source_field)
    return "choice" if source is not None and is_choice_source(source) else "math"


def policy_of(args):
    """The grading policy the command line asks for."""
    from scope_bench.grading.policy import GradingPolicy

    return GradingPolicy(unboxed=getattr(args, "unboxed", "anchored"), percent=getattr(args, "percent", "drop"),
                         decimal_comma=bool(getattr(args, "decimal_comma", False)))


def grade_rows(rows: list[dict], args, where: str, start: int = 0) -> list[dict]:
    """Labels for `rows`: math answers as one batch, multiple choice one by one (cheap)."""
    from scope_bench.grading.batch import DEFAULT_TIMEOUT_S, grade_math_batch
    from scope_bench.grading.choice import choice_reward, extract_choice

    labels: list[dict | None] = [None] * len(rows)
    math_idx = []
    for i, row in enumerate(rows):
        response = field(row, args.response_field, f"{where} row {start + i}")
        truth = field(row, args.answer_field, f"{where} row {start + i}")
        source = row.get(args.source_field)
        if _kind(row, args) == "choice":
            prediction = extract_choice(str(response or ""))
            correct = choice_reward(str(response or ""), truth)
            labels[i] = {"prediction": prediction, "correct": int(correct), "method": "choice",
                         "source": source}
        else:
            math_idx.append(i)
    timeout_s = DEFAULT_TIMEOUT_S if args.timeout_s is None else args.timeout_s
    grades = grade_math_batch([str(field(rows[i], args.response_field, where) or "") for i in math_idx],
                              [field(rows[i], args.answer_field, where) for i in math_idx],
                              progress=len(math_idx) > CHUNK // 2,
                              timeout_s=timeout_s, workers=args.workers, policy=policy_of(args))
    for i, grade in zip(math_idx, grades):
        labels[i] = {"prediction": grade.prediction, "correct": int(grade.correct), "method": grade.method,
                     "source": rows[i].get(args.source_field)}
    return labels


def summarize(labels: list[dict], input_path: Path, policy=None) -> dict:
    by_source: dict = defaultdict(lambda: [0, 0])
    for label in labels:
        counts = by_source[str(label.get("source"))]
        counts[0] += 1
        counts[1] += label["correct"]
    methods = Counter(label["method"] for label in labels)
    n = len(labels)
    return {
        "input": str(input_path),
        "n": n,
        "correct": sum(label["correct"] for label in labels),
        "accuracy": 100.0 * sum(label["correct"] for label in labels) / n if n else 0.0,
        "no_answer": methods.get("no_answer", 0),
        "timeouts": methods.get("timeout", 0),
        "errors": methods.get("error", 0),
        "methods": dict(methods),
        "by_source": {s: {"n": c[0], "accuracy": 100.0 * c[1] / c[0]} for s, c in sorted(by_source.items())},
        "grading": grading_record(policy) if policy is not None else grading_record(),
    }


def run(args) -> int:
    from tqdm.auto import tqdm

    from scope_bench.paths import PROJECT_ROOT

    rows = read_rows(args.input)
    out_dir = args.out_dir or PROJECT_ROOT / "runs" / "grade" / args.input.stem
    out_dir.mkdir(parents=True, exist_ok=True)
    labels_path = out_dir / "labels.jsonl"
    done = []
    if labels_path.exists() and not args.overwrite:
        done = [json.loads(line) for line in labels_path.read_text().splitlines() if line.strip()]
        if len(done) > len(rows):
            raise ValueError(f"{labels_path} has {len(done)} labels for {len(rows)} rows of {args.input}: "
                             "use --overwrite")
    else:
        labels_path.write_text("")
    with labels_path.open("a") as out, tqdm(total=len(rows), initial=len(done), desc="grade") as bar:
        for start in range(len(done), len(rows), CHUNK):
            chunk = rows[start:start + CHUNK]
            labels = grade_rows(chunk, args, str(args.input), start)
            for offset, label in enumerate(labels):
                out.write(json.dumps({"index": start + offset, **label}) + "\n")
            out.flush()
            done += labels
            bar.update(len(chunk))
    summary = summarize(done, args.input, policy_of(args))
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"{summary['correct']}/{summary['n']} correct ({summary['accuracy']:.2f}%), "
          f"{summary['no_answer']} without an answer, {summary['timeouts']} timed out -> {out_dir}")
    return 0
