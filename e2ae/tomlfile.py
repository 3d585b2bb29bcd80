"""The one TOML reader of the project: every configuration file (P-CSCF, AGW, policy, lab
topology) is read here, so they fail the same way with the same words."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any


class TomlFileError(ValueError):
    """A file that cannot be read or is not TOML, or a table that is not one; says which."""


def read_toml(path: Path, what: str = "") -> dict[str, Any]:
    """The parsed contents of ``path`` (``what`` names the file in errors: ``"policy"``)."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        label = f"{what} {path}" if what else str(path)
        raise TomlFileError(f"cannot read {label}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise TomlFileError(f"{path}: not UTF-8 ({exc.reason} at byte {exc.start})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise TomlFileError(f"{path}: {exc}") from exc


def table(data: dict[str, Any], name: str, path: Path) -> dict[str, Any] | None:
    """The ``[name]`` table of ``data`` (None when absent)."""
    value = data.get(name)
    if value is not None and not isinstance(value, dict):
        raise TomlFileError(f"{path}: [{name}] must be a table")
    return value
