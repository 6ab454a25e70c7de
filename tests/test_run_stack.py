"""`make run`: every process comes up, the admin answers, and Ctrl-C stops everything cleanly."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import urllib.request

import pytest

from tests.helpers import wait_for
from tests.testenv import ROOT, WEB_PORT

pytestmark = pytest.mark.slow

PROCESSES = (
    ["web.1", "cleanup.1", "scheduler.1", "consumer.1"]
    + [f"media.{i}" for i in (1, 2)]
    + [f"notifications.{i}" for i in range(1, 6)]
)


def admin_login_answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/admin/login/", timeout=2) as response:
            return response.status == 200 and b"csrfmiddlewaretoken" in response.read()
    except OSError:
        return False


def test_make_run_starts_the_whole_service_and_ctrl_c_stops_it(tmp_path, redis_conn):
    port = WEB_PORT
    log_path = tmp_path / "make-run.log"
    with open(log_path, "w") as log:
        make = subprocess.Popen(
            ["make", "run"],
            cwd=ROOT,
            env=os.environ | {"WEB_PORT": str(port)},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for(lambda: admin_login_answers(port), 120, "the admin on the web process")
        wait_for(lambda: redis_conn.scard("rq:workers") == 2 + 5 + 1, 60, "8 RQ workers to register")
        output = log_path.read_text()
        for name in PROCESSES:
            assert f"{name} started" in output, name
        assert not re.search(r"\| \w+\.\d+ stopped", output), output[-3000:]
    finally:
        os.killpg(make.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
        make.wait(60)

    output = log_path.read_text()
    for name in PROCESSES:
        assert f"{name} stopped" in output, name
    assert "SIGKILL" not in output, "every process should stop within honcho's grace period"
    assert "Traceback" not in output, output[-3000:]
    assert redis_conn.scard("rq:workers") == 0, "workers should deregister on a clean shutdown"
