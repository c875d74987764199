"""The package's shape (docs/architecture.rst, docs/decisions/0012): no import cycle between
its modules, no function-level import of its own modules to hide one, functions small
enough to read, and the one placement rule asked, never rewritten."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "authz_migration"
MAX_LINES = 50
MAX_PARAMETERS = 6


def modules() -> dict[str, ast.Module]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if "migrations" in path.parts:
            continue
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = ast.parse(path.read_text(), filename=str(path))
    return found


def _target(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    base = base[: len(base) - node.level + (1 if is_package else 0)]
    return ".".join([*base, *([node.module] if node.module else [])])


def own_imports(name: str, tree: ast.Module, names: set[str], top_level: bool):
    """The package's modules that ``name`` imports (at module level, or inside functions)."""
    is_package = (PACKAGE / Path(*name.split(".")[1:]) / "__init__.py").exists()
    body = tree.body if top_level else [n for n in ast.walk(tree) if n not in tree.body]
    for node in body:
        if isinstance(node, ast.ImportFrom):
            target = _target(name, node, is_package)
            candidates = [f"{target}.{alias.name}" for alias in node.names] + [target]
        elif isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names] + [""]
        else:
            continue
        matched = [c for c in candidates[:-1] if c in names] or candidates[-1:]
        yield from (c for c in matched if c in names and c != name)


def test_no_import_cycle_between_the_packages_modules():
    trees = modules()
    graph = {name: set(own_imports(name, tree, set(trees), True)) for name, tree in trees.items()}
    cycles = []

    def visit(node, path, seen):
        for nxt in sorted(graph[node]):
            if nxt in path:
                cycles.append(path[path.index(nxt) :] + [nxt])
            elif nxt not in seen:
                seen.add(nxt)
                visit(nxt, [*path, nxt], seen)

    for start in sorted(graph):
        visit(start, [start], {start})
    assert cycles == []


def test_no_function_level_import_of_the_package_but_in_app_ready():
    trees = modules()
    hidden = []
    for name, tree in trees.items():
        for function in ast.walk(tree):
            if not isinstance(function, ast.FunctionDef):
                continue
            for node in ast.walk(function):
                if isinstance(node, ast.ImportFrom) and (
                    node.level or (node.module or "").startswith("authz_migration")
                ):
                    hidden.append(f"{name}.{function.name}")
    # AppConfig.ready() imports the receivers and checks: the models are not loaded before.
    assert sorted(set(hidden)) == ["authz_migration.apps.ready"]


def test_functions_are_small():
    large = []
    for name, tree in modules().items():
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            args = node.args
            params = [*args.posonlyargs, *args.args, *args.kwonlyargs]
            if params and params[0].arg in ("self", "cls"):
                params = params[1:]
            lines = node.end_lineno - node.lineno + 1
            if lines > MAX_LINES or len(params) > MAX_PARAMETERS:
                large.append(f"{name}.{node.name}: {lines} lines, {len(params)} parameters")
    assert large == []


def test_the_placement_rule_is_written_once():
    """Only placement.py parses a row's scope for placement: the other modules ask it."""
    writers = []
    for name, tree in modules().items():
        if name == "authz_migration.placement":
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute | ast.Name):
                ident = node.attr if isinstance(node, ast.Attribute) else node.id
                if ident in ("LIBRARY_KEY_PREFIXES", "_legacy_place", "_casbin_place"):
                    writers.append(name)
    assert writers == []
