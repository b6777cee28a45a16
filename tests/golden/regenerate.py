"""Rewrites the golden files that tests compare against; tests never write them.

    make golden                      # or: .venv/bin/python tests/golden/regenerate.py
    make golden GOLDEN_ARGS=--fixtures   # also remake the canned runs (tests/golden/make_fixtures.py)

Run it only after an intended change to what a report prints, then read `git diff tests/golden` before
committing: every changed line is a change users see. It writes

- tests/golden/report.md: `report.md` of `write_report` on tests/golden/runs, written exactly as
  tests/test_reports.py::test_markdown_report_matches_golden makes it (both formats, with plots, so
  the figure links are there);
- with --fixtures first: tests/golden/runs/ (seeded, so unchanged unless make_fixtures.py changed).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

GOLDEN = Path(__file__).resolve().parent
RUNS = GOLDEN / "runs"


def golden_report(out: Path) -> str:
    """The report.md the golden test compares: `write_report` of the canned runs into `out`."""
    from scope_bench.reports.report import write_report

    write_report([RUNS], out, ["both"])
    return (out / "report.md").read_text()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fixtures", action="store_true", help="remake tests/golden/runs first")
    args = parser.parse_args(argv)
    if args.fixtures:
        sys.path.insert(0, str(GOLDEN))
        import make_fixtures

        make_fixtures.main()
        print(f"wrote {RUNS}")
    with tempfile.TemporaryDirectory() as tmp:
        text = golden_report(Path(tmp))
    path = GOLDEN / "report.md"
    changed = not path.exists() or path.read_text() != text
    path.write_text(text)
    print(f"{'updated' if changed else 'unchanged'}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
