"""Where the project's declarative files live (one place, so every engine finds the same ones)."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = Path(os.environ.get("SCOPE_BENCH_ROOT", PACKAGE_DIR.parent))
TRAINERS_DIR = PROJECT_ROOT / "trainers"
TASKS_DIR = PROJECT_ROOT / "tasks"
REPORTS_DIR = PROJECT_ROOT / "reports"
# models built offline (tiny policy, warm-started checkpoints) are cached here, not committed
CACHE_DIR = Path(os.environ.get("SCOPE_BENCH_CACHE", PROJECT_ROOT / ".cache"))
# real benchmark rows shipped beside the checkout (never copied into the project)
SHARED_DATA_DIR = Path(os.environ.get("SCOPE_BENCH_SHARED_DATA", PROJECT_ROOT.parent / "shared" / "data"))
