"""The shape of the code: no import circles, arrows one way, no dispatch on names.

Checked on the source (every import statement, function-level ones included), so a
circle or a name comparison fails here before it costs anyone a debugging session.
"""

import ast
import pathlib

import pytest

import jaxcert
from jaxcert import ops

ROOT = pathlib.Path(jaxcert.__file__).parent


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _imports(name: str) -> set[str]:
    """The jaxcert modules ``name`` imports (anywhere in its source)."""
    path = MODULES[name]
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            targets = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names
            ]
        else:
            continue
        out.update(t for t in targets if t in MODULES and t != name)
    return out


GRAPH = {name: _imports(name) for name in MODULES}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_checker_finds_a_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_there_are_no_import_circles():
    assert _cycles(GRAPH) == []


def _imports_of_package(prefix: str) -> set[str]:
    return set().union(*(deps for name, deps in GRAPH.items() if name.startswith(prefix)))


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        # Arrows point one way: sets, ops, graph -> domains -> bounds -> methods -> train.
        ("jaxcert.ops", ("jaxcert.graph", "jaxcert.domains", "jaxcert.sets")),
        ("jaxcert.sets", ("jaxcert.graph", "jaxcert.domains", "jaxcert.bounds")),
        ("jaxcert.graph", ("jaxcert.domains", "jaxcert.sets", "jaxcert.bounds")),
        ("jaxcert.domains", ("jaxcert.bounds", "jaxcert.bound_methods", "jaxcert.methods")),
        ("jaxcert.domains", ("jaxcert.train", "jaxcert.certify", "jaxcert.losses")),
        ("jaxcert.bound_methods", ("jaxcert.bounds", "jaxcert.methods", "jaxcert.train")),
        # Nothing in the training methods knows about jaxprs.
        ("jaxcert.methods", ("jaxcert.graph", "jaxcert.train", "jaxcert.certify")),
    ],
)
def test_arrows_point_one_way(package, forbidden):
    imported = _imports_of_package(package)
    wrong = sorted(m for m in imported if m.startswith(forbidden))
    assert not wrong, f"{package} imports {wrong}"


def _compared_strings(tree: ast.AST) -> list[tuple[int, str]]:
    """String constants on either side of ``==``/``!=``/``in`` comparisons."""
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Compare):
            continue
        for side in [node.left, *node.comparators]:
            elements = side.elts if isinstance(side, (ast.Tuple, ast.List, ast.Set)) else [side]
            out += [
                (node.lineno, e.value)
                for e in elements
                if isinstance(e, ast.Constant) and isinstance(e.value, str)
            ]
    return out


def test_no_domain_dispatches_on_op_names():
    names = set(ops.OPS)
    for name, path in MODULES.items():
        if not name.startswith("jaxcert.domains"):
            continue
        hits = [
            (line, s) for line, s in _compared_strings(ast.parse(path.read_text())) if s in names
        ]
        assert not hits, f"{name} compares op names {hits}: use its rule table"


def test_no_module_compares_method_names():
    # Bound-method names are spelled in the registry and in configs; everything else asks
    # the method object.
    names = set(jaxcert.METHODS)
    for name, path in MODULES.items():
        if name in ("jaxcert.bound_methods", "jaxcert.config"):
            continue
        hits = [
            (line, s) for line, s in _compared_strings(ast.parse(path.read_text())) if s in names
        ]
        assert not hits, f"{name} compares method names {hits}: ask the method object"
