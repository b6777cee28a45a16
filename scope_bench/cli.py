"""The `scope-bench` command.

Each sub-command lives beside the code it drives and exposes `register(subparsers)`; this file only
routes. Modules are imported when their command is parsed, so `scope-bench grade` never imports torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# command -> module defining `register(subparsers)`; that function adds the parser and sets `func`
COMMANDS = {
    "train": "scope_bench.engines.cli",
    "eval": "scope_bench.eval.cli",
    "grade": "scope_bench.grading.cli",
    "report": "scope_bench.reports.cli",
    "view": "scope_bench.reports.view",
    "data": "scope_bench.engines.verl.data_cli",
    "demo": "scope_bench.demo",
    "serve": "scope_bench.engines.serve",
}


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scope-bench", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = [a for a in argv if not a.startswith("-")][:1]
    for name, module in COMMANDS.items():
        if wanted and wanted[0] in COMMANDS and name != wanted[0]:
            subparsers.add_parser(name, help=f"see `scope-bench {name} --help`")
            continue
        importlib.import_module(module).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted; results written so far are kept, rerun to resume", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, KeyError) as err:
        if getattr(args, "debug", False):
            raise
        print(f"scope-bench {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
