"""chip's imports form no cycle, and no module imports another module's private names.

Every ``import`` statement in ``chip/`` is read with `ast`: at module level, inside functions and
under ``if TYPE_CHECKING:`` alike, because a cycle hidden behind a deferred import is still a
cycle (the two modules cannot be understood, or moved, one without the other). Relative imports
are resolved against the importing module's package, and ``from package import name`` counts as
an import of ``package.name`` when that is a module. Importing a package's ``__init__`` on the way
to one of its submodules is not counted: Python runs it, but only the module named depends on.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "chip"


def module_files(package: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file under ``package`` (packages by their ``__init__``)."""
    modules = {}
    for file in sorted(package.rglob("*.py")):
        parts = list(file.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = file
    return modules


def imported_names(name: str, file: Path) -> list[tuple[str, str | None, int]]:
    """``(module, imported name or None, line)`` for every import statement anywhere in ``file``."""
    package = name if file.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(file.read_text(), str(file))):
        if isinstance(node, ast.Import):
            found += [(alias.name, None, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            found += [(module, alias.name, node.lineno) for alias in node.names]
    return found


def import_graph(package: Path) -> dict[str, set[str]]:
    """Module -> the modules of ``package`` it imports."""
    modules = module_files(package)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, file in modules.items():
        for module, imported, _ in imported_names(name, file):
            target = f"{module}.{imported}" if f"{module}.{imported}" in modules else module
            while target not in modules and "." in target:  # `import chip.x.y` of a name inside y
                target = target.rpartition(".")[0]
            if target in modules and target != name:
                graph[name].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle ``[a, b, ..., a]``, or None (depth-first search, three colours)."""
    state: dict[str, int] = {}  # 1 on the current path, 2 finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return path[path.index(target) :] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def private_imports(package: Path, *others: Path) -> list[str]:
    """``file:line module.name`` for each import of a private name (``_name``, not a dunder) of a
    module of ``package``, from the package itself or from the folders ``others`` (tests, scripts)."""
    modules = module_files(package)
    files = dict(modules)
    for folder in others:
        for file in sorted(folder.rglob("*.py")):
            files[".".join(file.relative_to(folder.parent).with_suffix("").parts)] = file
    found = []
    for name, file in files.items():
        for module, imported, line in imported_names(name, file):
            private = imported and imported.startswith("_") and not imported.startswith("__")
            if private and module.split(".")[0] == package.name and f"{module}.{imported}" not in modules:
                found.append(f"{file.relative_to(package.parent)}:{line} {module}.{imported}")
    return found


def test_the_graph_sees_deferred_relative_and_submodule_imports(tmp_path):
    """The reader itself: every kind of import it must count, on a small package written here."""
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "a.py").write_text("def f():\n    from pkg.sub import b\n")  # deferred, submodule
    (package / "sub" / "b.py").write_text("from ..c import thing\n")  # relative, a name in c
    (package / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.a\n")
    graph = import_graph(package)
    assert graph["pkg.a"] == {"pkg.sub.b"} and graph["pkg.sub.b"] == {"pkg.c"} and graph["pkg.c"] == {"pkg.a"}
    assert find_cycle(graph) == ["pkg.a", "pkg.sub.b", "pkg.c", "pkg.a"]
    (package / "c.py").write_text("thing = 1\n")
    assert find_cycle(import_graph(package)) is None
    (package / "c.py").write_text("from pkg.sub.b import _hidden\n")
    assert private_imports(package) == ["pkg/c.py:1 pkg.sub.b._hidden"]


def test_no_module_imports_a_private_name_of_another():
    """A name another module needs is public; chip's tests and benchmarks count as other modules."""
    assert private_imports(PACKAGE, PACKAGE.parent / "tests", PACKAGE.parent / "bench") == []


def test_chip_has_no_import_cycle():
    graph = import_graph(PACKAGE)
    assert len(graph) > 50, "the package was not found: the test would check nothing"
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize("module", ["chip.training.config", "chip.modeling.kernels"])
def test_settings_and_kernels_import_no_strategy(module):
    """Settings know no strategies and the kernels are a leaf: neither reaches a runtime module."""
    graph = import_graph(PACKAGE)
    reached, todo = set(), [module]
    while todo:
        for target in graph[todo.pop()] - reached:
            reached.add(target)
            todo.append(target)
    assert not reached & {"chip.training.reference", "chip.modeling.scores", "chip.modeling.logps"}
