"""The code keeps its shape: short functions with few positional parameters, and scripts that
import modules, never other scripts. Line length and unused names are ruff's (.ci/run)."""
import ast
import glob
import os

import pytest

from conftest import ROOT

MAX_LINES, MAX_POSITIONAL = 45, 6
SOURCES = sorted(glob.glob(os.path.join(ROOT, "*.py"))
                 + glob.glob(os.path.join(ROOT, "scripts", "*.py")))


def parse(path):
    with open(path) as f:
        return ast.parse(f.read(), path)


def is_script(tree):
    """A file that runs as a program: it has an `if __name__ == "__main__":` block."""
    return any(isinstance(node, ast.If) and "__main__" in ast.unparse(node.test)
               for node in tree.body)


def functions(tree):
    return [node for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]


def positional(function):
    names = [a.arg for a in function.args.posonlyargs + function.args.args]
    return [name for name in names if name not in ("self", "cls")]


def imported_modules(tree):
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_the_sources_were_found():
    names = {os.path.basename(path) for path in SOURCES}
    assert {"train.py", "test.py", "cyclegan.py", "models.py", "figures.py"} <= names


@pytest.mark.parametrize("path", SOURCES, ids=os.path.basename)
def test_no_function_is_longer_than_45_lines_or_takes_more_than_6_positional_parameters(path):
    too_big = []
    for function in functions(parse(path)):
        first = min([function.lineno] + [d.lineno for d in function.decorator_list])
        lines = function.end_lineno - first + 1
        if lines > MAX_LINES or len(positional(function)) > MAX_POSITIONAL:
            too_big.append(f"{function.name} (line {function.lineno}): {lines} lines, "
                           f"{len(positional(function))} positional parameters")
    assert not too_big


def test_no_script_imports_another_script():
    trees = {os.path.basename(path)[:-3]: parse(path) for path in SOURCES}
    scripts = {name for name, tree in trees.items() if is_script(tree)}
    assert {"train", "test", "evaluate", "benchmark"} <= scripts
    imports = {name: imported_modules(tree) & scripts for name, tree in trees.items()}
    assert {name: found for name, found in imports.items() if found} == {}


def test_the_checker_sees_a_long_function_and_a_script_import(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_LINES))
    tree = ast.parse(f"import train\n\ndef long(a, b, c, d, e, f, g):\n{body}\n")
    (function,) = functions(tree)
    assert function.end_lineno - function.lineno + 1 > MAX_LINES
    assert len(positional(function)) == 7
    assert "train" in imported_modules(tree)
    assert is_script(ast.parse('if __name__ == "__main__":\n    main()\n'))
