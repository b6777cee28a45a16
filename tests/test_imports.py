"""The package's layering, read from its source (every import, at module level or inside a function):
the local trainer and the verl recipe are siblings over the shared `engines/` layer and never import
each other; the synthetic task imports neither; the method core imports no engine and no engine
library (it stays testable and usable without verl, vLLM, Ray or HTTP)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "scope_bench"
ENGINE_LIBRARIES = ("verl", "vllm", "ray", "httpx", "transformers", "hydra", "omegaconf")


def imports_of(path: Path) -> set[str]:
    """Absolute module names imported by `path` (relative imports resolved against its package)."""
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                names.add(f"{base}.{node.module}" if node.module else base)
            else:
                names.add(node.module)
    return names


def modules_under(folder: str) -> list[Path]:
    return sorted((PACKAGE / folder).rglob("*.py"))


def offending(folder: str, forbidden: tuple[str, ...]) -> list[str]:
    return [f"{path.relative_to(PACKAGE.parent)} imports {name}" for path in modules_under(folder)
            for name in sorted(imports_of(path)) if any(name == f or name.startswith(f + ".") for f in forbidden)]


@pytest.mark.parametrize("folder, forbidden", [
    ("engines/verl", ("scope_bench.engines.local",)),
    ("engines/local", ("scope_bench.engines.verl",)),
    ("synthetic", ("scope_bench.engines.local", "scope_bench.engines.verl")),
    ("core", ("scope_bench.engines", "scope_bench.eval", "scope_bench.synthetic", *ENGINE_LIBRARIES)),
])
def test_layers_import_only_downwards(folder, forbidden):
    assert modules_under(folder), f"no modules under {folder}"
    assert offending(folder, forbidden) == []


def test_the_shared_layer_imports_neither_engine():
    """Only `engines/cli.py`, the front door that dispatches `--backend`, reaches into an engine."""
    shared = [p for p in (PACKAGE / "engines").glob("*.py") if p.name != "cli.py"]
    bad = [f"{p.name} imports {n}" for p in shared for n in imports_of(p)
           if n.startswith(("scope_bench.engines.local", "scope_bench.engines.verl"))]
    assert bad == []


def test_the_reader_sees_relative_and_nested_imports():
    """The check itself: a relative import and a function-level import are both found."""
    assert "scope_bench.core.config" in imports_of(PACKAGE / "core" / "prefix.py")  # `from .config import`
    assert "scope_bench.synthetic.task" in imports_of(PACKAGE / "engines" / "local" / "data.py")  # in a function
