"""What pyproject.toml declares and what the locks under requirements/ pin (see `make lock`)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.testenv import ROOT

RUNTIME_LOCK = ROOT / "requirements" / "runtime.txt"
DEV_LOCK = ROOT / "requirements" / "dev.txt"
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==(\S+)", re.MULTILINE)
_HASHED_PIN = re.compile(r"^\S+==\S+ \\\n\s+--hash=sha256:[0-9a-f]{64}", re.MULTILINE)


def locked(path: Path) -> dict[str, str]:
    """Every `name==version` of a lock, by normalised name (hash lines and comments skipped)."""
    return {canonicalize_name(name): version for name, version in _PIN.findall(path.read_text())}


def hashed_pins(path: Path) -> int:
    """How many pins of a lock carry at least one sha256 hash."""
    return len(_HASHED_PIN.findall(path.read_text()))


def declared(group: str | None = None) -> dict[str, str]:
    """pyproject.toml's runtime dependencies, or one dependency group: normalised name → version specifier."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    lines = project["project"]["dependencies"] if group is None else project["dependency-groups"][group]
    return {canonicalize_name(r.name): str(r.specifier) for r in map(Requirement, lines)}
