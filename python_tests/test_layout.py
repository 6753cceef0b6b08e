"""The package's layers (issue 30): each subpackage imports only from its own layer or those below,
so there is no import cycle and a module's folder says where it stands.

    core, ops          graphs, primitives, data, files, checks, processes; the compiled ops
    nets, spaces       networks on supplied weights; search spaces
    models             the GHN, the one-shot baseline, the shipped GHNs
    workflows          training, scoring, search, final training, anytime prediction, the demo
    studies            ground truth, correlation, ablations, comparisons
    cli                the `ghn` command
"""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ghn_ext"
LAYERS = {"core": 0, "ops": 0, "nets": 1, "spaces": 1, "models": 2, "workflows": 3, "studies": 4, "cli": 5}
MODULES = sorted(p for p in PACKAGE.rglob("*.py") if len(p.relative_to(PACKAGE).parts) > 1)


def imported(path: Path) -> set[str]:
    """Every ghn_ext module `path` imports, at the top or inside a function."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}: relative import; ghn_ext's modules import absolutely")
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ghn_ext."):
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names if a.name.startswith("ghn_ext.")}
    return names


def test_every_module_sits_in_a_layer():
    flat = [p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py"]
    assert flat == [], f"modules outside the layers: {flat}"
    assert {p.relative_to(PACKAGE).parts[0] for p in MODULES} == set(LAYERS)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_a_module_imports_only_from_its_layer_or_below(path):
    mine = LAYERS[path.relative_to(PACKAGE).parts[0]]
    upward = [m for m in imported(path) if LAYERS.get(m.split(".")[1], -1) > mine]
    assert not upward, f"{path.relative_to(PACKAGE)} imports from a layer above: {upward}"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def ghn_ext_modules(node: ast.ImportFrom | ast.Import | ast.Call) -> set[str]:
    """The ghn_ext modules an import statement (or an `importlib.import_module("ghn_ext....")` call)
    names; `from ghn_ext.pkg import mod` names the module pkg.mod too, where there is one (names that
    are not modules drop out later, as they are not in the graph)."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name.startswith("ghn_ext.")}
    if isinstance(node, ast.ImportFrom):
        if not node.module or node.level or not (node.module == "ghn_ext" or node.module.startswith("ghn_ext.")):
            return set()
        return {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    func, args = node.func, node.args
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    if name == "import_module" and args and isinstance(args[0], ast.Constant) and isinstance(args[0].value, str) \
            and args[0].value.startswith("ghn_ext."):
        return {args[0].value}
    return set()


def is_type_checking(test: ast.expr) -> bool:
    """`if TYPE_CHECKING:` or `if typing.TYPE_CHECKING:`: its body never runs, so imports there are not imports."""
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def runtime_imports(tree: ast.AST, inside_functions: bool = True) -> set[str]:
    """Every ghn_ext module imported in `tree`: at module level (in `try:`, `if` and class bodies too) and,
    with `inside_functions`, in function bodies; never in the body of an `if TYPE_CHECKING:` (its `else:`
    does run)."""
    names: set[str] = set()
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        if not inside_functions and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            stack.extend(node.decorator_list if not isinstance(node, ast.Lambda) else [])
            stack.extend(node.args.defaults + [d for d in node.args.kw_defaults if d is not None])
            continue  # decorators and defaults run at definition, the body later
        if isinstance(node, (ast.Import, ast.ImportFrom, ast.Call)):
            names |= ghn_ext_modules(node)
        stack.extend(ast.iter_child_nodes(node))
    return names


def import_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle in the import graph {module: modules it imports} as [a, b, ..., a], or None when there is none.

    Only edges between modules of the graph count, and not those from a package's own ``__init__`` to its
    submodules: that is how packages work, not a cycle."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name: str, trail: list[str]) -> list[str] | None:
        if state.get(name) == 1:
            return trail[trail.index(name):] + [name]
        if state.get(name) == 2:
            return None
        state[name] = 1
        for other in sorted(graph[name]):
            if other != name and not other.startswith(name + ".") and other in graph:
                cycle = visit(other, trail + [name])
                if cycle:
                    return cycle
        state[name] = 2
        return None

    for name in sorted(graph):
        cycle = visit(name, [])
        if cycle:
            return cycle
    return None


def test_import_cycle_finds_a_cycle_and_keeps_the_package_rule():
    assert import_cycle({"p.a": {"p.b"}, "p.b": {"p.c"}, "p.c": {"p.a"}}) == ["p.a", "p.b", "p.c", "p.a"]
    assert import_cycle({"p": {"p.a"}, "p.a": {"p", "q"}}) is None  # q is not a module of the graph
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import ghn_ext.a.x\nelse:\n"
                     "    import ghn_ext.a.y\ndef f():\n    from ghn_ext.b import z\n"
                     "    importlib.import_module('ghn_ext.c.w')\n")
    assert runtime_imports(tree) == {"ghn_ext.a.y", "ghn_ext.b", "ghn_ext.b.z", "ghn_ext.c.w"}
    assert runtime_imports(tree, inside_functions=False) == {"ghn_ext.a.y"}


def test_no_import_cycle_at_import_time():
    """Module-level imports form no cycle (imports inside functions run later; the test below
    checks them as well)."""
    graph = {module_name(path): runtime_imports(ast.parse(path.read_text()), inside_functions=False)
             for path in MODULES}
    cycle = import_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_import_cycle_counting_imports_inside_functions():
    """All imports, at module level or inside functions, form no cycle either (issue 42): two modules that
    need each other belong together, or what they share belongs below both. Imports under
    `if TYPE_CHECKING:` (type hints only) do not count."""
    graph = {module_name(path): runtime_imports(ast.parse(path.read_text())) for path in MODULES}
    cycle = import_cycle(graph)
    assert cycle is None, "import cycle (counting imports inside functions): " + " -> ".join(cycle)
