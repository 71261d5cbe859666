"""The import layering of DESIGN.md, checked on the source (parsed with ast, not imported).

Domain packages (``classify``, ``cluster``, ``infer``, ``labels``, ``regress``, ``assess``,
``similar``, ``change``) never import ``io``, ``export`` or ``runtime``, at module level
or inside a function: :mod:`geoembed.jobs` composes them. Nothing below the CLI imports
``geoembed.cli``, and no domain package imports ``geoembed.jobs`` (the old job and model
I/O names are served by :func:`geoembed._deprecated.moved_attributes`, on first use).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "geoembed"
DOMAIN = ["classify", "cluster", "infer", "labels", "regress", "assess", "similar", "change"]
FORBIDDEN = ("geoembed.io", "geoembed.export", "geoembed.runtime")
UPWARD = ("geoembed.jobs", "geoembed.cli")


def _modules(name: str) -> list[Path]:
    package = PACKAGE / name
    return sorted(package.rglob("*.py")) if package.is_dir() else [PACKAGE / f"{name}.py"]


def _imports(path: Path) -> Iterator[tuple[str, int, str]]:
    """``(imported module, line, enclosing function or "")`` for every import in ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    parents: dict[ast.AST, ast.AST] = {}
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            parents[child] = node

    def function(node: ast.AST) -> str:
        while node in parents:
            node = parents[node]
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                return node.name
        return ""

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno, function(node)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module, node.lineno, function(node)
            for alias in node.names:  # from geoembed import io
                yield f"{node.module}.{alias.name}", node.lineno, function(node)


def _matches(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


@pytest.mark.parametrize("name", DOMAIN)
def test_domain_packages_do_not_import_io_export_runtime(name: str) -> None:
    bad = [
        f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}"
        for path in _modules(name)
        for module, line, _ in _imports(path)
        if _matches(module, FORBIDDEN)
    ]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("name", DOMAIN)
def test_domain_packages_do_not_import_jobs_or_cli(name: str) -> None:
    bad = [
        f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}"
        for path in _modules(name)
        for module, line, _ in _imports(path)
        if _matches(module, UPWARD)
    ]
    assert not bad, "\n".join(bad)


def test_nothing_below_the_cli_imports_it() -> None:
    bad = [
        f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if "cli" not in path.relative_to(PACKAGE).parts
        for module, line, _ in _imports(path)
        if _matches(module, ("geoembed.cli",))
    ]
    assert not bad, "\n".join(bad)


def test_the_checker_sees_imports_inside_functions(tmp_path: Path) -> None:
    """The parser finds the import forms the rules are about (so the tests can fail)."""
    src = tmp_path / "m.py"
    src.write_text(
        "import geoembed.io\n"
        "from geoembed import export\n"
        "def f():\n    from geoembed.runtime import compute\n"
        "def __getattr__(name):\n    from geoembed.jobs import classify\n"
    )
    found = {(m, f) for m, _, f in _imports(src)}
    assert ("geoembed.io", "") in found and ("geoembed.export", "") in found
    assert ("geoembed.runtime", "f") in found and ("geoembed.jobs", "__getattr__") in found


@pytest.mark.parametrize(
    ("module", "name", "new"),
    [
        ("geoembed.classify", "classify_job", "geoembed.jobs.classify:classify_job"),
        ("geoembed.classify.job", "default_cv", "geoembed.jobs.classify:default_cv"),
        ("geoembed.cluster", "cluster_to_cog", "geoembed.jobs.cluster:cluster_to_cog"),
        ("geoembed.classify", "save_model", "geoembed.jobs.model_io:save_model"),
        ("geoembed.classify", "load_model", "geoembed.jobs.model_io:load_model"),
        ("geoembed.classify", "save_estimator", "geoembed.jobs.model_io:save_estimator"),
        ("geoembed.cluster", "save_model", "geoembed.jobs.model_io:save_kmeans"),
        ("geoembed.cluster.model_io", "load_model", "geoembed.jobs.model_io:load_kmeans"),
    ],
)
def test_old_job_and_model_paths_still_work_with_a_warning(
    module: str, name: str, new: str
) -> None:
    import importlib

    new_module, new_name = new.split(":")
    with pytest.warns(DeprecationWarning, match="moved to geoembed.jobs"):
        old = getattr(importlib.import_module(module), name)
    assert old is getattr(importlib.import_module(new_module), new_name)


def test_importing_the_domain_packages_warns_nothing() -> None:
    import subprocess
    import sys

    code = "import geoembed.classify, geoembed.cluster, geoembed.train, geoembed.jobs"
    res = subprocess.run(
        [sys.executable, "-W", "error::DeprecationWarning:geoembed", "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr


def test_the_cli_and_the_package_start_without_scikit_learn() -> None:
    """``import geoembed`` / ``geoembed.cli`` leave scikit-learn to the commands that fit.

    Every CLI call and every Dask worker process imports the package; scikit-learn
    alone costs about a second there. Its ``NotFittedError`` base is still honoured.
    """
    import subprocess
    import sys

    code = (
        "import sys, geoembed, geoembed.cli, geoembed.errors as e\n"
        "assert 'sklearn' not in sys.modules, 'sklearn imported at start-up'\n"
        "from sklearn.exceptions import NotFittedError as base\n"
        "assert all(issubclass(e.NotFittedError, c) for c in (base, e.ModelError, ValueError))\n"
        "assert e.NotFittedError is e.NotFittedError\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
