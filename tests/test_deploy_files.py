"""The deployment files agree with the code: processes, queues, probes, limits, non-root.

No container engine runs on this machine, so the files are checked as documents: every
process of the Procfile exists everywhere with the same command, probes point at endpoints
that exist, autoscaling watches the queues the workers drain, docker-compose.yml is valid
Compose (against the specification's JSON schema, tests/fixtures/compose-spec.json) and its
first start needs no hand-made file.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import jsonschema
import yaml
from django.urls import resolve

from supworker import jobtypes
from supworker.queues import worker_queues
from tests.locks import RUNTIME_LOCK, declared, locked
from tests.testenv import ROOT

# pip options of the Dockerfile that take a value (the next word)
PIP_VALUE_OPTIONS = {"-r", "--requirement", "--wheel-dir", "--find-links"}


def procfile() -> dict[str, list[str]]:
    processes = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line and not line.startswith("#"):
            name, command = line.split(":", 1)
            processes[name] = shlex.split(command)
    return processes


def k8s_documents() -> list[dict]:
    return [
        d for path in sorted((ROOT / "deploy/k8s").glob("*.yaml")) for d in yaml.safe_load_all(path.read_text()) if d
    ]


def deployments() -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in k8s_documents() if d["kind"] == "Deployment"}


def test_the_image_is_multi_stage_non_root_and_has_ffmpeg():
    dockerfile = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM .+$", dockerfile, re.MULTILINE)
    assert len(stages) >= 2, "build tools stay in the build stage"
    final = dockerfile[dockerfile.rindex("FROM ") :]
    user = re.search(r"^USER (\S+)$", final, re.MULTILINE)
    assert user and user.group(1) not in ("root", "0")
    assert "ffmpeg" in final and "EXPOSE 8000" in final and "gunicorn" in final


def pip_commands(dockerfile: str) -> list[list[str]]:
    """The arguments of every `pip install` and `pip wheel` in the Dockerfile's RUN lines."""
    commands = []
    for line in dockerfile.replace("\\\n", " ").splitlines():
        if line.startswith("RUN "):
            for part in line.removeprefix("RUN ").split("&&"):
                words = shlex.split(part)
                if words[:1] == ["pip"] and words[1:2] in (["install"], ["wheel"]):
                    commands.append(words[2:])
    return commands


def test_the_image_installs_the_runtime_lock_only_and_no_development_tool():
    dockerfile = (ROOT / "Dockerfile").read_text()
    copied_from = {destination: source for source, destination in re.findall(r"^COPY (\S+) (\S+)$", dockerfile, re.M)}
    requirement_files = []
    for args in pip_commands(dockerfile):
        words = iter(args)
        for word in words:
            if word in PIP_VALUE_OPTIONS:
                value = next(words)
                if word in ("-r", "--requirement"):
                    requirement_files.append(copied_from.get(value))
                    assert "--require-hashes" in args, "the lock's hashes are checked"
            else:
                assert word.startswith(("-", "/wheels/")), f"the image installs {word!r} outside the runtime lock"
    # pip itself first (requirements/pip.txt holds pip alone), then the runtime lock.
    assert requirement_files == ["requirements/pip.txt", "requirements/runtime.txt"]
    assert set(locked(ROOT / "requirements" / "pip.txt")) == {"pip"}
    development_only = set(declared("dev")) - set(declared())
    assert development_only, "pyproject.toml's dev group names the development tools"
    shipped = development_only & set(locked(RUNTIME_LOCK))
    assert not shipped, f"development tools in the runtime lock: {sorted(shipped)}"


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def compose_environment(service: str, shell: dict[str, str]) -> dict[str, str]:
    """A service's `environment` as Compose interpolates it from `shell` (here: no .env at all)."""

    def interpolate(match: re.Match) -> str:
        name, default = match.group(1), match.group(3) or ""
        return shell.get(name) or default if match.group(2) == ":-" else shell.get(name, default)

    return {
        name: re.sub(r"\$\{(\w+)(:?-)?([^}]*)\}", interpolate, str(value))
        for name, value in compose()["services"][service]["environment"].items()
    }


def dockerfile_env() -> dict[str, str]:
    """The image's ENV line: what every container starts with."""
    line = re.search(r"^ENV (.+)$", (ROOT / "Dockerfile").read_text(), re.MULTILINE).group(1)
    return dict(pair.split("=", 1) for pair in shlex.split(line))


def test_compose_runs_every_procfile_process_with_the_same_command_after_migrate():
    services = compose()["services"]
    for server in ("postgres", "redis", "rabbitmq"):
        assert services[server]["healthcheck"]["test"], server
        assert services["migrate"]["depends_on"][server] == {"condition": "service_healthy"}, server
    for name, command in procfile().items():
        assert name in services, name
        if name != "web":
            assert services[name]["command"] == command, name
        assert services[name]["depends_on"] == {"migrate": {"condition": "service_completed_successfully"}}, name
    assert services["media"]["stop_grace_period"] == "330s", "a video job (300 s) finishes before SIGKILL"


