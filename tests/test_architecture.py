"""The package's layering, checked from the source (no import needed):

- every import between ttakit's packages points down the layer list below
  (function-level imports count too: a lazy import is still a dependency);
- no import circle between modules at import time;
- no import circle between files at all, counting imports inside functions
  (a lazy import hides a circle from Python, not from the reader);
- no private (underscore) name is imported across packages.

The README's "Layout" section lists the same layers.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "ttakit"

#: lowest first; a package may import only from packages of a lower rank (or itself)
LAYERS = {
    "errors": 0, "version": 0, "files": 0, "limits": 0.5,  # limits: above errors, below views
    "views": 1, "datasets": 1, "shift": 1,
    "merge": 2,
    "policy": 3, "inputs": 3,
    "models": 4,
    "engine": 5, "zoo": 5, "graph": 5,  # graph: TTA as one graph, ttakit.export (beside the run loop)
    "adapt": 5.5,  # test-time adaptation of torch models: below the tasks that use it
    "tasks": 6,
    "evaluation": 7,
    "conformal": 7.5,
    "report": 7.7,  # HTML reports: reads evaluation's reports, nothing below imports it
    "tuning": 8,
    "io": 9, "sklearn": 9,
    "experiments": 10,
    "serve": 10, "scale": 10,
    "interfaces": 11,
    "torch": 11,  # ttakit.torch: a front door (TTAModule), importing from graph only
}
TOP = {"__init__", "__main__"}  # the package's front door may import anything


def modules() -> dict[str, Path]:
    out = {}
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = modules()


def package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def resolve(module: str, path: Path, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    if path.name != "__init__.py":
        base = base[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports(module: str, path: Path, top_level_only: bool = False):
    """(target module, imported names, line) for every ttakit import."""
    tree = ast.parse(path.read_text(), str(path))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    if top_level_only:  # include imports nested in top-level if/try blocks, not in functions
        stack, nodes = list(tree.body), []
        while stack:
            n = stack.pop()
            nodes.append(n)
            if isinstance(n, (ast.If, ast.Try)):
                stack.extend(n.body + n.orelse + getattr(n, "finalbody", []) +
                             [s for h in getattr(n, "handlers", []) for s in h.body])
    for n in nodes:
        if isinstance(n, ast.ImportFrom):
            if n.module == "__future__":
                continue
            target = resolve(module, path, n)
            if not target.startswith("ttakit"):
                continue
            names = [a.name for a in n.names]
            # "from pkg import submodule" is an import of the submodule
            subs = [f"{target}.{a}" for a in names if f"{target}.{a}" in MODULES]
            for s in subs:
                yield s, [], n.lineno
            rest = [a for a in names if f"{target}.{a}" not in MODULES]
            if rest or not subs:
                yield target, rest, n.lineno
        elif isinstance(n, ast.Import):
            for a in n.names:
                if a.name.startswith("ttakit"):
                    yield a.name, [], n.lineno


def test_every_package_is_in_the_layer_list():
    packages = {package_of(m) for m in MODULES} - TOP
    assert packages <= set(LAYERS), f"add to LAYERS (and the README): {sorted(packages - set(LAYERS))}"


def test_imports_point_down_the_layers():
    bad = []
    for mod, path in MODULES.items():
        src = package_of(mod)
        if src in TOP:
            continue
        for target, _, line in imports(mod, path):
            dst = package_of(target)
            if dst == src:
                continue
            if dst in TOP:
                bad.append(f"{path.relative_to(SRC)}:{line} imports the top-level package ttakit")
            elif LAYERS[dst] >= LAYERS[src]:
                bad.append(f"{path.relative_to(SRC)}:{line}: {src} (layer {LAYERS[src]}) imports {target} "
                           f"(layer {LAYERS[dst]})")
    assert not bad, "upward or sideways imports:\n" + "\n".join(bad)


def test_no_private_name_crosses_a_package():
    bad = []
    for mod, path in MODULES.items():
        for target, names, line in imports(mod, path):
            if package_of(target) == package_of(mod):
                continue
            private = [n for n in names if n.startswith("_") and not (n.startswith("__") and n.endswith("__"))]
            private += [p for p in target.split(".")[1:] if p.startswith("_") and p != "__init__"]
            if private:
                bad.append(f"{path.relative_to(SRC)}:{line} imports {', '.join(private)} from {target}")
    assert not bad, "\n".join(bad)


def _cycles(graph: dict[str, list[str]]) -> list[str]:
    """The circles of the import graph ``module -> imported modules``."""
    # a package's __init__ importing its own submodules, and those importing siblings, is the normal shape;
    # a circle is a path back to where it started
    state: dict[str, int] = {}
    cycles = []

    def visit(m, trail):
        state[m] = 1
        for t in graph[m]:
            if state.get(t) == 1:
                cycle = trail[trail.index(t):] + [t]
                # a submodule importing its own package's __init__ while that __init__ imports it
                if not all(x == cycle[0] or x.startswith(cycle[0] + ".") or cycle[0].startswith(x + ".")
                           for x in cycle):
                    cycles.append(" -> ".join(cycle))
            elif state.get(t) is None:
                visit(t, trail + [t])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    return cycles


def test_no_import_circle_at_import_time():
    graph = {m: sorted({t for t, _, _ in imports(m, p, top_level_only=True) if t in MODULES and t != m})
             for m, p in MODULES.items()}
    cycles = _cycles(graph)
    assert not cycles, "import circles:\n" + "\n".join(cycles)


def _file_graph() -> dict[str, list[str]]:
    """Module -> the modules it imports anywhere in the file, functions included."""
    return {m: sorted({t for t, _, _ in imports(m, p) if t in MODULES and t != m}) for m, p in MODULES.items()}


def test_no_import_circle_between_files():
    """Even imports inside functions: files of one package must not import each other both ways."""
    graph = _file_graph()
    cycles = _cycles(graph)
    assert not cycles, "import circles between files (imports in functions count):\n" + "\n".join(cycles)


@pytest.mark.parametrize("name", ["Classifier", "Policy", "evaluate", "tune", "register_merge"])
def test_front_door_names(name):
    import ttakit

    assert hasattr(ttakit, name)


#: built-in exceptions the library may raise where Python's protocols call for them
PROTOCOL_RAISES = {
    ("policy/policy.py", "AttributeError"),     # a Policy is immutable (setattr/delattr protocol)
    ("experiments/report.py", "TypeError"),     # json.dumps' default= hook protocol
    ("views/dihedral.py", "AssertionError"),    # an internal invariant, unreachable from input
}


def test_the_library_raises_only_ttakit_errors():
    builtin = {"ValueError", "TypeError", "RuntimeError", "KeyError", "IndexError", "AttributeError",
               "OSError", "Exception", "AssertionError", "NotImplementedError"}
    bad = []
    for mod, path in MODULES.items():
        rel = str(path.relative_to(SRC))
        for n in ast.walk(ast.parse(path.read_text())):
            if isinstance(n, ast.Raise) and n.exc is not None:
                f = n.exc.func if isinstance(n.exc, ast.Call) else n.exc
                name = f.id if isinstance(f, ast.Name) else getattr(f, "attr", None)
                if name in builtin and (rel, name) not in PROTOCOL_RAISES:
                    bad.append(f"{rel}:{n.lineno} raises {name}")
    assert not bad, "raise a ttakit error (ttakit.errors) instead:\n" + "\n".join(bad)


def test_the_core_imports_without_scipy():
    """scipy is an extra (`ttakit[stats]`, and it comes with scikit-learn): the run loop, the tasks,
    evaluation and tuning import without it (a module that needs it imports it where it is used)."""
    import subprocess
    import sys

    code = ("import sys\n"
            "class Block:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name == 'scipy' or name.startswith('scipy.'):\n"
            "            raise ImportError('scipy blocked')\n"
            "sys.meta_path.insert(0, Block())\n"
            "import ttakit, ttakit.tasks.rows, ttakit.tasks.linear_rows, ttakit.evaluation, ttakit.tuning\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**__import__("os").environ, "PYTHONPATH": str(SRC.parent)}, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
