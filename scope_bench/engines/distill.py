"""`scope-bench data distill`: teacher solutions for the training prompts, asked once and kept.

    scope-bench data distill --data data/math_l3to5/train.parquet --url https://api.deepseek.com/v1 \\
        --model deepseek-reasoner --out data/math_l3to5_r1          # key in $SCOPE_REFINER_API_KEY
    scope-bench data distill --url http://127.0.0.1:8001/v1 --model synthetic-refiner --out data/distill
                                                  # the synthetic training prompts, against `scope-bench serve`

Each prompt is sent as the RL prompt itself (the `prompt` column `data prepare` writes, or
`chat_messages(question)` for a question/answer file: the training chat template, as GRPO samples it,
which is how the paper's SFT data was made) to an OpenAI-compatible chat endpoint through the
refiner's HTTP client. Each reply, reasoning removed as the refiner removes it,
is graded with the project's grader against the prompt's answer; a prompt gets up to `--tries`
attempts and stops at its first correct one. Outputs in `--out`:

    attempts.jsonl  one line per finished call, appended as replies arrive: a rerun resumes from it and
                    never asks again for a prompt that has a correct solution or `--tries` answered
                    attempts (a call that got no reply, e.g. a refused connection, is not a try)
    sft.parquet     verl's SFT data: `messages` = the prompt's chat + the assistant's solution, one row
                    per prompt with a correct one (verl's MultiTurnSFTDataset, `messages_key: messages`)
    train.parquet   the input rows, all of them, with `target` = the kept solution ("" where none
                    was kept: LUFFY leaves that group as sampled and counts it) and top-level `question`
                    and `answer` (what the local trainer reads): `luffy.source=data` (its default `luffy.trace_key` is `target`)
    distill.json    prompts, tries, attempts, kept, kept fraction, unfinished (prompts a rerun would ask
                    again), the tokens the server billed, errors by kind
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

ATTEMPTS_FILE = "attempts.jsonl"
SFT_FILE = "sft.parquet"
TARGET_FILE = "train.parquet"
SUMMARY_FILE = "distill.json"
TARGET_COLUMN = "target"  # LUFFY's public data names its teacher column so
DEFAULT_TRIES = 4


def register(sub) -> None:
    """Adds `distill` to the `data` command's actions."""
    q = sub.add_parser("distill", help="teacher solutions for the training prompts -> verl SFT parquet "
                                       "and a `target` column", description=__doc__.splitlines()[0],
                       epilog="\n".join(__doc__.splitlines()[1:]), formatter_class=argparse.RawDescriptionHelpFormatter)
    q.add_argument("--data", default="synthetic",
                   help="the prepared training parquet (`scope-bench data prepare`), a question/answer file, or "
                        "`synthetic` (default: the embedded synthetic task's training problems)")
    q.add_argument("--n", type=int, default=2000, help="synthetic: how many training problems (default 2000)")
    q.add_argument("--seed", type=int, default=0, help="synthetic: the problems' seed")
    q.add_argument("--url", required=True, help="OpenAI-compatible base URL with its version, e.g. "
                                                "https://api.deepseek.com/v1 or http://127.0.0.1:8001/v1")
    q.add_argument("--model", required=True, help="model name the endpoint serves")
    q.add_argument("--api-key-env", default="SCOPE_REFINER_API_KEY",
                   help="environment variable holding the API key (default SCOPE_REFINER_API_KEY; unset: no key)")
    q.add_argument("--tries", type=int, default=DEFAULT_TRIES,
                   help=f"attempts per prompt until one is correct (default {DEFAULT_TRIES})")
    q.add_argument("--concurrency", type=int, default=32, help="calls open at once (default 32)")
    q.add_argument("--max-tokens", type=int, default=16384,
                   help="max_tokens per reply, reasoning included (default 16384); a reply cut there is a wrong try")
    q.add_argument("--temperature", type=float, default=0.6,
                   help="sampling temperature (default 0.6, DeepSeek-R1's recommendation; at 0 every try is the same)")
    q.add_argument("--timeout", type=float, default=600.0, help="seconds per call (default 600)")
    q.add_argument("--retries", type=int, default=3, help="retries of a failed call (timeouts, 429, 5xx)")
    q.add_argument("--limit", type=int, help="only the first N prompts")
    q.add_argument("--out", required=True, help="output folder (resumed when it holds attempts.jsonl)")
    q.add_argument("--debug", action="store_true", help="show tracebacks")
    q.set_defaults(func=run)


