"""The package's layers: every import, including those inside functions, points down.

The map (bottom to top) is the package docstring's; a module may import its own layer and
the layers below it, never above, and no two modules may import each other in a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import xcr0tool

PACKAGE = Path(xcr0tool.__file__).parent
LAYERS = (
    "errors",
    "files",
    "arch",
    "model",
    "formats",
    "layouts",
    "sources",
    "ops",
    "render",
    "cli",
)


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> int | None:
    """The layer of xcr0tool.X.… ; None for the package root (the library surface) and
    the __main__ shim, which sit above everything."""
    parts = module.split(".")
    if len(parts) < 2 or parts[1] not in LAYERS:
        return None
    return LAYERS.index(parts[1])


def _imports(path: Path) -> set[str]:
    """Every xcr0tool module this file imports, wherever the import statement stands."""
    tree = ast.parse(path.read_text(), str(path))
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("xcr0tool"))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            if not base.startswith("xcr0tool"):
                continue
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                known = PACKAGE.parent / Path(*candidate.split("."))
                is_module = known.with_suffix(".py").exists() or (known / "__init__.py").exists()
                found.add(candidate if is_module else base)
    return found


def _graph() -> dict[str, set[str]]:
    return {_module_name(p): _imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def test_every_module_belongs_to_a_layer() -> None:
    strays = [
        m for m in _graph() if _layer(m) is None and m not in ("xcr0tool", "xcr0tool.__main__")
    ]
    assert not strays, f"modules outside the layers {LAYERS}: {strays}"


def test_imports_point_down() -> None:
    upward = []
    for module, imported in _graph().items():
        level = _layer(module)
        if level is None:
            continue
        for target in imported:
            target_level = _layer(target)
            if target_level is None or target_level > level:
                upward.append(f"{module} -> {target}")
    assert not upward, "imports that point up a layer:\n" + "\n".join(sorted(upward))


def test_no_import_cycle() -> None:
    graph = _graph()
    # A package's __init__ is not a dependency of its modules here: edges go to modules.
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(node: str, path: list[str]) -> bool:
        state[node] = 1
        for target in sorted(graph.get(node, ())):
            if target == node or target not in graph:
                continue
            if state.get(target) == 1:
                cycle.extend(
                    [*path[path.index(target) :], target] if target in path else [node, target]
                )
                return True
            if state.get(target) is None and visit(target, [*path, target]):
                return True
        state[node] = 2
        return False

    for start in graph:
        if state.get(start) is None and visit(start, [start]):
            break
    assert not cycle, "import cycle: " + " -> ".join(cycle)


def test_the_checker_sees_an_upward_import(tmp_path: Path) -> None:
    """The test above can fail: a function-level import of the CLI from the model is seen."""
    probe = PACKAGE / "model" / "_probe_upward.py"
    probe.write_text("def f() -> None:\n    from xcr0tool.cli import main  # noqa\n")
    try:
        edges = _imports(probe)
    finally:
        probe.unlink()
    assert "xcr0tool.cli.main" in edges or "xcr0tool.cli" in edges
