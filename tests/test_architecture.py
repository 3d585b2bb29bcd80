"""The import direction of docs/architecture.md, checked against the code: each package
imports exactly the project packages its row names (``any`` for the harness), no element
imports ``lab``, and every package is in the table."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "architecture.md"


def _packages() -> set[str]:
    return {p.parent.name for p in ROOT.glob("*/__init__.py") if p.parent.name != "tests"}


def _documented() -> dict[str, set[str] | None]:
    """package -> the project packages it imports (None: any)."""
    rows: dict[str, set[str] | None] = {}
    in_table = False
    for line in DOC.read_text().splitlines():
        if line.startswith("| package | layer | imports"):
            in_table = True
            continue
        if in_table and not line.startswith("|"):
            break
        match = re.match(r"\| `(\w+)` \| [^|]+ \| ([^|]+) \|", line)
        if in_table and match:
            cell = match.group(2).strip()
            if cell == "any":
                rows[match.group(1)] = None
            elif cell == "none":
                rows[match.group(1)] = set()
            else:
                rows[match.group(1)] = set(re.findall(r"`(\w+)`", cell))
    return rows


def _imports(package: str, project: set[str], root: Path = ROOT) -> dict[str, set[str]]:
    """The project packages ``package`` imports -> the modules that import each."""
    found: dict[str, set[str]] = {}
    for path in sorted((root / package).rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top in project and top != package:
                    found.setdefault(top, set()).add(str(path.relative_to(root)))
    return found


def test_every_package_is_in_the_table() -> None:
    assert set(_documented()) == _packages() | {"bench"}


def test_imports_are_what_the_table_says() -> None:
    project = _packages()
    for package, allowed in _documented().items():
        actual = _imports(package, project)
        if allowed is None:
            continue
        extra = {k: sorted(v) for k, v in actual.items() if k not in allowed}
        assert not extra, f"{package} imports what docs/architecture.md does not allow: {extra}"
        unused = allowed - set(actual)
        assert not unused, (
            f"docs/architecture.md says {package} imports {sorted(unused)}; it does not"
        )


def test_nothing_below_the_harness_imports_lab() -> None:
    project = _packages()
    for package in project - {"lab"}:
        users = _imports(package, project).get("lab", set())
        assert not users, f"{sorted(users)} import lab/"


def test_the_check_sees_a_forbidden_import(tmp_path: Path) -> None:
    """Imports inside functions count too (the CLIs import lazily), and plain ``import``."""
    (tmp_path / "pcscf").mkdir()
    (tmp_path / "pcscf" / "cli.py").write_text(
        "import os\n\ndef f():\n    from lab.logsetup import x\n    import iq.codec\n"
    )
    found = _imports("pcscf", {"pcscf", "lab", "iq"}, root=tmp_path)
    assert found == {"lab": {"pcscf/cli.py"}, "iq": {"pcscf/cli.py"}}


def test_every_package_is_installed_by_setup_cfg() -> None:
    """`pip install .` must carry every package (the console script imports them all)."""
    import configparser

    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    included = set(config["options.packages.find"]["include"].split())
    missing = {p for p in _packages() if p not in included or f"{p}.*" not in included}
    assert not missing, f"add {sorted(missing)} to [options.packages.find] include"
