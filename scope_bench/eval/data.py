"""Load a task's problems from the Hub or from local files, in one normalised form.

Local formats: JSONL, JSON, parquet (plain rows or verl rows with `prompt` messages and
`reward_model.ground_truth`), and `datasets.save_to_disk` folders. verl rows that repeat a problem
(LUFFY repeats AIME/AMC 32 times to get Avg@32 from one sample per row) are collapsed to one problem:
the harness draws `n` samples per problem instead.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import re
import sys
from pathlib import Path
from typing import Any

from scope_bench.eval.checks import DATA_DIR_ENV, require_hub, resolve_data_dir
from scope_bench.eval.tasks import Task
from scope_bench.io import read_rows


class NoLocalCopy(FileNotFoundError):
    """The task has no `local:` entry, so it cannot run from --data-dir (the harness skips it)."""


@dataclasses.dataclass(frozen=True)
class Problem:
    id: str
    problem: str
    answer: str  # math: the reference answer; choice: the gold letter
    options: tuple[str, ...] = ()  # choice tasks whose options are not already in `problem`


def fingerprint(problems: list[Problem]) -> str:
    """Short hash of the problems as graded, so two runs can tell they saw the same data."""
    blob = json.dumps([dataclasses.astuple(p) for p in problems], ensure_ascii=False).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


# ---------------------------------------------------------------- reading rows

def _read_hub(task: Task, spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The Hub rows of `task`; with no network it fails at once (see `checks.require_hub`)."""
    require_hub(task.name, spec["path"])
    import datasets

    try:
        data = datasets.load_dataset(spec["path"], spec.get("name"), split=spec.get("split", "test"))
    except Exception as err:  # gating, a wrong id, a cache miss in offline mode: say which dataset
        raise FileNotFoundError(
            f"could not load Hugging Face dataset {spec['path']!r} (config {spec.get('name')!r}, split "
            f"{spec.get('split', 'test')!r}): {err}. Pass --data-dir (or set {DATA_DIR_ENV}) or "
            f"--data {task.name}=PATH to use local files"
        ) from err
    return data.to_list()


def is_verl_row(row: dict[str, Any]) -> bool:
    return "prompt" in row and isinstance(row.get("reward_model"), dict)


# ---------------------------------------------------------------- normalising rows

def _get(row: dict[str, Any], field: str, where: str) -> Any:
    """Read `field` (dotted for nested dicts) from `row`, or fail naming the row and field."""
    value: Any = row
    for part in field.split("."):
        if not isinstance(value, dict) or part not in value:
            raise ValueError(f"{where}: missing field '{field}' (row has {sorted(row)})")
        value = value[part]
    return value


def _text(value: Any) -> str:
    """A field as text: chat messages give their last user turn, lists their first item, 27.0 gives 27."""
    if isinstance(value, list) and value and isinstance(value[0], dict) and "content" in value[0]:
        users = [m["content"] for m in value if m.get("role") == "user"]
        return str(users[-1] if users else value[-1]["content"])
    if isinstance(value, (list, tuple)):
        value = value[0] if value else ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _options(value: Any) -> list[str]:
    """Options as a list of texts: a list, or ARC's {"text": [...], "label": [...]}."""
    if isinstance(value, dict) and "text" in value:
        return [str(t) for t in value["text"]]
    return [str(v) for v in value]


def _gold_letter(value: Any, options: list[str], letters: str, where: str) -> str:
    """The gold answer as a letter, from a letter, an index, an ARC digit label or the option's text."""
    if isinstance(value, int) and not isinstance(value, bool):
        return letters[value]
    text = str(value).strip()
    if text in letters and len(text) == 1:
        return text
    if text.isdigit() and 1 <= int(text) <= len(letters):  # ARC's few rows labelled 1-4
        return letters[int(text) - 1]
    if text in options:
        return letters[options.index(text)]
    raise ValueError(f"{where}: answer {value!r} is not a letter of {letters!r}, an index or an option")


