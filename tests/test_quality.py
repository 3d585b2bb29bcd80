"""The house rules as tests: ruff clean everywhere, ``mypy --strict`` clean on the pure cores
(the modules listed under ``files`` in setup.cfg ``[mypy]``), and no Twisted import in them."""

from __future__ import annotations

import ast
import configparser
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, require_tool


def _pure_core_paths() -> list[Path]:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    entries = [e.strip() for e in cfg["mypy"]["files"].replace(",", "\n").split()]
    paths: list[Path] = []
    for entry in entries:
        path = REPO / entry
        paths.extend(sorted(path.rglob("*.py")) if path.is_dir() else [path])
    return paths


def test_ruff_clean() -> None:
    require_tool("ruff")
    result = subprocess.run(
        ["ruff", "check", "--no-cache", "."], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_on_pure_cores() -> None:
    require_tool("mypy")
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", _pure_core_paths(), ids=lambda p: str(p.relative_to(REPO)))
def test_pure_core_imports_no_twisted(path: Path) -> None:
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        for name in names:
            assert not name.startswith("twisted"), f"{path}:{node.lineno} imports {name}"
