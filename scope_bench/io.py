"""Reading rows of a dataset file: one reader for training data, benchmarks and graded responses.

`iter_jsonl` is the one JSON-lines reader of the project (datasets, results.jsonl, metrics.jsonl): a
line that is not JSON is an error naming the file and line ("PATH:N: not valid JSON (...)"). Lines
are split on "\n" only, so a JSON string holding U+2028 or another Unicode line break (written raw
by `ensure_ascii=False`) stays one line. What a torn last line (a write cut short by a kill) means
is each caller's choice: an error (datasets, results read by reports), skipped (`torn_end="skip"`,
training metrics), or cut off the file before reading (`drop_torn_end`, the results store).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TORN_END = ("error", "skip")

FORMATS = ".jsonl, .json, .parquet, .csv or a datasets save_to_disk folder"
SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")


def iter_jsonl(path: str | Path, *, torn_end: str = "error") -> Iterator[tuple[int, Any]]:
    """`(line number, value)` of each non-blank line of a JSON-lines file, numbered from 1.

    A line that is not valid JSON raises ValueError naming the file and line. `torn_end="skip"` instead
    leaves out the file's last line when it is not valid JSON: the line a process killed mid-write left.
    """
    if torn_end not in TORN_END:
        raise ValueError(f"torn_end must be one of {TORN_END}, got {torn_end!r}")
    path = Path(path)
    with path.open(encoding="utf-8", newline="\n") as f:  # newline="\n": split on "\n" only
        pending: tuple[int, str] | None = None
        for line_no, line in enumerate(f, 1):
            if pending is not None:
                yield from _parse_line(path, *pending, last=False, torn_end=torn_end)
            pending = (line_no, line)
        if pending is not None:
            yield from _parse_line(path, *pending, last=True, torn_end=torn_end)


def _parse_line(path: Path, line_no: int, line: str, *, last: bool, torn_end: str) -> Iterator[tuple[int, Any]]:
    if not line.strip():
        return
    try:
        value = json.loads(line)
    except json.JSONDecodeError as err:
        if last and torn_end == "skip":
            return
        raise ValueError(f"{path}:{line_no}: not valid JSON ({err.msg} at line {line_no}, column {err.colno})") from None
    yield line_no, value


def read_jsonl(path: str | Path, *, torn_end: str = "error") -> list[Any]:
    """The values of a JSON-lines file (see `iter_jsonl`)."""
    return [value for _, value in iter_jsonl(path, torn_end=torn_end)]


def drop_torn_end(path: str | Path) -> int:
    """Cut a last line that has no newline off the file (a write of a writer that ends every record
    with one, cut short by a kill); returns the number of bytes cut (0 when the file ends cleanly)."""
    path = Path(path)
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return 0
    keep = data.rfind(b"\n") + 1
    with path.open("r+b") as f:
        f.truncate(keep)
    return len(data) - keep


def read_rows(source: str | Path, split: str | None = None, config: str | None = None) -> list[dict[str, Any]]:
    """Rows of a local file or folder, or of a Hugging Face dataset id (`config`, `split`), as plain
    Python dicts. A malformed JSON line is named by file and line number; a `save_to_disk` dataset
    dict or a JSON object of splits needs `split`."""
    path = Path(source).expanduser()
    if not path.exists():
        if path.suffix in SUFFIXES or str(source).startswith((".", "/", "~")) or "/" not in str(source):
            raise FileNotFoundError(f"data file {path} does not exist: not found, nor a dataset id like org/name")
        import datasets

        return datasets.load_dataset(str(source), config, split=split or "train").to_list()
    if path.is_dir():
        import datasets

        data = datasets.load_from_disk(str(path))
        if isinstance(data, datasets.DatasetDict):
            if split not in data:
                raise ValueError(f"{path}: choose a split (has {sorted(data)}), got {split!r}")
            data = data[split]
        return data.to_list()
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    if path.suffix == ".jsonl":
        return read_jsonl(path)
    if path.suffix == ".csv":
        import pyarrow.csv as pcsv

        return pcsv.read_csv(path).to_pylist()
    if path.suffix == ".json":
        data = json.loads(path.read_text())
        if isinstance(data, dict) and split in data:
            data = data[split]
        if not isinstance(data, list):
            raise ValueError(f"{path}: expected a JSON list of rows (or an object of splits with split={split!r})")
        return data
    raise ValueError(f"{path}: unsupported data format (use {FORMATS})")


def write_parquet(records: list[dict], path: Path) -> None:
    """Write rows as a parquet file atomically: a killed run never leaves a half-written one behind."""
    import pandas as pd

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".parquet.tmp")
    pd.DataFrame(records).to_parquet(tmp, index=False)
    tmp.replace(path)