def run(args) -> int:
    if args.tries < 1:
        raise ValueError(f"--tries must be >= 1, got {args.tries}")
    from scope_bench.engines.http import JSONEndpoint

    records = load_prompts(args.data, n=args.n, seed=args.seed)[: args.limit]
    endpoint = JSONEndpoint(args.url.rstrip("/") + "/chat/completions", api_key_env=args.api_key_env,
                            concurrency=args.concurrency, timeout_s=args.timeout, retries=args.retries)
    body = {"model": args.model, "temperature": args.temperature, "max_tokens": args.max_tokens}
    summary = distill(records, Path(args.out), endpoint, body, tries=args.tries)
    print(f"{summary['kept']} of {summary['prompts']} prompts kept ({summary['kept_fraction']:.1%}) in "
          f"{summary['attempts']} attempts; tokens billed: {summary['prompt_tokens']:,} prompt + "
          f"{summary['completion_tokens']:,} completion; wrote {Path(args.out) / SFT_FILE}, "
          f"{Path(args.out) / TARGET_FILE} (column `{TARGET_COLUMN}`) and {Path(args.out) / SUMMARY_FILE}")
    if summary["unfinished"]:
        print(f"{summary['unfinished']} prompts got no reply on some try (errors: {summary['errors']}); "
              "rerun the same command to ask them again", file=sys.stderr)
    return 0


def load_prompts(data: str, *, n: int, seed: int) -> list[dict]:
    """The rows to distill: a prepared parquet (`prompt`, `reward_model`; `scope-bench data prepare`), a
    question/answer file, or the synthetic task's training split. Each gets `_question`, `_answer` and
    `_messages` (its `prompt` column where it has one, else `chat_messages(question)`); a row without
    them is an error naming the file, row and field."""
    from scope_bench.engines.fields import ANSWER_FIELDS, QUESTION_FIELDS, answer_value
    from scope_bench.io import read_rows
    from scope_bench.prompts import chat_messages

    if data == "synthetic":
        from scope_bench.synthetic.task import generate_split

        rows, data = generate_split("train", n, seed), "synthetic train"
    elif not Path(data).exists():
        raise FileNotFoundError(f"--data {data} does not exist (give the parquet `scope-bench data prepare` wrote)")
    else:
        rows = read_rows(data)
    if not rows:
        raise ValueError(f"{data}: no rows")
    out = []
    for i, row in enumerate(rows):
        prompt = row.get("prompt")
        if isinstance(prompt, list):  # verl's chat prompt: sent as is, the question read from extra_info
            if not all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in prompt):
                raise ValueError(f"{data} row {i}: field 'prompt' is not a list of chat messages")
            question = (row.get("extra_info") or {}).get("question") or next(
                (m["content"] for m in prompt if m.get("role") == "user"), None)
            messages = [{"role": m["role"], "content": m["content"]} for m in prompt]
        else:
            question = next((row[k] for k in QUESTION_FIELDS if isinstance(row.get(k), str)), None)
            messages = chat_messages(question.strip()) if question else None
        if not question or not question.strip():
            raise ValueError(f"{data} row {i}: no question (fields tried: {', '.join(QUESTION_FIELDS)}; "
                             f"the row has {sorted(row)})")
        answer = next((answer_value(row[k]) for k in ANSWER_FIELDS if row.get(k) is not None), None)
        if answer is None or not str(answer).strip():
            raise ValueError(f"{data} row {i}: no answer (fields tried: {', '.join(ANSWER_FIELDS)}; "
                             f"the row has {sorted(row)})")
        out.append({**row, "_question": question.strip(), "_answer": str(answer).strip(), "_messages": messages})
    return out


