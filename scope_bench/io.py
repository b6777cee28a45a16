"""Reading rows of a dataset file: one reader for training data, benchmarks and graded responses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FORMATS = ".jsonl, .json, .parquet, .csv or a datasets save_to_disk folder"
SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")


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
        rows = []
        with path.open() as f:
            for line_no, line in enumerate(f, 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as err:
                        raise ValueError(f"{path}: line {line_no} is not valid JSON ({err.msg})") from None
        return rows
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
