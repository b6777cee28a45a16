"""Benchmark definitions: one YAML per task in `tasks/`, groups and prompt templates beside them.

A task says where its rows come from (a Hub id, a local file under `--data-dir`), which row fields
hold the problem, answer and options, how to prompt, how to grade and how to sample, and how reports
name it (`title`, its column header). Adding a benchmark is adding a YAML; nothing here (nor in the
reports) names a benchmark.

`metric` is `avg` (mean accuracy over the `sampling.n` samples of a problem, reported as Avg@n) or
`pass@K`. `version` (default 1) is bumped whenever a change alters what a score means (rows, fields,
prompt, grading, sampling); evaluation records it and reports flag numbers made under another.
The older spelling `avg@K` is accepted when K equals `sampling.n` (K is never used: the
samples drawn decide it), so a YAML cannot say one number and sample another.

Groups (`_groups.yaml`) are lists of task names, or mappings `{tasks: [...], title: ..., short: ...}`
where `title` is the header over the group's columns in reports and `short` names its average column
(`avg-<short>`) and figure; `load_groups` gives every group as its list of tasks either way.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

from scope_bench.paths import TASKS_DIR
from scope_bench.prompts import PROMPTS_FILE, load_prompts

GROUPS_FILE = "_groups.yaml"
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
    metric: str  # "avg@K" (K = sampling.n) or "pass@K"
    sampling: Sampling
    hub: dict[str, Any] | None = None
    local: dict[str, Any] | None = None
    letters: str = "ABCD"
    shuffle_seed: int | None = None
    source_file: str = ""
    title: str = ""  # short column header in reports (default: the name)
    version: int = 1  # the definition's version (as lm-eval's metadata.version), recorded in summaries

    @property
    def header(self) -> str:
        """The task's column header in reports: its `title`, else its name."""
        return self.title or self.name

    @property
    def metric_kind(self) -> str:
        """The metric's kind: avg or pass."""
        return self.metric.partition("@")[0]

    @property
    def metric_label(self) -> str:
        """The metric as reports print it: "Avg@32" (from `sampling.n`) or "pass@1"."""
        if self.metric_kind == "avg":
            return f"Avg@{self.sampling.n}"
        return self.metric

    def fields_for(self, source: dict[str, Any] | None) -> dict[str, Any]:
        """Field mapping of a source: its own `fields`, else the task's."""
        return dict((source or {}).get("fields") or self.fields)


def _tasks_dir(tasks_dir: str | Path | None) -> Path:
    return Path(tasks_dir) if tasks_dir is not None else TASKS_DIR


def available_tasks(tasks_dir: str | Path | None = None) -> list[str]:
    return sorted(p.stem for p in _tasks_dir(tasks_dir).glob("*.yaml") if not p.name.startswith("_"))


@dataclasses.dataclass(frozen=True)
class Group:
    """One group of `_groups.yaml`: its tasks, and how reports head its columns (`title`, `short`)."""

    name: str
    tasks: tuple[str, ...]
    title: str | None = None
    short: str | None = None

    @property
    def average_column(self) -> str:
        """Key of the group's average column in report tables: `avg-<short>` (else `avg-<name>`)."""
        return f"avg-{self.short or self.name}"


def load_group_specs(tasks_dir: str | Path | None = None) -> dict[str, Group]:
    """Every group of `_groups.yaml`, in file order, with its report fields."""
    path = _tasks_dir(tasks_dir) / GROUPS_FILE
    raw = (yaml.safe_load(path.read_text()) if path.exists() else None) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping of group name -> task list")  # noqa: TRY004
    groups = {}
    for name, spec in raw.items():
        if isinstance(spec, dict):
            unknown = sorted(set(spec) - {"tasks", "title", "short"})
            if unknown or not isinstance(spec.get("tasks"), list):
                raise ValueError(f"{path}: group '{name}' must be a list of tasks or a mapping with 'tasks' "
                                 f"and optional 'title', 'short' (unknown keys: {unknown})")
            groups[name] = Group(name, tuple(map(str, spec["tasks"])), spec.get("title"), spec.get("short"))
        elif isinstance(spec, list):
            groups[name] = Group(name, tuple(map(str, spec)))
        else:
            raise ValueError(f"{path}: group '{name}' must be a list of task names, got {spec!r}")  # noqa: TRY004
    return groups


def load_groups(tasks_dir: str | Path | None = None) -> dict[str, list[str]]:
    """`{group: [task, ...]}` of `_groups.yaml`."""
    return {name: list(g.tasks) for name, g in load_group_specs(tasks_dir).items()}


def _require(raw: dict, key: str, path: Path) -> Any:
    if key not in raw or raw[key] in (None, ""):
        raise ValueError(f"{path}: task is missing required field '{key}'")
    return raw[key]


def _parse_metric(metric: str, n: int, path: Path) -> str:
    """The task's metric as stored and reported: `avg` -> `avg@n`; `avg@K` must have K == n."""
    kind, at, k = str(metric).partition("@")
    if kind == "avg" and not at:
        return f"avg@{n}"
    if kind not in METRICS or not k.isdigit() or int(k) < 1:
        raise ValueError(f"{path}: metric '{metric}' is not avg, avg@K or pass@K")
    if kind == "avg" and int(k) != n:
        raise ValueError(f"{path}: metric '{metric}' disagrees with sampling.n = {n} (write `metric: avg`: "
                         "Avg@n takes n from sampling)")
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
        templates = load_prompts(path.parent)
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
        metric=_parse_metric(_require(raw, "metric", path), sampling.n, path),
        sampling=sampling,
        hub=raw.get("hub"),
        local=raw.get("local"),
        letters=str(answer.get("letters", "ABCD")),
        shuffle_seed=answer.get("shuffle_seed"),
        source_file=str(path),
        title=str(raw.get("title") or ""),
        version=_parse_version(raw.get("version", 1), path),
    )


def _parse_version(version: Any, path: Path) -> int:
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"{path}: version must be a whole number from 1, got {version!r}")
    return version


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
    """A copy of `task` with some sampling settings replaced (None values are ignored); an `avg`
    metric follows the new `n`."""
    changes = {k: v for k, v in overrides.items() if v is not None}
    sampling = dataclasses.replace(task.sampling, **changes)
    metric = f"avg@{sampling.n}" if task.metric_kind == "avg" else task.metric
    return dataclasses.replace(task, sampling=sampling, metric=metric)
