"""The admin package's shape: a few modules that share only public, documented helpers, and
functions small enough to read."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import authz_migration.admin

ADMIN = Path(authz_migration.admin.__file__).resolve().parent
MODULES = sorted(ADMIN.glob("*.py"))
MAX_LINES = 50
MAX_PARAMETERS = 6  # not counting self / cls


def sibling_imports(path: Path) -> list[tuple[str, str]]:
    """(module, name) of each ``from .module import name`` in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            found += [(node.module or "", alias.name) for alias in node.names]
    return found


def functions(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node


def test_the_admin_is_a_few_modules():
    assert 3 <= len(MODULES) <= 5, [path.name for path in MODULES]


@pytest.mark.parametrize("path", MODULES, ids=lambda path: path.name)
def test_no_module_imports_another_modules_private_names(path):
    private = [f"from .{module} import {name}" for module, name in sibling_imports(path)]
    assert [line for line in private if line.split()[-1].startswith("_")] == []


@pytest.mark.parametrize("path", MODULES, ids=lambda path: path.name)
def test_helpers_shared_between_modules_have_docstrings(path):
    undocumented = []
    for module, name in sibling_imports(path):
        tree = ast.parse((ADMIN / f"{module}.py").read_text())
        for node in tree.body:
            if (
                isinstance(node, ast.FunctionDef | ast.ClassDef)
                and node.name == name
                and not ast.get_docstring(node)
            ):
                undocumented.append(f"{module}.{name}")
    assert undocumented == []


@pytest.mark.parametrize("path", MODULES, ids=lambda path: path.name)
def test_functions_are_short_and_take_few_parameters(path):
    too_big = []
    for node in functions(path):
        args = node.args
        names = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)]
        count = len([n for n in names if n not in ("self", "cls")])
        count += bool(args.vararg) + bool(args.kwarg)
        lines = node.end_lineno - node.lineno + 1
        if lines > MAX_LINES or count > MAX_PARAMETERS:
            too_big.append(f"{node.name}: {lines} lines, {count} parameters")
    assert too_big == []