def test_compose_is_valid_against_the_compose_specification():
    schema = json.loads((ROOT / "tests" / "fixtures" / "compose-spec.json").read_text())
    validator = jsonschema.Draft7Validator(schema)
    assert [error.message for error in validator.iter_errors(compose())] == []
    misspelt = compose()
    misspelt["services"]["web"]["restart_policy"] = misspelt["services"]["web"].pop("restart")
    assert any("restart_policy" in error.message for error in validator.iter_errors(misspelt)), "the schema bites"


def test_compose_first_start_needs_no_hand_made_file_and_creates_the_admin():
    text = (ROOT / "docker-compose.yml").read_text()
    without_default = [m.group(0) for m in re.finditer(r"\$\{[^}]*\}", text) if ":-" not in m.group(0)]
    assert without_default == [], "every variable the file interpolates has a default"
    services = compose()["services"]
    for name in procfile():
        assert services[name]["env_file"] == [{"path": ".env", "required": False}], name
    (migrate,) = services["migrate"]["command"][2:]
    steps = [step.strip() for step in migrate.split("&&")]
    assert steps[0] == "python scripts/secret_key_file.py"
    assert steps[1] == "python manage.py migrate --no-input"
    assert steps[2].startswith("python manage.py ensure_admin")


def test_a_process_starts_in_production_with_the_compose_environment_and_no_env_file(tmp_path):
    """What `docker compose up` does first, less the container: the key file, then a command."""
    environment = dockerfile_env() | compose_environment("migrate", shell={})
    assert environment["SUPWORKER_ENV"] == "production" and "DJANGO_SECRET_KEY" not in environment
    key_file = Path(environment["DJANGO_SECRET_KEY_FILE"])
    assert key_file.parent == Path("/app/var/secrets"), "the path the image makes and the volume holds"
    local = {"DJANGO_SECRET_KEY_FILE": str(tmp_path / "secrets" / key_file.name), "LOG_DIR": str(tmp_path / "logs")}
    local |= {name: str(tmp_path / name.lower()) for name in ("MEDIA_ROOT", "TEMP_DIR")}
    inherited = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SECRET_KEY", "SECRET_KEY")}
    env = inherited | environment | local

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)

    first = run("scripts/secret_key_file.py")
    assert first.returncode == 0, first.stderr
    key = Path(local["DJANGO_SECRET_KEY_FILE"]).read_text()
    assert len(key.strip()) >= 50 and Path(local["DJANGO_SECRET_KEY_FILE"]).stat().st_mode & 0o077 == 0
    assert key.strip() not in first.stdout + first.stderr, "the key is never printed"
    check = run("manage.py", "check")
    assert check.returncode == 0, check.stdout + check.stderr
    assert run("scripts/secret_key_file.py").returncode == 0
    assert Path(local["DJANGO_SECRET_KEY_FILE"]).read_text() == key, "a restart keeps the key"


def test_kubernetes_runs_every_process_with_the_procfile_command_limits_and_non_root():
    found = deployments()
    for name, command in procfile().items():
        deployment = found[f"supworker-{name}"]
        spec = deployment["spec"]["template"]["spec"]
        (container,) = spec["containers"]
        if name != "web":
            assert container["command"] == command, name
        assert container["resources"]["limits"]["memory"] and container["resources"]["requests"]["cpu"], name
        assert spec["securityContext"]["runAsNonRoot"] is True, name
    media_grace = found["supworker-media"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert media_grace > jobtypes.job_type("media.video").timeout
    assert found["supworker-scheduler"]["spec"]["replicas"] == 1


def test_web_probes_point_at_the_health_endpoints():
    (web,) = deployments()["supworker-web"]["spec"]["template"]["spec"]["containers"]
    assert web["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert web["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    for path in ("/health/live", "/health/ready"):
        assert resolve(path).url_name in ("health-live", "health-ready")


def test_autoscaling_watches_the_lists_each_worker_drains():
    found = deployments()
    scaled = [d for d in k8s_documents() if d["kind"] == "ScaledObject"]
    assert {s["spec"]["scaleTargetRef"]["name"] for s in scaled} == {"supworker-media", "supworker-notifications"}
    for scaled_object in scaled:
        target = scaled_object["spec"]["scaleTargetRef"]["name"]
        assert target in found
        kind = target.removeprefix("supworker-")
        lists = {t["metadata"]["listName"] for t in scaled_object["spec"]["triggers"]}
        assert lists == {f"rq:queue:{queue}" for queue in worker_queues([kind])}, kind


def test_each_worker_kind_listens_to_its_queues_highest_priority_first():
    for kind, worker_kind in jobtypes.worker_kinds().items():
        queues = [spec.name for spec in worker_kind.queues]
        command = procfile()[kind]
        assert command[:3] == ["python", "manage.py", "rqworker"], kind
        names = [arg for arg in command[3:] if not arg.startswith("-")]
        assert worker_queues(names) == queues, kind
        assert "--without-scheduler" not in command, f"{kind}: retries wait for a worker's scheduler"
