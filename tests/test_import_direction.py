"""The import drawing: the core (supworker/) at the bottom, importing no domain app; each domain
app importing only itself and the core. What one app shows of another's (a metric, a dashboard
panel, an endpoint) goes through a registry in the core (supworker.metrics, supworker.dashboard)."""

from __future__ import annotations

import ast

from django.conf import settings

from tests.testenv import ROOT

CORE = "supworker"


def imported_packages(path) -> set[str]:
    """The top-level packages a module imports, wherever the import statement stands."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name.partition(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.partition(".")[0])
    return found


def test_the_core_imports_no_domain_app_and_no_domain_app_imports_another():
    apps = set(settings.DOMAIN_APPS)
    wrong = set()
    for package in (CORE, *sorted(apps)):
        allowed = {package, CORE}
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            for other in (imported_packages(path) & apps) - allowed:
                wrong.add(f"{path.relative_to(ROOT)} imports {other}")
    assert wrong == set()