def _letter_labels(problem: str, gold: str, letters: str, where: str) -> tuple[str, str]:
    """ARC labels a few questions' options 1-4 (LUFFY keeps them in the text): relabel them A-D, as the
    Hub loader does, so that every choice task is graded on letters."""
    relabelled, count = re.subn(r"(?m)^([1-9])\) ", lambda m: f"{letters[int(m.group(1)) - 1]}) ", problem)
    if count == 0 or int(gold) > count:
        raise ValueError(f"{where}: gold answer {gold!r} is not a letter and the options are not numbered")
    return relabelled, letters[int(gold) - 1]


def _problem_from_row(task: Task, row: dict, fields: dict, index: int, where: str, verl: bool) -> Problem:
    if verl:
        problem = _text(row["prompt"])
        answer = _text(row["reward_model"].get("ground_truth"))
        extra = row.get("extra_info") or {}
        pid = str(extra.get("index", index)) if isinstance(extra, dict) else str(index)
        if task.answer_kind == "choice" and answer.isdigit():
            problem, answer = _letter_labels(problem, answer, task.letters, where)
        return Problem(id=pid, problem=problem, answer=answer)
    problem = _text(_get(row, fields["problem"], where))
    pid = str(_get(row, fields["id"], where)) if "id" in fields else str(index)
    if task.answer_kind == "math":
        return Problem(id=pid, problem=problem, answer=_text(_get(row, fields["answer"], where)))
    options: list[str] = []
    if "incorrect" in fields:  # GPQA: correct + incorrect answers, shuffled with a fixed seed
        correct = str(_get(row, fields["answer"], where)).strip()
        options = [correct] + [str(_get(row, f, where)).strip() for f in fields["incorrect"]]
        rng = random.Random(f"{task.shuffle_seed or 0}:{pid}")
        rng.shuffle(options)
        gold = task.letters[options.index(correct)]
    else:
        if "choices" in fields:
            options = _options(_get(row, fields["choices"], where))
        gold = _gold_letter(_get(row, fields["answer"], where), options, task.letters, where)
    if len(options) > len(task.letters):
        raise ValueError(f"{where}: {len(options)} options but only letters {task.letters!r}")
    return Problem(id=pid, problem=problem, answer=gold, options=tuple(options))


def _mapped_fields(fields: dict[str, Any]) -> list[str]:
    """Every row field a map reads (GPQA's `incorrect` is a list of them)."""
    names: list[str] = []
    for value in fields.values():
        names += value if isinstance(value, list) else [value]
    return names


def _has(row: dict[str, Any], field: str) -> bool:
    try:
        _get(row, field, "")
    except ValueError:
        return False
    return True


def field_maps(task: Task, first: str) -> list[tuple[str, dict[str, Any]]]:
    """The task's two field maps, `first` ("local" or "hub") before the other; one if they are equal."""
    maps = {"local": task.fields_for(task.local), "hub": task.fields_for(task.hub)}
    ordered: list[tuple[str, dict[str, Any]]] = []
    for name in [first] + [k for k in maps if k != first]:
        if all(maps[name] != fields for _, fields in ordered):
            ordered.append((name, maps[name]))
    return ordered


def choose_fields(task: Task, rows: list[dict], first: str, origin: str) -> tuple[str, dict[str, Any]]:
    """The field map that fits the rows, so a file in the Hub's format and one in the local copy's
    format both load (`--data olympiad=OlympiadBench.jsonl` with `question`/`final_answer`/`id`).

    Judged on the first plain row (a later row missing a field is still named when it is read).
    Returns ("verl", {}) for verl rows. When the map has no `id` but every row has one, ids come
    from the file instead of positions, so results stay keyed to the benchmark's own ids.
    """
    plain = [r for r in rows if not is_verl_row(r)]
    if not plain:
        return "verl", {}
    misses = []
    for name, fields in field_maps(task, first):
        missing = [f for f in _mapped_fields(fields) if not _has(plain[0], f)]
        if not missing:
            if "id" not in fields and all("id" in r for r in plain):
                fields = {**fields, "id": "id"}
            return name, fields
        misses.append(f"the {name} map {fields} lacks {missing}")
    raise ValueError(f"{origin} row 0: its fields {sorted(plain[0])} fit no field map of task "
                     f"'{task.name}': {'; '.join(misses)}")


