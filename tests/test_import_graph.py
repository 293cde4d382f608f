"""The import graph of the packages and scripts has no cycles.

Every ``import`` statement counts, wherever it stands (module level, inside a function, under
``TYPE_CHECKING``): a reader following a name from module to module never comes back to
where they started. ``from pkg import name`` is an edge to ``pkg.name`` when that is a module,
else to ``pkg``.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("envs", "agents")
SCRIPTS = ("train.py", "evaluate.py")

def module_files(root: Path = ROOT) -> dict[str, Path]:
    files = {}
    for pkg in PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            files[".".join(parts)] = path
    for script in SCRIPTS:
        files[script[:-3]] = root / script
    return files


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    files = module_files(root)
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        is_pkg = path.name == "__init__.py"
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names if a.name in files)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative import
                    anchor = name.split(".")
                    anchor = anchor[:len(anchor) - node.level + (1 if is_pkg else 0)]
                    base = ".".join([*anchor, *([base] if base else [])])
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    if sub in files:
                        targets.add(sub)
                    elif base in files:
                        targets.add(base)
        targets.discard(name)
        graph[name] = targets
    return graph


def script_imports(graph: dict[str, set[str]]) -> dict[str, list[str]]:
    """The package modules that import a script, and the scripts each imports."""
    scripts = {s[:-3] for s in SCRIPTS}
    return {m: sorted(graph[m] & scripts) for m in graph
            if m.split(".")[0] in PACKAGES and graph[m] & scripts}


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(comp)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_graph_sees_every_module_and_a_known_edge():
    graph = import_graph()
    assert {"envs.config", "envs.fleet_env", "agents.base", "train", "evaluate"} <= set(graph)
    assert "envs.config" in graph["envs.processes"]
    assert "envs.config" in graph["envs"]


def test_cycle_finder_finds_a_cycle_through_a_local_import():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [{"a", "b", "c"}]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_packages_do_not_import_the_scripts():
    """The scripts are front ends: what they run lives in the packages, which never import
    them back (not even inside a function)."""
    found = script_imports(import_graph())
    assert found == {}, f"modules importing a script: {found}"


def test_a_script_import_inside_a_function_is_seen(tmp_path: Path):
    for pkg in PACKAGES:
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
    for script in SCRIPTS:
        (tmp_path / script).write_text("")
    (tmp_path / "agents" / "lib.py").write_text("def f():\n    from train import TEST_SEED\n")
    assert script_imports(import_graph(tmp_path)) == {"agents.lib": ["train"]}


def test_every_module_imports():
    """Each module of the packages and each script loads (a name imported from a module that
    no longer holds it fails here, not in the one code path that reaches it)."""
    import importlib

    failed = {}
    for name in module_files():
        try:
            importlib.import_module(name)
        except ImportError as exc:
            failed[name] = str(exc)
    assert failed == {}


def test_no_import_cycles():
    found = cycles(import_graph())
    assert found == [], "import cycles: " + "; ".join(" <-> ".join(sorted(c)) for c in found)
