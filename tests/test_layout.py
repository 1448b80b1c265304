"""The package layout: one package per pipeline stage, imports that only point down, no cycles.

Walks every module's imports with ast (top-level and function-level alike: a function-level
import is still an arrow), so the rule holds for code paths no test happens to execute.
"""
from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO_ROOT

# Each stage package and the packages it may import. core is the shared bottom; cluster (the Ray
# connection and worker pools) sits just above it; lm and emission build on core; decoders fuse
# LMs; emission and eval run their work on the cluster; eval scores and reports everything.
ALLOWED = {
    "core": set(),
    "cluster": {"core"},
    "lm": {"core"},
    "emission": {"core", "cluster"},
    "decoders": {"core", "lm"},
    "eval": {"core", "cluster", "lm", "emission", "decoders"},
}
PREFIX = "ctclab."


def _modules() -> dict[str, Path]:
    """ctclab module name -> file, for every module of the stage packages."""
    out = {}
    for package in ALLOWED:
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            rel = path.relative_to(REPO_ROOT).with_suffix("")
            parts = list(rel.parts[:-1]) if rel.name == "__init__" else list(rel.parts)
            out[PREFIX + ".".join(parts)] = path
    return out


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Project modules that ``name`` imports (resolved to modules, not to names in them)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*up, base] if base else up)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                       for a in node.names]
        for target in targets:
            while target and target not in known:  # a name inside a module: the module
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _stage(module: str) -> str:
    return module.removeprefix(PREFIX).split(".")[0]


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, set(modules)) for name, path in modules.items()}


def test_every_stage_package_exists_and_is_installed_under_ctclab():
    import importlib

    for package in ALLOWED:
        module = importlib.import_module(PREFIX + package)
        assert Path(module.__path__[0]).resolve() == (REPO_ROOT / package).resolve()


def test_imports_only_point_down():
    upward = sorted(f"{a} -> {b}" for a, targets in _graph().items() for b in targets
                    if _stage(b) != _stage(a) and _stage(b) not in ALLOWED[_stage(a)])
    assert not upward, "imports that point up or sideways between stages:\n" + "\n".join(upward)


def test_no_import_cycles():
    graph = _graph()
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_checker_sees_an_upward_arrow(tmp_path):
    """The walk is not vacuous: an lm module importing a decoder is reported."""
    bad = tmp_path / "bad.py"
    bad.write_text("from ctclab.decoders.beam import BeamSearchDecoder\n", encoding="utf-8")
    found = _imports("ctclab.lm.bad", bad, set(_modules()))
    assert "ctclab.decoders.beam" in found and _stage("ctclab.decoders.beam") not in ALLOWED["lm"]


def test_no_sys_path_edits_in_library_or_scripts():
    offenders = [str(p.relative_to(REPO_ROOT)) for folder in (*ALLOWED, "bench")
                 for p in (REPO_ROOT / folder).rglob("*.py")
                 if "sys.path" in p.read_text(encoding="utf-8")]
    assert not offenders, f"sys.path edits in {offenders}: import through the installed ctclab.*"
