"""The paper's published numbers (reference rows), read from `paper_reference.yaml`.

They are never computed results: reports show them in a separate block with a "(paper)" suffix.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import yaml

REFERENCE_FILE = Path(__file__).with_name("paper_reference.yaml")
REFERENCE_SUFFIX = " (paper)"


@lru_cache(maxsize=1)
def paper_reference() -> dict:
    """The whole reference file: ``{"source": str, "table1": {...}, ..., "table4": {...}}``."""
    data = yaml.safe_load(REFERENCE_FILE.read_text())
    for key in ("table1", "table2", "table3", "table4"):
        table = data[key]
        for section in table["sections"]:
            for name, values in section["rows"].items():
                if len(values) != len(table["columns"]):
                    raise ValueError(f"{REFERENCE_FILE}: {key} row {name!r} has {len(values)} values "
                                     f"for {len(table['columns'])} columns")
    return data


def reference_sections(table: str) -> list[tuple[str, dict[str, dict]]]:
    """``[(section title, {row name: {column: value}})]`` of one paper table ("table1".."table4")."""
    data = paper_reference()[table]
    return [
        (s["title"], {name: dict(zip(data["columns"], values)) for name, values in s["rows"].items()})
        for s in data["sections"]
    ]
