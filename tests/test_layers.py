"""The package's import graph: no circles, and no layer imports one above it.

Built from the source with `ast`, so function-local imports count as much as top-level ones
(a local import still ties the two modules together; it only defers the cost). Imports inside
`if TYPE_CHECKING:` blocks are left out: they never run, they only name types for the checker.
"""

from __future__ import annotations

import ast
from pathlib import Path

import ablate

PACKAGE = Path(ablate.__file__).parent
# Lowest first; a module may import its own layer's modules and those of lower layers only.
# Layer 0 is the foundation: modules at the package's top that every layer may use.
FOUNDATION = {"ablate", "ablate.errors", "ablate.backoff", "ablate.redaction", "ablate.project", "ablate.quiet_start", "ablate.backends"}
LAYERS: tuple[tuple[str, ...], ...] = (
    (),
    ("ablate.spec",),
    ("ablate.training", "ablate.models", "ablate.tracking", "ablate.analysis"),
    ("ablate.families",),
    ("ablate.runtime",),
    ("ablate.report",),
    ("ablate.cli",),
)
# The console script's `python -m ablate` entry is the top, whatever its folder says.
TOP = {"ablate.__main__"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node of the tree except those under `if TYPE_CHECKING:`."""
    nodes: list[ast.AST] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        nodes.append(node)
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                stack.extend(child.orelse)
                continue
            stack.append(child)
    return nodes


def import_graph() -> dict[str, set[str]]:
    """ablate module -> the ablate modules it imports (anywhere in its code)."""
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in runtime_nodes(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, *([node.module] if node.module else [])])
                for alias in node.names:
                    targets.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in files else base)
        graph[name] = {t for t in targets if t in files and t != name}
    return graph


def layer_of(name: str) -> int:
    if name in TOP:
        return len(LAYERS)
    if name in FOUNDATION:
        return 0
    for index, prefixes in enumerate(LAYERS):
        if any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes):
            return index
    raise AssertionError(f"{name} is in no layer; add it to FOUNDATION or its folder to LAYERS")


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles (strongly connected components of more than one module), Tarjan's algorithm."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_circles() -> None:
    graph = import_graph()
    assert len(graph) > 40, "the graph should hold every module of the package"
    assert cycles(graph) == []


def test_no_layer_imports_a_higher_one() -> None:
    upward = [
        f"{source} (layer {layer_of(source)}) imports {target} (layer {layer_of(target)})"
        for source, targets in sorted(import_graph().items())
        for target in sorted(targets)
        if layer_of(target) > layer_of(source)
    ]
    assert upward == []


def test_the_checks_can_fail() -> None:
    """The cycle finder and the layer table catch what they are meant to."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert layer_of("ablate.cli.main") > layer_of("ablate.runtime.run") > layer_of("ablate.spec.loading")
    assert layer_of("ablate.errors") == 0
