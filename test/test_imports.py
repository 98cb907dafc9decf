"""The package's import graph: no cycles, no private names across modules, ``modules/`` never imports ``objectives/``.

The graph is read from the source (``ast``), so it holds every import, the ones inside functions included: a
function-level import only hides a cycle until the function runs. Importing ``a.b.c`` runs ``a/__init__`` and
``a/b/__init__`` too, so an import also counts as one of each package above its target that is not above the
importer (those are already being imported when the importer runs).
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "torchrl_dtql"


@dataclass(frozen=True)
class ImportEdge:
    """``importer`` imports ``imported`` (dotted module names of the package) at line ``lineno`` of its file."""

    importer: str
    imported: str
    lineno: int
    private_names: tuple[str, ...] = ()  # the ``_names`` the import takes from ``imported``


def package_modules(root: Path = ROOT) -> dict[str, Path]:
    """``{dotted module name: file}`` of every module of the package (a package is its ``__init__.py``).

    Examples:
        >>> package_modules()["torchrl_dtql.data"].name
        '__init__.py'
    """
    modules = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _ancestors(module: str) -> list[str]:
    """``a.b.c`` -> ``["a", "a.b"]``."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _resolve_from(importer: str, importer_is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module name a ``from X import ...`` statement reads from."""
    if node.level == 0:
        return node.module or ""
    base = importer.split(".") if importer_is_package else importer.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def module_imports(module: str, path: Path, modules: dict[str, Path]) -> list[ImportEdge]:
    """Every import of a package module by ``module``, with the packages above the target it also runs.

    Examples:
        >>> mods = package_modules()
        >>> edges = module_imports("torchrl_dtql.data.buffers", mods["torchrl_dtql.data.buffers"], mods)
        >>> "torchrl_dtql.data.sources" in {e.imported for e in edges}
        True
    """
    is_package = path.name == "__init__.py"
    edges: list[ImportEdge] = []

    def add(target: str, lineno: int, private: tuple[str, ...] = ()) -> None:
        for above in (*_ancestors(target), target):
            if above in modules and above != module and above not in _ancestors(module):
                edges.append(ImportEdge(module, above, lineno, private if above == target else ()))

    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == PACKAGE:
                    add(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            source = _resolve_from(module, is_package, node)
            if source.split(".")[0] != PACKAGE:
                continue
            names_from_source = []
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                if submodule in modules:  # ``from package import module``
                    add(submodule, node.lineno)
                else:
                    names_from_source.append(alias.name)
            if names_from_source:
                private = tuple(n for n in names_from_source if n.startswith("_") and not n.startswith("__"))
                add(source, node.lineno, private)
    return edges


def import_graph(root: Path = ROOT) -> tuple[dict[str, set[str]], list[ImportEdge]]:
    """``({module: modules it imports}, every edge)`` over the whole package."""
    modules = package_modules(root)
    edges = [edge for module, path in modules.items() for edge in module_imports(module, path, modules)]
    graph: dict[str, set[str]] = {module: set() for module in modules}
    for edge in edges:
        graph[edge.importer].add(edge.imported)
    return graph, edges


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted: the import cycles.

    Examples:
        >>> import_cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}})
        [['a', 'b']]
    """
    index: dict[str, int] = {}
    lowlink: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = lowlink[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph.get(node, ())):
            if successor not in index:
                visit(successor)
                lowlink[node] = min(lowlink[node], lowlink[successor])
            elif successor in on_stack:
                lowlink[node] = min(lowlink[node], index[successor])
        if lowlink[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(cycles)


def _import_path(graph: dict[str, set[str]], start: str, is_target) -> list[str] | None:
    """A shortest chain of imports from ``start`` to a module for which ``is_target`` holds, or ``None``."""
    came_from: dict[str, str | None] = {start: None}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for successor in sorted(graph[node]):
                if successor in came_from:
                    continue
                came_from[successor] = node
                if is_target(successor):
                    path = [successor]
                    while came_from[path[-1]] is not None:
                        path.append(came_from[path[-1]])
                    return path[::-1]
                following.append(successor)
        frontier = following
    return None


def _cycle_path(graph: dict[str, set[str]], component: list[str]) -> str:
    """A shortest loop through a cycle's first module, ``a -> b -> a``, for the failure message."""
    members, start = set(component), component[0]
    inside = {m: graph[m] & members for m in members}
    return " -> ".join([*_import_path(inside, start, lambda m: start in inside[m]), start])


def test_the_graph_sees_function_level_and_relative_imports() -> None:
    graph, _ = import_graph()
    assert "torchrl_dtql.data.minari_files" in graph["torchrl_dtql.data.embedded"]  # a relative import
    assert "torchrl_dtql.data.maker.recording" in graph["torchrl_dtql.data.embedded"]  # inside a function
    assert "torchrl_dtql.data.maker" in graph["torchrl_dtql.data.embedded"]  # the package above the target


def test_no_import_cycles() -> None:
    graph, _ = import_graph()
    cycles = import_cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(_cycle_path(graph, c) for c in cycles)


def test_no_private_name_is_imported_from_another_module() -> None:
    _, edges = import_graph()
    problems = [f"{e.importer}:{e.lineno} imports {', '.join(e.private_names)} from {e.imported}"
                for e in edges if e.private_names]
    assert not problems, "make what is shared public, in its one home:\n" + "\n".join(problems)


def test_modules_never_import_objectives() -> None:
    """Networks must not depend on losses, not even through another subpackage."""
    graph, _ = import_graph()
    objectives = f"{PACKAGE}.objectives"
    paths = [_import_path(graph, m, lambda x: x == objectives or x.startswith(objectives + "."))
             for m in sorted(graph) if m == f"{PACKAGE}.modules" or m.startswith(f"{PACKAGE}.modules.")]
    problems = [" -> ".join(p) for p in paths if p]
    assert not problems, "torchrl_dtql/modules/ imports torchrl_dtql/objectives/:\n" + "\n".join(problems)
