"""A private Redis Sentinel set: a primary, its replicas and three sentinels on free ports, each
server in its own directory under `root`, never the shared Redis. Tests and benchmarks fail it
over (SENTINEL FAILOVER, kill -9 of the primary) and make a replica lag (SIGSTOP) to see what
supworker's processes, configured by REDIS_SENTINELS, make of it."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
from pathlib import Path

from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.sentinel import Sentinel

from testbeds.polling import wait_for

MASTER = "mymaster"  # REDIS_SENTINEL_MASTER's default


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisSet:
    def __init__(self, root: Path, replicas: int = 2):
        self.root = root
        self.nodes = [free_port() for _ in range(1 + replicas)]  # the first starts as the primary
        self.sentinels = [free_port() for _ in range(3)]

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        primary = self.nodes[0]
        self._server(primary, [])
        for port in self.nodes[1:]:
            self._server(port, [f"replicaof 127.0.0.1 {primary}"])
        for port in self.sentinels:
            self._server(
                port,
                [f"sentinel monitor {MASTER} 127.0.0.1 {primary} 2", f"sentinel down-after-milliseconds {MASTER} 1000",
                 f"sentinel failover-timeout {MASTER} 2000"],
                sentinel=True,
            )  # fmt: skip
        wait_for(lambda: self.replicas_ready(len(self.nodes) - 1), 30, "the sentinels to see the replicas in sync")

    def _server(self, port: int, lines: list[str], sentinel: bool = False) -> None:
        data = self.root / str(port)
        data.mkdir()
        conf = data / "redis.conf"
        common = [f"port {port}", "bind 127.0.0.1", f"dir {data}", "daemonize yes", f"pidfile {data}/pid",
                  f"logfile {data}/log"]  # fmt: skip
        storage = [] if sentinel else ["save ''", "appendonly yes", "repl-diskless-sync-delay 0"]
        conf.write_text("\n".join(common + storage + lines) + "\n")
        subprocess.run(["redis-server", str(conf), *(["--sentinel"] if sentinel else [])], check=True)
        self._wait_listening(port)

    @staticmethod
    def _wait_listening(port: int) -> None:
        """A daemonized server returns before it listens."""

        def answers() -> bool:
            try:
                return bool(Redis(port=port, socket_timeout=1).ping())
            except RedisConnectionError:
                return False

        wait_for(answers, 10, f"the Redis server on port {port} to answer")

    @property
    def env(self) -> dict[str, str]:
        return {"REDIS_SENTINELS": ",".join(f"127.0.0.1:{port}" for port in self.sentinels)}

    def primary_port(self) -> int:
        return Sentinel([("127.0.0.1", p) for p in self.sentinels]).discover_master(MASTER)[1]

    def primary(self) -> Redis:
        return Redis(port=self.primary_port())

    def sentinel(self) -> Redis:
        return Redis(port=self.sentinels[0])

    def replicas_ready(self, count: int) -> bool:
        replicas = self.sentinel().sentinel_slaves(MASTER)
        ready = [r for r in replicas if not r["is_sdown"] and r["master-link-status"] == "ok"]
        return len(ready) >= count

    def pid(self, port: int) -> int:
        return int((self.root / str(port) / "pid").read_text())

    def kill_primary(self) -> int:
        port = self.primary_port()
        os.kill(self.pid(port), signal.SIGKILL)
        # Its pid file stays behind: stop() must not signal whatever process gets the number next.
        (self.root / str(port) / "pid").unlink()
        return port

    def pause(self, port: int) -> None:
        """Freeze a server (SIGSTOP): it reads nothing and answers nothing until resume()."""
        os.kill(self.pid(port), signal.SIGSTOP)

    def resume(self, port: int) -> None:
        os.kill(self.pid(port), signal.SIGCONT)

    def restart_as_replica(self, port: int) -> None:
        """Bring a killed node back, as an operator would: a replica of the current primary, whose
        data it takes over (its own, from before it died, is dropped)."""
        conf = self.root / str(port) / "redis.conf"
        subprocess.run(["redis-server", str(conf), "--replicaof", "127.0.0.1", str(self.primary_port())], check=True)
        self._wait_listening(port)

    def stop(self) -> None:
        for port in self.nodes + self.sentinels:
            pid_file = self.root / str(port) / "pid"
            if pid_file.exists():
                with contextlib.suppress(ProcessLookupError):  # a server killed already
                    os.kill(int(pid_file.read_text()), signal.SIGKILL)
