"""Run by tests/test_runtime_deps.py with the Python of a virtualenv that holds only
requirements/runtime.txt: import every module a process can load and print, as JSON, what was
imported and which distributions the interpreter sees. Standard library and runtime set only:
nothing from tests/ or the development tools may be imported here.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
from importlib import metadata

# Our code: every process imports its app modules, and the workers import job functions by name.
APPS = ("supworker", "media_jobs", "notifications", "cleanup", "monitoring")
# Loaded by dotted path from what the environment chooses (STORAGES with AWS_S3_BUCKET,
# EMAIL_BACKEND=anymail.backends.<esp>.EmailBackend), so no import of ours names them.
CONFIGURABLE = ("storages.backends.s3", "anymail.backends")


def _fail(name: str) -> None:
    """walk_packages skips a package that fails to import unless told otherwise; called in its `except`."""
    raise ImportError(f"cannot import {name}")


def modules(package_name: str) -> list[str]:
    """The package and every module below it, tests excluded; importing the packages as it walks."""
    package = importlib.import_module(package_name)
    names = [package_name]
    for info in pkgutil.walk_packages(getattr(package, "__path__", []), f"{package_name}.", onerror=_fail):
        if "tests" not in info.name.split("."):
            names.append(info.name)
    return names


def main() -> None:
    from supworker.startup import load_settings_or_exit

    load_settings_or_exit()
    import django
    from django.conf import settings
    from django.db.utils import load_backend

    django.setup()
    load_backend(settings.DATABASES["default"]["ENGINE"])  # psycopg2, which no module of ours imports
    imported = []
    for root in APPS + CONFIGURABLE:
        for name in modules(root):
            importlib.import_module(name)
            imported.append(name)
    distributions = sorted(dist.metadata["Name"] for dist in metadata.distributions())
    print(json.dumps({"modules": imported, "distributions": distributions}))


if __name__ == "__main__":
    main()