def problems_from_rows(task: Task, rows: list[dict], source: dict | None, origin: str,
                       fields: dict[str, Any] | None = None) -> list[Problem]:
    """Normalise rows with `fields` (default: `source`'s map); verl rows are filtered by
    `data_source` and de-duplicated."""
    fields = fields if fields is not None else task.fields_for(source)
    wanted_source = (source or {}).get("data_source")
    problems: list[Problem] = []
    seen: set[tuple[str, str]] = set()
    for i, row in enumerate(rows):
        verl = is_verl_row(row)
        if verl and wanted_source is not None and row.get("data_source") != wanted_source:
            continue
        p = _problem_from_row(task, row, fields, i, f"{origin} row {i}", verl)
        if verl:
            if (p.problem, p.answer) in seen:  # a repeated copy of the same problem
                continue
            seen.add((p.problem, p.answer))
        problems.append(p)
    if not problems:
        raise ValueError(f"{origin}: no rows for task '{task.name}'"
                         + (f" with data_source '{wanted_source}'" if wanted_source else ""))
    ids = [p.id for p in problems]
    if len(set(ids)) != len(ids):  # ids must key results; fall back to positions
        problems = [dataclasses.replace(p, id=str(i)) for i, p in enumerate(problems)]
    return problems


def load_problems(task: Task, data_dir: str | Path | None = None,
                  path: str | Path | None = None) -> tuple[list[Problem], str]:
    """Problems of `task` and a description of where they came from and which field map read them.

    `path` (a per-task override, in the local copy's or the Hub's format) wins; then `data_dir`
    (default `$SCOPE_BENCH_DATA_DIR`) with the task's `local:` entry; then the Hub. With a data
    folder and no local entry the task cannot run offline: NoLocalCopy.
    """
    data_dir = resolve_data_dir(data_dir)
    if path is not None:
        source, first = dict(task.local or {}, path=str(path)), "local"  # keeps split/data_source filters
        rows, origin = read_rows(Path(path), source.get("split")), str(path)
    elif data_dir is not None:
        if not task.local:
            raise NoLocalCopy(f"task '{task.name}' has no local copy under --data-dir (Hub only: "
                              f"{(task.hub or {}).get('path')}); pass --data {task.name}=PATH to run it")
        source, first = task.local, "local"
        file = data_dir / source["path"]
        rows, origin = read_rows(file, source.get("split")), str(file)
    else:
        source, first = task.hub, "hub"
        if not source:
            raise FileNotFoundError(f"task '{task.name}' has no Hub source; pass --data-dir "
                                    f"(or set {DATA_DIR_ENV})")
        rows, origin = _read_hub(task, source), f"hf:{source['path']}"
    map_name, fields = choose_fields(task, rows, first, origin)
    print(f"scope-bench eval: {task.name}: {origin} read with the {map_name} field map "
          f"{fields or 'of verl rows'}", file=sys.stderr)
    return problems_from_rows(task, rows, source, origin, fields), f"{origin} (fields: {map_name})"


def render_prompt(task: Task, problem: Problem, fmt: str) -> str | list[dict[str, str]]:
    """The prompt for one problem: chat messages (`fmt="chat"`) or one raw string (`fmt="raw"`)."""
    options = "".join(f"\n{task.letters[i]}) {o}" for i, o in enumerate(problem.options))
    options = f"\n{options}" if options else ""
    values = {"problem": problem.problem, "options": options}
    if fmt == "raw":
        template = task.prompt.raw or task.prompt.user
        return template.format(**values)
    messages = [{"role": "system", "content": task.prompt.system}] if task.prompt.system else []
    return messages + [{"role": "user", "content": task.prompt.user.format(**values)}]
