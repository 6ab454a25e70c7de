"""The Node services' RabbitMQ side in the cut-over tests: tests/node/node_consumer.js, on amqplib.

The pinned amqplib (tests/node/package.json) is installed into tests/node/node_modules
(git-ignored) on first use; with it there, nothing is run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

from tests.helpers import ROOT, wait_for

NODE_DIR = ROOT / "tests" / "node"


def ensure_amqplib() -> None:
    wanted = json.loads((NODE_DIR / "package.json").read_text())["dependencies"]["amqplib"]
    installed = NODE_DIR / "node_modules" / "amqplib" / "package.json"
    if installed.is_file() and json.loads(installed.read_text())["version"] == wanted:
        return
    result = subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"npm ci in {NODE_DIR} failed:\n{result.stdout}\n{result.stderr}"


class NodeConsumer:
    """One `node node_consumer.js` process: see that script for what it declares and does."""

    def __init__(self, queues: list[str], workdir: Path, exchange: str, prefetch: int = 10, arguments: dict = {}):  # noqa: B006
        ensure_amqplib()
        self.records = workdir / "node-handled.jsonl"
        self.log = workdir / "node.log"
        args = ["--url", os.environ["RABBITMQ_URL"], "--out", str(self.records), "--prefetch", str(prefetch),
                "--exchange", exchange, "--arguments", json.dumps(arguments), *queues]  # fmt: skip
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(
                ["node", str(NODE_DIR / "node_consumer.js"), *args], stdout=log, stderr=subprocess.STDOUT
            )
        self._wait_for_line("consuming", "the Node consumer to start")

    def handled(self) -> list[dict]:
        """{queue, routingKey, body} of every message it acked, in order."""
        if not self.records.exists():
            return []
        return [json.loads(line) for line in self.records.read_text().splitlines()]

    def freeze(self) -> None:
        """Stop acking and wait until every queue's prefetch window is full of unacked deliveries."""
        self.process.send_signal(signal.SIGUSR2)
        self._wait_for_line("window full", "the Node consumer's prefetch window to fill")

    def stop(self) -> dict:
        """Close its channel and connection; {"acked": n, "abandoned": deliveries left unacked}."""
        self.process.send_signal(signal.SIGTERM)
        assert self.process.wait(30) == 0, self.log.read_text()
        return json.loads(self.log.read_text().splitlines()[-1])

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def _wait_for_line(self, line: str, what: str) -> None:
        def printed() -> bool:
            assert self.process.poll() is None, f"the Node consumer exited:\n{self.log.read_text()}"
            return any(seen.startswith(line) for seen in self.log.read_text().splitlines())

        wait_for(printed, 30, what, interval=0.05)
