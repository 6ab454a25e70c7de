"""The deployment files agree with the code: processes, queues, probes, limits, non-root.

No container engine runs on this machine, so the files are checked as documents: every
process of the Procfile exists everywhere with the same command, probes point at endpoints
that exist, autoscaling watches the queues the workers drain.
"""

from __future__ import annotations

import re
import shlex

import yaml
from django.urls import resolve

from supworker.policy import POLICIES
from supworker.queues import WORKER_QUEUES, worker_queues
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
    assert requirement_files == ["requirements/runtime.txt"]
    development_only = set(declared("dev")) - set(declared())
    assert development_only, "pyproject.toml's dev group names the development tools"
    shipped = development_only & set(locked(RUNTIME_LOCK))
    assert not shipped, f"development tools in the runtime lock: {sorted(shipped)}"


def test_compose_runs_every_procfile_process_with_the_same_command_after_healthy_servers():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    for server in ("postgres", "redis", "rabbitmq"):
        assert services[server]["healthcheck"]["test"], server
    for name, command in procfile().items():
        assert name in services, name
        if name != "web":
            assert services[name]["command"] == command, name
            assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert services["web"]["depends_on"] == {"migrate": {"condition": "service_completed_successfully"}}
    assert services["media"]["stop_grace_period"] == "330s", "a video job (300 s) finishes before SIGKILL"


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
    assert media_grace > POLICIES["media.video"].timeout
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
        assert lists == {f"rq:queue:{queue}" for queue in WORKER_QUEUES[kind]}, kind


def test_each_worker_kind_listens_to_its_queues_highest_priority_first():
    for kind, queues in WORKER_QUEUES.items():
        command = procfile()[kind]
        assert command[:3] == ["python", "manage.py", "rqworker"], kind
        names = [arg for arg in command[3:] if not arg.startswith("-")]
        assert worker_queues(names) == queues, kind
        assert "--without-scheduler" not in command, f"{kind}: retries wait for a worker's scheduler"
