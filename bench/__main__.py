"""Run every benchmark in bench/ (or those named on the command line) and print their tables."""

from __future__ import annotations

import importlib
import os
import platform
import sys
from pathlib import Path

import django


def main(names: list[str]) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "supworker.settings")
    django.setup()
    modules = sorted(p.stem for p in Path(__file__).parent.glob("bench_*.py"))
    selected = [m for m in modules if not names or any(n in m for n in names)]
    print(f"machine: {platform.node()}, {os.cpu_count()} cores, Python {platform.python_version()}\n")
    for name in selected:
        result = importlib.import_module(f"bench.{name}").run()
        for table in result if isinstance(result, list) else [result]:
            print(table.render(), end="\n\n", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
