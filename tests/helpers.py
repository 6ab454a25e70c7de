"""Helpers shared by tests that drive supworker as separate processes."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

from testbeds.polling import wait_for as wait_for  # re-exported: tests import it from here
from tests.testenv import ROOT

CONTROL_SEQUENCE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def run_manage(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run `manage.py` in a fresh interpreter, as an operator would, with extra environment."""
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args],
        cwd=ROOT,
        env=os.environ | (env or {}),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_manage_on_a_terminal(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> tuple[subprocess.CompletedProcess, str]:
    """Run `manage.py` with its stderr on a pseudo-terminal (100 columns), as an operator's shell
    gives it, and stdout on a pipe. Returns the process and the text the terminal was sent,
    without its control sequences (colours, cursor moves)."""
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))
    # Variables that would make rich decide for itself whether this is a terminal.
    plain_env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE", "NO_COLOR")}
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), *args],
        cwd=ROOT,
        env=plain_env | {"TERM": "xterm-256color"} | (env or {}),
        stdout=subprocess.PIPE,
        stderr=terminal,
        text=True,
    )
    os.close(terminal)
    sent, deadline = bytearray(), time.monotonic() + timeout
    while True:
        if not select.select([controller], [], [], max(0.0, deadline - time.monotonic()))[0]:
            process.kill()
            raise subprocess.TimeoutExpired(process.args, timeout, output=bytes(sent))
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # EIO: the child has closed its end
            break
        if not chunk:
            break
        sent += chunk
    os.close(controller)
    stdout = process.stdout.read()
    process.stdout.close()
    returncode = process.wait(timeout)
    shown = CONTROL_SEQUENCE.sub("", sent.decode(errors="replace"))
    return subprocess.CompletedProcess(process.args, returncode, stdout, ""), shown


def start_manage(*args: str, log_path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start a long-running `manage.py` command; its output goes to `log_path`."""
    log = open(log_path, "w")  # noqa: SIM115 - closed with the process by the caller's stop()
    return subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), *args],
        cwd=ROOT,
        env=os.environ | (env or {}),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop(process: subprocess.Popen, timeout: float = 20) -> int:
    """SIGTERM the process and wait for it, killing it if it does not stop in time."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def rq_items(connection, *queue_names: str) -> list[dict]:
    """Every envelope waiting in the named RQ queues, in queue order (a job carries a batch; a
    cron entry's job, which names its entry, carries none)."""
    from rq import Queue

    from supworker.enqueue import RUN_BATCH

    items = []
    for name in queue_names:
        for job in Queue(name, connection=connection).get_jobs():
            if job.func_name == RUN_BATCH:
                items.extend(job.args[0])
    return items


def drain_queue(redis_conn, queue_name: str, rounds: int = 1, wait_scheduled: float = 3) -> None:
    """Run what is queued with an in-process SimpleWorker; between rounds, move due retries back
    to the queue as RQ's scheduler does (holding its lock, as a worker's scheduler would)."""
    from rq import Queue, SimpleWorker
    from rq.registry import ScheduledJobRegistry
    from rq.scheduler import RQScheduler

    queue = Queue(queue_name, connection=redis_conn)
    scheduler = RQScheduler([queue], connection=redis_conn)
    scheduler.acquire_locks()
    try:
        for _ in range(rounds):
            SimpleWorker([queue], connection=redis_conn).work(burst=True)
            deadline = time.monotonic() + wait_scheduled
            while ScheduledJobRegistry(queue=queue).count and time.monotonic() < deadline:
                time.sleep(0.1)
                scheduler.enqueue_scheduled_jobs()
    finally:
        scheduler.release_locks()


class ManagedProcesses:
    """Long-running `manage.py` commands of one test, each with its own log file, all started
    with `env` over the test's environment; the test's fixture calls stop_all()."""

    def __init__(self, log_dir: Path, env: dict[str, str]):
        self.log_dir, self.env = log_dir, env
        self.started: list[tuple[subprocess.Popen, Path]] = []

    def start(self, *args: str, **env: str) -> subprocess.Popen:
        log_path = self.log_dir / f"{args[0]}-{len(self.started)}.log"
        self.started.append((start_manage(*args, log_path=log_path, env=self.env | env), log_path))
        return self.started[-1][0]

    def log(self, index: int = -1) -> str:
        return self.started[index][1].read_text()

    def stop_all(self) -> None:
        for process, _ in self.started:
            stop(process)


def empty_stores() -> None:
    """Empty the media store and TEMP_DIR of the tests (they are the tests' own directories)."""
    import shutil

    from django.conf import settings

    for directory in (Path(settings.MEDIA_ROOT), settings.CONFIG.temp_dir):
        assert "test-output" in str(directory)
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
