"""`scope-bench data prepare`: a question/answer dataset as verl's training parquet.

    scope-bench data prepare --preset math-l3to5 --out data/math_l3to5      # 8,523 MATH problems, levels 3-5
    scope-bench data prepare --preset math-l3to5 --dataset train.parquet --out data/math_l3to5   # a local copy
    scope-bench data prepare --preset math500 --out data/math500            # validation
    scope-bench data prepare --dataset my.jsonl --question-field q --answer-field a --out data/mine
    scope-bench data distill --data data/math_l3to5/train.parquet --url URL/v1 --model M --out DIR
                                         # teacher solutions: verl SFT parquet + LUFFY's `target` column

Each row: `data_source`, `prompt` (the paper's chat: system "You are a helpful assistant.", user =
question + "Please reason step by step, and put your final answer within \\boxed{}."), `ability`,
`reward_model = {style: rule, ground_truth}`, `extra_info = {split, index, question, level, source}`.
The project's grader is verl's custom reward function (`scope_bench/grading/verl_reward.py`); the
SCOPE stage reads the question back from `extra_info.question`.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from scope_bench.engines.fields import ANSWER_FIELDS, QUESTION_FIELDS, answer_value
from scope_bench.io import read_rows, write_parquet

PRESETS = {
    # The paper's training set: the 8,523 MATH level 3-5 problems SimpleRL-Zoo trains on, one parquet file
    # of that dataset repository (question, gt_answer, level, subject). `rows` is checked after reading.
    "math-l3to5": {"dataset": "hkust-nlp/SimpleRL-Zoo-Data", "file": "simplelr_qwen_level3to5/train.parquet",
                   "question_field": "question", "answer_field": "gt_answer", "data_source": "math", "rows": 8523},
    # MATH's own train split filtered to levels 3-5 (fewer problems: the split has 7,500 of all levels);
    # the answer is the solution's last \boxed{}
    "math-train-l3to5": {"dataset": "DigitalLearningGmbH/MATH-lighteval", "split": "train",
                         "question_field": "problem", "answer_from": "solution", "levels": [3, 4, 5],
                         "data_source": "math"},
    "math500": {"dataset": "HuggingFaceH4/MATH-500", "split": "test", "question_field": "problem",
                "answer_field": "answer", "data_source": "math"},
}


def register(subparsers) -> None:
    p = subparsers.add_parser("data", help="prepare datasets for the verl backend",
                              description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    q = sub.add_parser("prepare", help="question/answer dataset -> verl parquet",
                       description=__doc__.splitlines()[0], epilog="\n".join(__doc__.splitlines()[1:]),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    q.add_argument("--preset", choices=sorted(PRESETS), help="a known dataset with its fields and filter")
    q.add_argument("--dataset", help="local .parquet/.jsonl/.json/.csv, a `datasets.save_to_disk` folder, "
                                     "or a Hugging Face dataset id")
    q.add_argument("--config", help="dataset configuration name (Hub datasets)")
    q.add_argument("--split", help="split to read (default train)")
    q.add_argument("--question-field", help=f"default: the first of {', '.join(QUESTION_FIELDS)}")
    q.add_argument("--answer-field", help=f"default: the first of {', '.join(ANSWER_FIELDS)}")
    q.add_argument("--answer-from", metavar="FIELD", help="take the answer as the last \\boxed{} of FIELD "
                                                          "(e.g. a MATH solution)")
    q.add_argument("--levels", help="keep only these difficulty levels, e.g. 3,4,5 (MATH's `level` field)")
    q.add_argument("--level-field", default="level")
    q.add_argument("--data-source", help="data_source column (selects the grader; default: from the name)")
    q.add_argument("--limit", type=int, help="keep the first N rows (after filtering)")
    q.add_argument("--out", required=True, help="output folder (writes <split>.parquet) or a .parquet path")
    q.add_argument("--debug", action="store_true", help="show tracebacks")
    q.set_defaults(func=run)
    from scope_bench.engines import distill

    distill.register(sub)


def run(args) -> int:
    spec = dict(PRESETS[args.preset]) if args.preset else {}
    if args.dataset:
        spec.pop("file", None)  # a local copy of the preset's file
    for key in ("dataset", "config", "split", "question_field", "answer_field", "answer_from", "data_source"):
        if getattr(args, key, None):
            spec[key] = getattr(args, key)
    if args.levels:
        spec["levels"] = [int(x) for x in args.levels.split(",")]
    if not spec.get("dataset"):
        raise ValueError("give --preset or --dataset")
    split = spec.get("split") or "train"
    rows = read_rows(_hub_file(spec["dataset"], spec["file"]) if spec.get("file") else spec["dataset"], split,
                     spec.get("config"))
    records, skipped = to_verl_rows(
        rows, where=spec["dataset"], split=split, question_field=spec.get("question_field"),
        answer_field=spec.get("answer_field"), answer_from=spec.get("answer_from"), levels=spec.get("levels"),
        level_field=args.level_field, data_source=spec.get("data_source") or _source_name(spec["dataset"]))
    if args.limit is not None:
        records = records[: args.limit]
    elif spec.get("rows") and len(records) != spec["rows"]:
        print(f"warning: {args.preset} has {spec['rows']:,} problems in the paper, this source gave {len(records):,}",
              file=sys.stderr)
    out = Path(args.out)
    path = out if out.suffix == ".parquet" else out / f"{split}.parquet"
    write_parquet(records, path)
    note = f"; skipped {len(skipped)} rows without an answer (first: row {skipped[0]})" if skipped else ""
    print(f"wrote {len(records)} rows to {path}{note}")
    return 0


def to_verl_rows(rows: list[dict], *, where: str, split: str, question_field=None, answer_field=None,
                 answer_from=None, levels=None, level_field: str = "level", data_source: str = "math"):
    """`(verl rows, indices of source rows skipped for want of an answer)`."""
    from tqdm import tqdm

    from scope_bench.grading.extract import last_boxed
    from scope_bench.prompts import chat_messages

    if not rows:
        raise ValueError(f"{where}: no rows")
    columns = list(rows[0])
    question_field = question_field or _first(columns, QUESTION_FIELDS, "question", where)
    if not answer_from:
        answer_field = answer_field or _first(columns, ANSWER_FIELDS, "answer", where)
    for field in (question_field, answer_from or answer_field):
        if field not in columns:
            raise ValueError(f"{where}: no field {field!r}; fields are {columns}")
    if levels and level_field not in columns:
        raise ValueError(f"{where}: no field {level_field!r} to filter levels on; fields are {columns}")
    records, skipped = [], []
    for index, row in enumerate(tqdm(rows, desc="prepare", disable=len(rows) < 5000)):
        level = _level(row.get(level_field)) if level_field in row else None
        if levels and level not in levels:
            continue
        question = row[question_field]
        if not isinstance(question, str) or not question.strip():
            raise ValueError(f"{where} row {index}: field {question_field!r} is not a non-empty string")
        answer = last_boxed(str(row[answer_from] or "")) if answer_from else answer_value(row[answer_field])
        if answer is None or not str(answer).strip():
            skipped.append(index)
            continue
        records.append({
            "data_source": data_source,
            "prompt": chat_messages(question.strip()),
            "ability": "math",
            "reward_model": {"style": "rule", "ground_truth": str(answer).strip()},
            "extra_info": {"split": split, "index": len(records), "source_index": index,
                           "question": question.strip(), "level": level, "source": where},
        })
    if not records:
        raise ValueError(f"{where}: no rows left after filtering (levels={levels}, skipped {len(skipped)})")
    return records, skipped


def _hub_file(repo_id: str, filename: str) -> str:
    """One file of a Hub dataset repository (cached): a repository of several subsets, each its own
    folder, would otherwise be read as one dataset."""
    from huggingface_hub import hf_hub_download

    return hf_hub_download(repo_id, filename, repo_type="dataset")


def _first(columns, candidates, what: str, where: str) -> str:
    for name in candidates:
        if name in columns:
            return name
    raise ValueError(f"{where}: no {what} field among {columns}; name it with --{what}-field")


def _level(value) -> int | None:
    """MATH's "Level 3" (or 3); None for "Level ?" and missing values."""
    found = re.search(r"\d+", str(value)) if value is not None else None
    return int(found.group()) if found else None


def _source_name(dataset: str) -> str:
    name = Path(dataset).stem if Path(dataset).suffix else dataset.rstrip("/").split("/")[-1]
    return name.lower() or "math"
