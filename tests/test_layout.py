"""The package layout keeps its promises: Hydra only in the task layer, no import cycles, small modules."""
from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

PKG = REPO / "segdeconv"
# The modules allowed to import hydra/omegaconf: the task layer, the config wiring and its cross-key rules,
# the CLI glue, its run-dir guard (a Hydra callback) and the sweeper glue.
HYDRA_ALLOWED = ("segdeconv.tasks.", "segdeconv.config", "segdeconv.cli", "segdeconv.run_dir_guard", "segdeconv.rules",
                 "segdeconv.sweep")


def module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports (top level and inside functions), as dotted names."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


MODULES = {module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def test_hydra_and_omegaconf_are_imported_only_by_the_task_layer():
    offenders = {name: sorted(i for i in imports(p) if i.split(".")[0] in ("hydra", "omegaconf"))
                 for name, p in MODULES.items() if not name.startswith(HYDRA_ALLOWED)}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_checker_sees_a_hydra_import(tmp_path):
    bad = tmp_path / "m.py"
    bad.write_text("def f():\n    from omegaconf import OmegaConf\n")
    assert "omegaconf" in imports(bad)


def internal_graph() -> dict[str, set[str]]:
    """segdeconv module → the segdeconv modules it imports (``from a import b`` counts a.b when a.b is a module)."""
    return {name: {i for i in imports(p) if i in MODULES and i != name} for name, p in MODULES.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle as a list of modules, or [] (iterative DFS with colours)."""
    state: dict[str, int] = {}
    for start in graph:
        if state.get(start):
            continue
        stack, path = [(start, iter(sorted(graph[start])))], [start]
        state[start] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                state[node] = 2
                stack.pop()
                path.pop()
            elif state.get(child) == 1:
                return path[path.index(child):] + [child]
            elif not state.get(child):
                state[child] = 1
                stack.append((child, iter(sorted(graph[child]))))
                path.append(child)
    return []


def test_no_import_cycles():
    graph = internal_graph()
    # package __init__ files re-export their children: an edge child → its own package is not a cycle
    for name in graph:
        graph[name] = {i for i in graph[name] if not name.startswith(i + ".")}
    assert find_cycle(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]


def test_modules_stay_small():
    long = {name: n for name, p in MODULES.items() if (n := len(p.read_text().splitlines())) > 320}
    assert long == {}
