"""The package's shape (issue 12): imports point one way, lazy imports inside functions included,
and modules stay small enough to read. The checks read the source with `ast`, so an import hidden
in a function body counts as much as one at the top."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import csm_conformance

pytestmark = pytest.mark.selftest
PACKAGE = Path(csm_conformance.__file__).resolve().parent
MAX_LINES = 350
MAX_CLASS_LINES = 120
# Modules still over MAX_LINES, each to be split; the list may only shrink (it is empty since the
# six oversized modules became packages or gave their jobs to modules of their own).
OVERSIZED: set[str] = set()


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """module -> the package modules it imports anywhere in its source."""
    modules = {}
    for path in root.rglob("*.py"):
        parts = (package, *path.relative_to(root).with_suffix("").parts)
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        here = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = here.split(".")[: len(here.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                continue
            graph[name] |= {t for t in targets if t in modules and t not in (name, package)}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_lazy_imports_included():
    graph = import_graph(PACKAGE, "csm_conformance")
    assert sum(map(len, graph.values())) > 50, "the graph is empty: the import parser is broken"
    assert cycles(graph) == []


def test_the_cycle_check_finds_a_planted_lazy_cycle(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from . import b\n")
    (pkg / "b.py").write_text("def f():\n    from .a import g  # lazy, inside a function\n")
    (pkg / "c.py").write_text("from .b import f\n")
    assert cycles(import_graph(pkg, "pkg")) == [["pkg.a", "pkg.b"]]


# The layers, bottom first (docs/architecture.md draws them). A module may import
# only from layers below its own, lazy imports included; two parts of one layer (the two gates) never
# import each other. A new top-level module or package must be given a layer here.
LAYERS: list[set[str]] = [
    {"errors", "results"},  # the foundation: one base for a user's errors, one status and result type,
    {"baseline_files"},  # and reading a stored baseline
    {"catalogue"},  # what is run: cases, workloads
    {"runtime"},  # devices, model loading, probes, clocks
    {"faults"},  # planted faults (--csm-fault)
    {"accuracy", "performance"},  # the two gates
    {"reports"},  # console, JSON (with its schema), Allure
    {"suite"},  # options, settings, the session object
    {"plugin"},  # the pytest plugin
    {"tools"},  # the command-line tools, and tools/cli.py: the one command line with verbs
    ENTRY_MODULES := {"__main__"},  # `python -m csm_conformance <verb>`, the console script's twin
]
RANK = {part: rank for rank, parts in enumerate(LAYERS) for part in parts}


def layer_violations(graph: dict[str, set[str]], package: str, rank: dict[str, int]) -> list[str]:
    """'a -> b' for every import that does not point down a layer."""
    top = lambda module: module.split(".")[1] if module.count(".") else module
    unplaced = sorted({top(m) for m in graph if m != package and top(m) not in rank})
    bad = [f"{part}: no layer (add it to LAYERS)" for part in unplaced]
    for module, imported in sorted(graph.items()):
        for target in sorted(imported):
            a, b = top(module), top(target)
            if a != b and a in rank and b in rank and rank[a] <= rank[b]:
                bad.append(f"{module} -> {target}")
    return bad


def test_imports_point_down_the_layers():
    assert layer_violations(import_graph(PACKAGE, "csm_conformance"), "csm_conformance", RANK) == []


def test_the_layer_check_finds_a_planted_upward_and_sideways_import(tmp_path):
    pkg = tmp_path / "pkg"
    for sub in ("low", "left", "right"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "low" / "a.py").write_text("def f():\n    from pkg.left import b  # lazy, upward\n")
    (pkg / "left" / "b.py").write_text("from pkg.right import c  # sideways\nfrom pkg.low import a\n")
    (pkg / "right" / "c.py").write_text("from pkg.low import a\n")
    (pkg / "stray.py").write_text("")
    rank = {"low": 0, "left": 1, "right": 1}
    assert layer_violations(import_graph(pkg, "pkg"), "pkg", rank) == [
        "stray: no layer (add it to LAYERS)",
        "pkg.left.b -> pkg.right", "pkg.left.b -> pkg.right.c",  # the package and the module, both named by the import
        "pkg.low.a -> pkg.left", "pkg.low.a -> pkg.left.b"]


def test_the_entry_modules_only_keep_the_documented_names():
    """One command line: `csm-conformance <verb>` (tools/cli.py) and its twin `python -m
    csm_conformance <verb>`, whose entry module holds nothing but the hand-over to cli.main. No other
    module or package sits at the package's top beside the layers (the per-tool entry modules
    `python -m csm_conformance.<tool>` are gone; their verbs replace them)."""
    tops = {p.stem for p in PACKAGE.iterdir() if (p.suffix == ".py" or (p / "__init__.py").is_file()) and p.stem != "__init__"}
    assert tops == set().union(*LAYERS), sorted(tops ^ set().union(*LAYERS))
    entries = [PACKAGE / f"{name}.py" for name in ENTRY_MODULES]
    for path in entries:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        kinds = {type(node).__name__ for node in tree.body}
        assert kinds <= {"Expr", "Import", "ImportFrom", "If"}, f"{path.name}: {kinds}"
        assert len(path.read_text(encoding="utf-8").splitlines()) <= 12, path


def test_modules_stay_small():
    sizes = {p.relative_to(PACKAGE).with_suffix("").as_posix(): len(p.read_text(encoding="utf-8").splitlines()) for p in PACKAGE.rglob("*.py")}
    over = {name for name, lines in sizes.items() if lines > MAX_LINES}
    assert over <= OVERSIZED, f"new module(s) over {MAX_LINES} lines: {', '.join(f'{n} ({sizes[n]})' for n in sorted(over - OVERSIZED))}"
    shrunk = {name for name in OVERSIZED if sizes.get(name, 0) <= MAX_LINES}
    assert not shrunk, f"{', '.join(sorted(shrunk))} now within {MAX_LINES} lines: take it off OVERSIZED"


def big_classes(root: Path, limit: int) -> dict[str, int]:
    """'module:Class' -> lines, for every class longer than `limit` lines."""
    found = {}
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > limit:
                found[f"{path.relative_to(root).with_suffix('').as_posix()}:{node.name}"] = node.end_lineno - node.lineno + 1
    return found


def test_classes_stay_small():
    assert big_classes(PACKAGE, MAX_CLASS_LINES) == {}


def test_the_class_check_finds_a_planted_long_class(tmp_path):
    body = "\n".join(f"    def m{i}(self):\n        return {i}" for i in range(70))
    (tmp_path / "long.py").write_text(f"class Long:\n{body}\n\n\nclass Short:\n    pass\n")
    assert big_classes(tmp_path, MAX_CLASS_LINES) == {"long:Long": 141}


# One-line errors that are not (only) the user's to fix: the fault catalogue's runner failing to set
# up, and an A/B worker process failing (a bad interpreter and a crash alike; the A/B tool words both).
NOT_USER_ERRORS = {"csm_conformance.tools.fault_catalogue.run.CatalogueRunError", "csm_conformance.tools.ab.workers.WorkerError"}


def test_every_one_line_error_is_a_user_error():
    """An error class documented as 'the message is one line' is bad input a user can fix, and
    derives from errors.UserError, the one base every entry point reports as one line."""
    import importlib
    import inspect
    import pkgutil

    from csm_conformance.errors import UserError

    one_line = {}
    for info in pkgutil.walk_packages(csm_conformance.__path__, "csm_conformance."):
        if info.name.endswith("__main__"):
            continue
        for obj in vars(importlib.import_module(info.name)).values():
            if inspect.isclass(obj) and issubclass(obj, Exception) and "the message is one line" in (obj.__doc__ or ""):
                one_line[f"{obj.__module__}.{obj.__qualname__}"] = obj
    assert len(one_line) >= 10, sorted(one_line)
    assert sorted(n for n, c in one_line.items() if not issubclass(c, UserError) and n not in NOT_USER_ERRORS) == []


def orchestration(path: Path) -> list[str]:
    """What in a test module is not specification: module-level helpers (functions that are neither
    a test nor a fixture) and edits of a result's verdict (its status or messages)."""
    found = []
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and not node.name.startswith("test_") and not any(
                "fixture" in ast.unparse(d) for d in node.decorator_list):
            found.append(f"{path.name}:{node.lineno} helper {node.name}()")
    for node in ast.walk(tree):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AugAssign) else []
        calls = [node.func.value] if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) else []
        for target in targets + calls:
            if isinstance(target, ast.Attribute) and target.attr in ("status", "messages"):
                found.append(f"{path.name}:{node.lineno} edits .{target.attr}")
    return found


def test_conformance_test_bodies_hold_only_the_specification():
    """case -> probe -> assertion; judging, localizing and reporting live in the package
    (csm_conformance/suite/checks.py), so each is written once for every check."""
    conformance = Path(__file__).resolve().parents[1] / "conformance"
    assert [o for path in sorted(conformance.glob("test_*.py")) for o in orchestration(path)] == []


def test_the_specification_check_finds_planted_orchestration(tmp_path):
    (tmp_path / "test_x.py").write_text(
        "import pytest\n\n@pytest.fixture\ndef case():\n    return 1\n\ndef _judge(r):\n    r.status = 'failed'\n\n"
        "def test_a(case):\n    r = object()\n    r.messages.append('x')\n")
    assert orchestration(tmp_path / "test_x.py") == [
        "test_x.py:7 helper _judge()", "test_x.py:8 edits .status", "test_x.py:12 edits .messages"]
