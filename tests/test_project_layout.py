"""Rules about the repository itself: every third-party import is declared in pyproject.toml (so a
fresh `pip install -e .[dev]` can run the package and the tests), and no test module imports another
test module or a conftest (shared helpers live in helper modules and fixtures); the packages import
each other in one direction only, as docs/architecture.md says; every pointer into docs/method.md names an anchor it has."""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import re
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("infra", "pretrain", "downstream", "disco_bench")
LOCAL = {*PACKAGES, "tests", "benchmarks"}
# imported only where installed on purpose, never by `pip install -e .`: detectron2 comes from
# scripts/install_detectron2.sh (official source, or a hash-pinned wheel of it)
INSTALLED_BY_SCRIPT = {"detectron2"}


def imports_of(path: Path) -> set[str]:
    """Top-level names of the absolute imports in one file."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def third_party(paths) -> dict[str, set[str]]:
    """top-level import -> files importing it, leaving out the standard library and this repository's
    own modules (including sibling modules such as tests/disco_bench/fake_steps.py)."""
    found: dict[str, set[str]] = {}
    for path in paths:
        siblings = {p.stem for p in path.parent.glob("*.py")}
        for name in imports_of(path) - LOCAL - siblings - set(sys.stdlib_module_names):
            found.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    return found


def normalise(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9_.\-]+", requirement).group(0)).lower()


def declared(*extras: str) -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"]) + [r for e in extras for r in project["optional-dependencies"][e]]
    return {normalise(r) for r in reqs}


@functools.cache
def installed() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()  # scans every installed package: once


def distribution(import_name: str) -> str:
    dists = installed().get(import_name)
    assert dists, f"{import_name} is imported but not installed in this environment"
    return normalise(dists[0])


def undeclared(imports: dict[str, set[str]], allowed: set[str]) -> list[str]:
    return sorted(
        f"{name} ({distribution(name)}; imported by {', '.join(sorted(files))})"
        for name, files in imports.items()
        if name not in INSTALLED_BY_SCRIPT and distribution(name) not in allowed
    )


def test_the_package_imports_only_what_it_declares():
    files = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")]
    # submitit: the slurm launcher, imported only when that launcher is chosen (its error names the extra)
    assert undeclared(third_party(files), declared("slurm")) == []


def test_tests_and_benchmarks_import_only_what_the_dev_extra_adds():
    files = [*(ROOT / "tests").rglob("*.py"), *(ROOT / "benchmarks").rglob("*.py")]
    assert undeclared(third_party(files), declared("dev", "slurm")) == []


def test_no_test_module_imports_another_test_module_or_a_conftest():
    offenders = []
    for path in (ROOT / "tests").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            modules = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else ([node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            )
            for module in modules:
                last = module.split(".")[-1]
                if last.startswith("test_") or last == "conftest":
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {module}")
    assert offenders == []


def repo_imports(path: Path) -> set[str]:
    """Dotted names of this repository's modules that one file imports (absolute imports)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return {n for n in names if n.split(".")[0] in PACKAGES}


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        # the shared infrastructure serves the three packages and imports none of them
        ("infra", ("pretrain", "downstream", "disco_bench")),
        ("pretrain", ("downstream", "disco_bench")),
        # downstream uses pretrain's models, data and teacher loading, never a method or the training loop
        ("downstream", ("disco_bench", "pretrain.methods", "pretrain.train")),
    ],
)
def test_imports_go_one_way(package, forbidden):
    offenders = sorted(
        f"{path.relative_to(ROOT)} imports {name}"
        for path in (ROOT / package).rglob("*.py")
        for name in repo_imports(path)
        if name.startswith(forbidden)
    )
    assert offenders == []


def test_every_docs_method_anchor_the_repository_points_to_exists():
    anchors = set(re.findall(r'<a id="([^"]+)"></a>', (ROOT / "docs" / "method.md").read_text()))
    pointers = []
    files = [ROOT / "README.md"] + [
        p
        for folder in ("pretrain", "downstream", "disco_bench", "tests", "benchmarks", "docs")
        for p in (ROOT / folder).rglob("*")
        if p.suffix in (".py", ".md", ".yaml")
    ]
    for path in files:
        for anchor in re.findall(r"docs/method\.md#([a-z0-9-]+)", path.read_text(errors="replace")):
            pointers.append((str(path.relative_to(ROOT)), anchor))
    # also links inside docs/method.md itself
    pointers += [
        ("docs/method.md", a)
        for a in re.findall(r"\]\(#([a-z0-9-]+)\)", (ROOT / "docs" / "method.md").read_text())
    ]
    assert pointers and [p for p in pointers if p[1] not in anchors] == []
