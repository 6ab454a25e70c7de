"""The runtime set (pyproject.toml's dependencies, locked in requirements/runtime.txt) is enough
for every process, and the development tools stay out of it.

A throwaway virtualenv gets requirements/runtime.txt and nothing else, installed by uv (from its
cache when it holds every wheel, a few seconds); with its Python, every module of our apps is
imported, `manage.py check` passes and every process of the Procfile loads its entry point.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

from tests.locks import DEV_LOCK, RUNTIME_LOCK, declared, hashed_pins, locked
from tests.runtime_probe import APPS
from tests.test_deploy_files import procfile
from tests.testenv import ROOT


def test_pyproject_pins_exactly_what_the_locks_hold():
    for group, lock in ((None, RUNTIME_LOCK), ("dev", DEV_LOCK)):
        pins = locked(lock)
        for name, specifier in declared(group).items():
            assert specifier.startswith("==") and "," not in specifier, f"{name}{specifier}: pin an exact version"
            assert pins.get(name) == specifier[2:], f"{name}{specifier} is not in {lock.name}: run `make lock`"


def test_the_image_runs_the_versions_the_tests_ran():
    runtime, dev = locked(RUNTIME_LOCK), locked(DEV_LOCK)
    assert {name: dev.get(name) for name in runtime} == runtime
    for lock in (RUNTIME_LOCK, DEV_LOCK):
        assert hashed_pins(lock) == len(locked(lock)), f"every pin of {lock.name} carries its hashes"


@pytest.fixture(scope="module")
def runtime_venv(tmp_path_factory) -> Path:
    """A virtualenv with requirements/runtime.txt only (uv's venv has no pip either)."""
    venv = tmp_path_factory.mktemp("runtime") / "venv"
    uv = Path(sys.executable).parent / "uv"
    subprocess.run([uv, "venv", "--quiet", "--python", sys.executable, venv], check=True)
    install = [uv, "pip", "install", "--quiet", "--python", venv / "bin" / "python", "--require-hashes"]
    install += ["--requirement", RUNTIME_LOCK]
    # No network when uv's cache already holds every wheel; the package index otherwise.
    if subprocess.run([*install, "--offline"], capture_output=True).returncode != 0:
        subprocess.run(install, check=True, timeout=600)
    return venv


def run_in(venv: Path, *command: str) -> subprocess.CompletedProcess:
    """A command of the runtime venv, in the checkout, with the test environment and no other packages."""
    env = os.environ | {"PYTHONPATH": str(ROOT), "VIRTUAL_ENV": str(venv)}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env['PATH']}"
    return subprocess.run(
        [str(venv / "bin" / command[0]), *command[1:]], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def app_modules() -> set[str]:
    """Every module under our apps' directories, tests excluded, by dotted name."""
    names = set()
    for app in APPS:
        for path in (ROOT / app).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if "tests" not in parts:
                names.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


@pytest.mark.slow
def test_the_runtime_set_imports_every_module_of_the_apps(runtime_venv):
    result = run_in(runtime_venv, "python", str(ROOT / "tests" / "runtime_probe.py"))
    assert result.returncode == 0, result.stderr[-3000:]
    probe = json.loads(result.stdout.splitlines()[-1])
    assert {canonicalize_name(name) for name in probe["distributions"]} == set(locked(RUNTIME_LOCK))
    missed = app_modules() - set(probe["modules"])
    assert not missed, f"not imported: {sorted(missed)}"


@pytest.mark.slow
def test_every_process_starts_from_the_runtime_set(runtime_venv):
    result = run_in(runtime_venv, "python", "manage.py", "check")
    assert result.returncode == 0 and "no issues" in result.stdout, result.stderr[-3000:]
    entry_points = {}  # the three rqworker lines differ only in their queues
    for name, command in procfile().items():
        if command[0] == "gunicorn":  # loads the WSGI application, then exits
            entry_points.setdefault((*command, "--check-config"), name)
        else:
            assert command[:2] == ["python", "manage.py"], name
            entry_points.setdefault((*command[:3], "--help"), name)
    for command, name in entry_points.items():
        result = run_in(runtime_venv, *command)
        assert result.returncode == 0, f"{name}: {result.stdout[-3000:]}{result.stderr[-3000:]}"
