"""Benchmark definitions: one YAML per task in `tasks/`, groups and prompt templates beside them.

A task says where its rows come from (a Hub id, a local file under `--data-dir`), which row fields
hold the problem, answer and options, how to prompt, how to grade and how to sample. Adding a
benchmark is adding a YAML; nothing here names a benchmark.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

from scope_bench.paths import TASKS_DIR

GROUPS_FILE = "_groups.yaml"
PROMPTS_FILE = "_prompts.yaml"
METRICS = ("avg", "pass")


@dataclasses.dataclass(frozen=True)
class Sampling:
    temperature: float = 0.6
    top_p: float = 1.0
    max_tokens: int = 8192
    n: int = 1

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Prompt:
    user: str
    system: str | None = None
    raw: str | None = None


@dataclasses.dataclass(frozen=True)
class Task:
    """One benchmark. `hub`/`local` are source specs: {path, name?, split?, data_source?, fields?}."""

    name: str
    fields: dict[str, Any]
    answer_kind: str  # "math" or "choice"
    prompt: Prompt
    metric: str  # "avg@K" or "pass@1"
    sampling: Sampling
    hub: dict[str, Any] | None = None
    local: dict[str, Any] | None = None
    letters: str = "ABCD"
    shuffle_seed: int | None = None
    source_file: str = ""

    def fields_for(self, source: dict[str, Any] | None) -> dict[str, Any]:
        """Field mapping of a source: its own `fields`, else the task's."""
        return dict((source or {}).get("fields") or self.fields)


def _tasks_dir(tasks_dir: str | Path | None) -> Path:
    return Path(tasks_dir) if tasks_dir is not None else TASKS_DIR


def available_tasks(tasks_dir: str | Path | None = None) -> list[str]:
    return sorted(p.stem for p in _tasks_dir(tasks_dir).glob("*.yaml") if not p.name.startswith("_"))


def load_groups(tasks_dir: str | Path | None = None) -> dict[str, list[str]]:
    path = _tasks_dir(tasks_dir) / GROUPS_FILE
    return yaml.safe_load(path.read_text()) if path.exists() else {}


def _load_prompts(tasks_dir: Path) -> dict[str, Any]:
    path = tasks_dir / PROMPTS_FILE
    return yaml.safe_load(path.read_text()) if path.exists() else {}


def _require(raw: dict, key: str, path: Path) -> Any:
    if key not in raw or raw[key] in (None, ""):
        raise ValueError(f"{path}: task is missing required field '{key}'")
    return raw[key]


def _parse_metric(metric: str, path: Path) -> str:
    kind, _, k = str(metric).partition("@")
    if kind not in METRICS or not k.isdigit() or int(k) < 1:
        raise ValueError(f"{path}: metric '{metric}' is not avg@K or pass@K")
    return str(metric)


def load_task(name_or_path: str | Path, tasks_dir: str | Path | None = None) -> Task:
    """Read one task by name (`tasks/<name>.yaml`) or from a YAML path."""
    tdir = _tasks_dir(tasks_dir)
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = tdir / f"{name_or_path}.yaml"
        if not path.exists():
            known = ", ".join(available_tasks(tdir) + sorted(load_groups(tdir)))
            raise ValueError(f"unknown task '{name_or_path}' (no {path}); known tasks and groups: {known}")
    elif not path.exists():
        raise FileNotFoundError(f"task file {path} does not exist")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: a task file must be a mapping")  # noqa: TRY004 (the CLI reports ValueError)
    fields = _require(raw, "fields", path)
    if "problem" not in fields or "answer" not in fields:
        raise ValueError(f"{path}: 'fields' must map at least 'problem' and 'answer'")
    answer = _require(raw, "answer", path)
    kind = answer.get("kind")
    if kind not in ("math", "choice"):
        raise ValueError(f"{path}: answer.kind must be 'math' or 'choice', got {kind!r}")
    prompt = _require(raw, "prompt", path)
    if isinstance(prompt, str):
        templates = _load_prompts(path.parent)
        if prompt not in templates:
            raise ValueError(f"{path}: prompt '{prompt}' is not defined in {path.parent / PROMPTS_FILE}")
        prompt = templates[prompt]
    if "user" not in prompt:
        raise ValueError(f"{path}: prompt needs a 'user' template")
    if not raw.get("hub") and not raw.get("local"):
        raise ValueError(f"{path}: task needs a 'hub' or a 'local' source")
    sampling = Sampling(**(raw.get("sampling") or {}))
    return Task(
        name=raw.get("name", path.stem),
        fields=dict(fields),
        answer_kind=kind,
        prompt=Prompt(user=prompt["user"], system=prompt.get("system"), raw=prompt.get("raw")),
        metric=_parse_metric(_require(raw, "metric", path), path),
        sampling=sampling,
        hub=raw.get("hub"),
        local=raw.get("local"),
        letters=str(answer.get("letters", "ABCD")),
        shuffle_seed=answer.get("shuffle_seed"),
        source_file=str(path),
    )


def resolve_task_names(spec: str | list[str], tasks_dir: str | Path | None = None) -> list[str]:
    """Expand a comma-separated list of task and group names, keeping order and dropping repeats."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    groups = load_groups(tasks_dir)
    names: list[str] = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        for name in groups.get(item, [item]):
            if name not in names:
                names.append(name)
    return names


def with_sampling(task: Task, **overrides: Any) -> Task:
    """A copy of `task` with some sampling settings replaced (None values are ignored)."""
    changes = {k: v for k, v in overrides.items() if v is not None}
    return dataclasses.replace(task, sampling=dataclasses.replace(task.sampling, **changes))
