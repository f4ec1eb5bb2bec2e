"""The package's shape: imports go one way (no cycles, no upward edges), files and functions stay small.

Layers, lowest first; a module may import its own package and lower layers only. Data flows
CLI -> config -> study -> saliency -> report; the report renders what is on disk, so it may read the run
folder and the vocabulary but no stage that computes.
"""

import ast
from collections import defaultdict
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "cmrprior"
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors",),
    ("utils",),
    ("vocab",),
    ("runs",),
    ("io",),
    ("anatomy",),
    ("data",),
    ("segmentation", "models"),
    ("ssl",),
    ("evaluate",),
    ("classify",),
    ("saliency",),
    ("report",),
    ("bundle",),
    ("experiments",),
    ("cli", "__main__", "__init__"),
)
RANK = {pkg: i for i, layer in enumerate(LAYERS) for pkg in layer}
REPORT_MAY_IMPORT = {"errors", "vocab", "utils", "runs", "report", "data"}
REPORT_MAY_IMPORT_FROM_DATA = {"cmrprior.data.prepared"}  # the prepared cohort's on-disk reader, nothing that computes
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 80


def _package(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imports(path: Path) -> set[str]:
    return _imported_packages(path.read_text())


def _imported_packages(source: str) -> set[str]:
    """Top-level cmrprior packages imported anywhere in `source` (function-level imports included)."""
    out = set()
    for node in ast.walk(ast.parse(source)):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "cmrprior" and len(parts) > 1 and parts[1] in RANK:
                out.add(parts[1])
    return out


def _sources() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def test_every_package_has_a_layer():
    assert {_package(p) for p in _sources()} <= set(RANK)


def test_no_upward_imports():
    bad = []
    for path in _sources():
        pkg = _package(path)
        for dep in _imports(path) - {pkg}:
            if RANK[dep] > RANK[pkg] or (RANK[dep] == RANK[pkg] and pkg not in ("cli", "__main__", "__init__")):
                bad.append(f"{path.relative_to(SRC)} imports cmrprior.{dep}")
    assert not bad, "\n".join(bad)


def test_report_only_reads():
    bad = [f"{p.relative_to(SRC)} imports cmrprior.{d}" for p in _sources() if _package(p) == "report"
           for d in _imports(p) - REPORT_MAY_IMPORT]
    for p in _sources():
        if _package(p) == "report":
            for node in ast.walk(ast.parse(p.read_text())):
                mods = [node.module] if isinstance(node, ast.ImportFrom) and node.module else (
                    [a.name for a in node.names] if isinstance(node, ast.Import) else [])
                bad += [f"{p.relative_to(SRC)} imports {m}" for m in mods
                        if m.startswith("cmrprior.data") and m not in REPORT_MAY_IMPORT_FROM_DATA]
    assert not bad, "\n".join(bad)


def test_no_import_cycles_between_packages():
    graph = defaultdict(set)
    for path in _sources():
        graph[_package(path)] |= _imports(path) - {_package(path)}

    def reach(start):
        seen, todo = set(), [start]
        while todo:
            for nxt in graph[todo.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    cycles = sorted(p for p in list(graph) if p in reach(p))
    assert not cycles, f"packages on an import cycle: {cycles}"


def test_the_import_parser_sees_every_form():
    src = ("import cmrprior.io.nifti\nfrom cmrprior.report import build_report\nfrom cmrprior import vocab\n"
           "def f():\n    from cmrprior.experiments.study import run_study\nimport numpy\n")
    assert _imported_packages(src) == {"io", "report", "vocab", "experiments"}


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(SRC)))
def test_files_and_functions_are_small(path):
    lines = path.read_text().splitlines()
    assert len(lines) <= MAX_FILE_LINES, f"{len(lines)} lines"
    long = [f"{n.name} ({n.end_lineno - n.lineno + 1} lines)" for n in ast.walk(ast.parse(path.read_text()))
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, ", ".join(long)
