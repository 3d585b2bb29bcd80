"""Tests mirror the code: ``tests/<package>/test_<module>[_<aspect>].py`` for a module
``<package>/<module>.py``; only the repository-wide tests sit at the top of ``tests/``."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"

#: Tests of the repository as a whole, not of one module.
REPOSITORY_WIDE = {
    "test_architecture.py",  # the import graph against docs/architecture.md
    "test_quality.py",  # ruff and mypy --strict
    "test_docs_standalone.py",  # docs cite only what the repository holds
    "test_fuzz.py",  # every parser a peer reaches, across packages
    "test_build.py",  # the elements built together and through every command
    "test_layout.py",  # this file
}


def _modules(package: Path) -> set[str]:
    return {p.stem for p in package.glob("*.py") if p.stem != "__init__"}


def test_every_test_file_names_a_module_of_its_package() -> None:
    wrong = []
    for path in sorted(TESTS.rglob("test_*.py")):
        relative = path.relative_to(TESTS)
        if len(relative.parts) == 1:
            if relative.name not in REPOSITORY_WIDE:
                wrong.append(f"{relative}: a top-level test that is not repository-wide")
            continue
        package = ROOT.joinpath(*relative.parts[:-1])
        name = path.stem.removeprefix("test_")
        modules = _modules(package) if package.is_dir() else set()
        if not any(name == m or name.startswith(m + "_") for m in modules):
            wrong.append(f"{relative}: no module {package.relative_to(ROOT)}/{name}.py")
    assert not wrong, "\n".join(wrong)


def test_every_test_directory_is_a_package() -> None:
    # Without __init__.py two test_cli.py files in different directories would collide.
    missing = [
        str(d.relative_to(ROOT))
        for d in TESTS.rglob("*")
        if d.is_dir() and any(d.glob("test_*.py")) and not (d / "__init__.py").exists()
    ]
    assert not missing


def test_the_rule_finds_a_misplaced_file() -> None:
    assert not any("no_such" == m or "no_such".startswith(m + "_") for m in _modules(ROOT / "iq"))
    assert any("link_trust".startswith(m + "_") for m in _modules(ROOT / "iq"))
