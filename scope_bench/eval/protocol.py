"""Sampling protocols: the settings a comparison's numbers were drawn with, chosen by one name.

The paper compares against LUFFY's published numbers, and LUFFY's evaluation script calls its
generator with temperature 0.6, top_p 1.0 and 8,192 new tokens (`main(..., temperature=0.6,
top_p=1.0, max_tokens=8192)`, which overrides its helper's top_p=0.95 default). So that every run is
comparable with those numbers by default, the `luffy` protocol sets these three values for the tasks
it governs (the paper's benchmarks, group `all` of tasks/_groups.yaml); each task keeps its own `n`
(Avg@32 stays 32 samples). `task` uses each task YAML's `sampling` block as written. Tasks outside
the protocol's group (the demo's synthetic task, a benchmark you add) always keep their own settings.

Explicit overrides (--temperature, --top-p, --max-tokens) win over the protocol. The summary records
each task's protocol by value (`protocol_label`: "luffy", or "temperature=0.6, top_p=0.95,
max_tokens=8192"), so that a report can tell when a table mixes runs drawn under different settings.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from scope_bench.eval.tasks import Sampling, Task, load_groups, with_sampling

PROTOCOL_KEYS = ("temperature", "top_p", "max_tokens")


@dataclasses.dataclass(frozen=True)
class Protocol:
    name: str
    settings: dict[str, Any]  # some of PROTOCOL_KEYS; empty: each task's own
    group: str = "all"  # the tasks it governs
    source: str = ""


PROTOCOLS = {
    "luffy": Protocol("luffy", {"temperature": 0.6, "top_p": 1.0, "max_tokens": 8192},
                      source="LUFFY's evaluation script (the numbers the paper compares against)"),
    "task": Protocol("task", {}, source="each task YAML's sampling block"),
}
DEFAULT_PROTOCOL = "luffy"


def get_protocol(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise ValueError(f"unknown sampling protocol {name!r}: use one of {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


def protocol_label(sampling: Sampling) -> str:
    """How a task was sampled, by value: a protocol's name when its settings are exactly that
    protocol's, else the values themselves ("temperature=0.6, top_p=0.95, max_tokens=8192"). Two runs
    get the same label exactly when they sampled alike, whichever flags or YAML got them there."""
    values = {k: getattr(sampling, k) for k in PROTOCOL_KEYS}
    for protocol in PROTOCOLS.values():
        if protocol.settings == values:
            return protocol.name
    return ", ".join(f"{k}={v}" for k, v in values.items())


def apply_protocol(tasks: list[Task], name: str, overrides: dict[str, Any],
                   tasks_dir: Any = None) -> tuple[list[Task], dict[str, str]]:
    """The tasks with the protocol's settings, then the explicit `overrides` (None values ignored),
    applied; and each task's protocol label for the summary."""
    protocol = get_protocol(name)
    governed = set(load_groups(tasks_dir).get(protocol.group, []))
    out = [with_sampling(with_sampling(t, **(protocol.settings if t.name in governed else {})), **overrides)
           for t in tasks]
    return out, {t.name: protocol_label(t.sampling) for t in out}


def protocol_record(name: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """The summary's top-level `protocol` entry: what was asked for, before per-task resolution."""
    protocol = get_protocol(name)
    governs = {"governs": f"tasks of group '{protocol.group}'"} if protocol.settings else {}
    return {"name": protocol.name, **protocol.settings, **governs, "source": protocol.source,
            "overrides": {k: v for k, v in overrides.items() if v is not None}}
