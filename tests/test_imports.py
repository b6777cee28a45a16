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


# The layers, lowest first. A module may import its own unit (a top-level module, a subpackage, or
# engines/local, engines/verl, engines/cli on their own) and any unit of a lower layer, nothing else: no
# arrow goes up or sideways. `scope_bench/__init__.py` is the lazy public API over all of them.
LAYERS = [
    ("scope_bench.paths",),
    ("scope_bench.io", "scope_bench.prompts", "scope_bench.identity"),
    ("scope_bench.core",),
    ("scope_bench.grading", "scope_bench.analysis"),
    ("scope_bench.synthetic",),
    ("scope_bench.engines", "scope_bench.eval"),
    ("scope_bench.engines.local", "scope_bench.engines.verl"),
    ("scope_bench.engines.cli", "scope_bench.reports"),
    ("scope_bench.demo",),
    ("scope_bench.cli", "scope_bench"),
]
LAYER_OF = {unit: level for level, units in enumerate(LAYERS) for unit in units}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def unit_of(module: str) -> str:
    """The longest unit of LAYERS that contains `module` (the root unit is `__init__.py` alone, so a
    new top-level module must be placed in a layer)."""
    units = [u for u in LAYER_OF if module == u or (u != "scope_bench" and module.startswith(u + "."))]
    assert units, f"{module} is in no layer of LAYERS: add it"
    return max(units, key=len)


def import_edges() -> dict[str, set[str]]:
    """module -> the scope_bench modules it imports; `from package import submodule` counts as the
    submodule (the package's own `__init__` runs too, but only its own imports matter)."""
    edges = {}
    for name, path in MODULES.items():
        targets = set()
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = next(iter(imports_of_node(node, name, path)))
                subs = [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in MODULES]
                targets.update(subs or [base])
        resolved = set()
        for target in targets:
            while target and target not in MODULES:  # `import a.b.c` where c is a name
                target = target.rpartition(".")[0]
            if target.startswith("scope_bench") and target != name:
                resolved.add(target)
        edges[name] = resolved
    return edges


def imports_of_node(node: ast.ImportFrom, module: str, path: Path) -> set[str]:
    if not node.level:
        return {node.module}
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
    return {f"{base}.{node.module}" if node.module else base}


def upward_arrows(edges: dict[str, set[str]]) -> list[str]:
    bad = []
    for source, targets in sorted(edges.items()):
        for target in sorted(targets):
            a, b = unit_of(source), unit_of(target)
            if a != b and a != "scope_bench" and LAYER_OF[b] >= LAYER_OF[a]:
                bad.append(f"{source} ({a}, layer {LAYER_OF[a]}) imports {target} ({b}, layer {LAYER_OF[b]})")
    return bad


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_no_import_circle():
    assert circles(import_edges()) == []


def test_no_arrow_goes_up_or_sideways():
    assert upward_arrows(import_edges()) == []


def test_every_module_is_in_a_layer():
    assert {m: unit_of(m) for m in MODULES}  # unit_of fails on a module outside LAYERS


def test_the_checks_find_a_circle_and_an_upward_arrow():
    """The checks themselves, on made-up graphs: a circle through a function-level import, and core
    importing an engine."""
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert upward_arrows({"scope_bench.core.steps": {"scope_bench.engines.prompt"}}) != []
    assert upward_arrows({"scope_bench.engines.local.trainer": {"scope_bench.engines.verl.config"}}) != []
    assert upward_arrows({"scope_bench.reports.tables": {"scope_bench.eval.tasks"}}) == []
