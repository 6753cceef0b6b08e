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


def test_no_import_cycle_at_import_time():
    """Module-level imports form no cycle (imports inside functions run later and may go anywhere
    their layer allows)."""
    graph = {}
    for path in MODULES:
        top = [n for n in ast.parse(path.read_text()).body if isinstance(n, (ast.Import, ast.ImportFrom))]
        names = {n.module for n in top if isinstance(n, ast.ImportFrom) and n.module and n.module.startswith("ghn_ext.")}
        # `from ghn_ext.pkg import mod` imports the module pkg.mod where there is one
        for n in top:
            if isinstance(n, ast.ImportFrom) and n.module and n.module.startswith("ghn_ext."):
                names |= {f"{n.module}.{a.name}" for a in n.names}
        graph[module_name(path)] = names
    state: dict[str, int] = {}

    def visit(name: str, trail: list[str]) -> None:
        if state.get(name) == 1:
            raise AssertionError("import cycle: " + " -> ".join(trail[trail.index(name):] + [name]))
        if state.get(name) == 2 or name not in graph:
            return
        state[name] = 1
        for other in sorted(graph[name]):
            # a package's own __init__ importing its submodules is how packages work, not a cycle
            if other != name and not other.startswith(name + ".") and other in graph:
                visit(other, trail + [name])
        state[name] = 2

    for name in sorted(graph):
        visit(name, [])