def distill(records: list[dict], out: Path, endpoint, body: dict, *, tries: int) -> dict:
    """Ask for, grade and keep solutions of `records` (see the module docstring); returns the summary.

    Waves: each sends one call for every prompt still open (no correct solution, fewer than `tries`
    answered attempts), all in flight under the endpoint's bound; each reply is graded and appended
    to attempts.jsonl as it arrives, so a killed run loses only the calls still open."""
    from tqdm import tqdm

    from scope_bench.engines.http import CallError
    from scope_bench.engines.refiner import parse_chat_reply, reply_usage
    from scope_bench.grading import math_reward

    out.mkdir(parents=True, exist_ok=True)
    path = out / ATTEMPTS_FILE
    attempts = _read_attempts(path, records)
    tried, solved = Counter(), {}
    for a in attempts:
        tried[a["index"]] += a["answered"]
        if a["correct"]:
            solved.setdefault(a["index"], a["solution"])

    def is_open(i: int) -> bool:
        return i not in solved and tried[i] < tries

    bar = tqdm(total=len(records), initial=sum(not is_open(i) for i in range(len(records))), desc="distill",
               unit="prompt", file=sys.stderr)
    with path.open("a", encoding="utf-8") as log:
        def record(entry: dict) -> None:
            log.write(json.dumps(entry, ensure_ascii=False) + "\n")
            log.flush()
            attempts.append(entry)
            i = entry["index"]
            tried[i] += entry["answered"]
            if entry["correct"]:
                solved.setdefault(i, entry["solution"])
            if not is_open(i):
                bar.update()
                bar.set_postfix(kept=len(solved))

        for _ in range(tries):
            todo = [i for i in range(len(records)) if is_open(i)]
            if not todo:
                break

            def parse(k: int, reply, todo=todo) -> None:
                i = todo[k]
                usage = reply_usage(reply)  # billed even when the reply is unusable
                try:
                    text, error = parse_chat_reply(reply), None
                except CallError as err:
                    text, error = None, err.kind
                truth = records[i]["_answer"]
                correct = text is not None and math_reward(text, truth) == 1.0
                record({"index": i, "question": records[i]["_question"], "answered": True, "correct": correct,
                        "solution": text, "error": error, "usage": usage})

            got = endpoint.post_all([{**body, "messages": records[i]["_messages"]} for i in todo], parse, Counter())
            refused = [g for g in got if isinstance(g, CallError)]
            for k, g in enumerate(got):
                if isinstance(g, CallError):  # no reply: not a try, asked again by the next wave or run
                    record({"index": todo[k], "question": records[todo[k]]["_question"], "answered": False,
                            "correct": False, "solution": None, "error": g.kind, "usage": None})
            if refused and len(refused) == len(got) and refused[0].status in (401, 403, 404):
                bar.close()
                raise ValueError(f"{endpoint.url} refused every call with {refused[0].status}: a wrong URL (it "
                                 f"includes the API version, e.g. /v1), model name or key (${endpoint.api_key_env}); "
                                 f"{str(refused[0])[:200]}")
    bar.close()
    return write_outputs(records, out, solved, attempts, tries)


def write_outputs(records: list[dict], out: Path, solved: dict[int, str], attempts: list[dict], tries: int) -> dict:
    """sft.parquet, train.parquet and distill.json from the kept solutions (rebuilt whole on each run)."""
    from scope_bench.io import write_parquet

    sft = [{"messages": [*records[i]["_messages"], {"role": "assistant", "content": solved[i]}],
            "question": records[i]["_question"], "answer": records[i]["_answer"]} for i in sorted(solved)]
    if sft:
        write_parquet(sft, out / SFT_FILE)
    write_parquet([{**{k: v for k, v in r.items() if not k.startswith("_")}, "question": r["_question"],
                    "answer": r["_answer"], TARGET_COLUMN: solved.get(i, "")} for i, r in enumerate(records)],
                  out / TARGET_FILE)
    usage = [a["usage"] for a in attempts if a["usage"]]
    answered = Counter(a["index"] for a in attempts if a["answered"])
    summary = {"prompts": len(records), "tries": tries, "attempts": sum(answered.values()),
               "kept": len(solved), "kept_fraction": len(solved) / len(records) if records else 0.0,
               "unfinished": sum(i not in solved and answered[i] < tries for i in range(len(records))),
               "prompt_tokens": sum(u[0] for u in usage), "completion_tokens": sum(u[1] for u in usage),
               "replies_without_usage": sum(a["answered"] and not a["usage"] for a in attempts),
               "errors": dict(Counter(a["error"] for a in attempts if a["error"])),
               "sft_file": SFT_FILE if sft else None, "target_file": TARGET_FILE, "target_column": TARGET_COLUMN}
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _read_attempts(path: Path, records: list[dict]) -> list[dict]:
    """The attempts of an earlier run (a line torn by a kill is dropped); each must be of these prompts."""
    from scope_bench.io import drop_torn_end, read_jsonl

    if not path.exists():
        return []
    drop_torn_end(path)
    kept = []
    for n, a in enumerate(read_jsonl(path), 1):
        i = a.get("index") if isinstance(a, dict) else None
        if not isinstance(i, int) or i < 0:
            raise ValueError(f"{path}:{n}: not an attempt (no integer `index`)")
        if i >= len(records):
            continue  # a prompt beyond this run's --limit: stays in the file for a later run
        if a.get("question") != records[i]["_question"]:
            raise ValueError(f"{path}:{n}: an attempt at another question than this data's prompt {i}: the folder "
                             "was made from other data; use another --out")
        kept.append(a)
    return kept
