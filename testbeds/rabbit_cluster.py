"""A RabbitMQ cluster on loopback, for tests and benchmarks that stop and kill brokers.

Each node has its own name, AMQP port, distribution port and data directory; the nodes share an Erlang
cookie and a private epmd, so the project's own broker (and any on 5672 or epmd's 4369) is never
touched. As root the nodes run as the `rabbitmq` user, as scripts/services.sh runs the shared broker.
"""

from __future__ import annotations

import atexit
import json
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any

# Debian's /usr/sbin wrappers `su` to rabbitmq, which resets HOME (where Erlang reads the cookie) and
# the working directory; the scripts they wrap take our environment as it is.
DEBIAN_SCRIPTS = Path("/usr/lib/rabbitmq/bin")
BOOT_TIMEOUT = 180.0  # three cold nodes on two busy cores take 15-30 s; a slow CI machine more
LOOPBACK_DIST = "-kernel inet_dist_use_interface {127,0,0,1}"


def _tool(name: str) -> str:
    script = DEBIAN_SCRIPTS / name
    return str(script) if script.exists() else shutil.which(name) or name


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


def _broker_apps(plugins_dir: Path) -> list[Path]:
    """The applications the broker runs, from their .app files: `rabbit` and what it depends on.

    The Debian plugins directory holds some 70 and each is on the node's code path; a node given only
    these ~20 boots 2-4 s sooner on two cores.
    """
    found = {path.name.rsplit("-", 1)[0]: path for path in plugins_dir.iterdir() if (path / "ebin").is_dir()}
    wanted: set[str] = set()
    todo = ["rabbit", "rabbitmq_prelaunch"]
    while todo:
        app = todo.pop()
        if app in wanted or app not in found:
            continue  # OTP's own applications live elsewhere
        wanted.add(app)
        for spec in (found[app] / "ebin").glob("*.app"):
            for listed in re.findall(r"applications,\s*\[([^\]]*)\]", spec.read_text()):
                todo += re.findall(r"\w+", listed)
    return [found[app] for app in sorted(wanted)]


class RabbitNode:
    """One node: its name, ports, directory and, while it runs, its rabbitmq-server process."""

    def __init__(self, name: str, letter: str) -> None:
        self.name = name
        self.letter = letter
        self.amqp_port = free_port()
        self.dist_port = free_port()
        self.home = Path()  # set by the cluster once it knows where its data lives
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def __repr__(self) -> str:
        return f"RabbitNode({self.name}, amqp={self.amqp_port})"


class RabbitCluster:
    """`size` RabbitMQ nodes (a, b, c, ...) clustered on 127.0.0.1, with their logs under `root`.

        with RabbitCluster(tmp_path) as cluster:
            connect to cluster.urls[1]; cluster.stop_node(cluster.leader("jobs")); cluster.start_node(0)

    A node stopped or killed keeps its data, and start_node brings it back into the cluster.
    """

    def __init__(self, root: Path, size: int = 3) -> None:
        token = secrets.token_hex(3)  # two clusters never share node names
        self.user = "rabbitmq" if os.geteuid() == 0 else None
        self.cookie = secrets.token_hex(16)
        # The nodes' standard output (their log) goes to files we open, always under root; their data
        # too, unless they run as rabbitmq and cannot reach root (pytest's tmp_path is private to root).
        self.logs = Path(root) / f"rabbit-cluster-{token}"
        self.base = self.logs
        self.epmd_port = free_port()
        self.epmd: subprocess.Popen[bytes] | None = None
        self.nodes = [RabbitNode(f"supworker-ha-{token}-{letter}@localhost", letter) for letter in "abcdefghij"[:size]]

    # --- the cluster ------------------------------------------------------------------------------

    def start(self) -> None:
        """Boot every node at once; they cluster while booting, then every feature flag is on."""
        atexit.register(self.stop)  # a test run that ends on an exception still stops its brokers
        try:
            self._prepare()
            self.epmd = subprocess.Popen(
                ["epmd", "-port", str(self.epmd_port), "-address", "127.0.0.1"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for node in self.nodes:
                self._launch(node)
            for node in self.nodes:
                self._await_listener(node)
            with ThreadPoolExecutor(1) as pool:  # each CLI call costs a second: ask both at once
                flags = pool.submit(self.rabbitmqctl, "list_feature_flags", "name", "state", "--formatter", "json")
                self._await_cluster(self.nodes[0])
            # At-least-once dead-lettering of quorum queues needs stream_queue, among others.
            if any(flag["state"] != "enabled" for flag in json.loads(flags.result())):
                self.rabbitmqctl("enable_feature_flag", "all")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop every node and the private epmd; safe at any point (a failed start too) and twice."""
        atexit.unregister(self.stop)
        running = [node for node in self.nodes if node.running]
        for node in running:
            assert node.process is not None
            node.process.terminate()  # SIGTERM: the VM stops cleanly, all nodes at once
        for node in running:
            self._reap(node)
        if self.epmd is not None:
            self.epmd.terminate()
            self.epmd.wait(timeout=10)
            self.epmd = None
        if self.base != self.logs:
            shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> RabbitCluster:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def urls(self) -> list[str]:
        """One AMQP URL per node, a first."""
        return [f"amqp://guest:guest@127.0.0.1:{node.amqp_port}/%2F" for node in self.nodes]

    def url_list(self) -> str:
        """The URLs comma-joined, as a setting that lists every broker of a cluster takes them."""
        return ",".join(self.urls)

    # --- one node ---------------------------------------------------------------------------------

    def node(self, which: int | str) -> RabbitNode:
        """A node by index (0 is a) or by name."""
        if isinstance(which, int):
            return self.nodes[which]
        return next(node for node in self.nodes if node.name == which)

    def stop_node(self, which: int | str) -> None:
        """A clean stop (`rabbitmqctl stop`); returns once the node's VM has exited."""
        node = self.node(which)
        self.rabbitmqctl("stop", node=node)
        self._reap(node)

    def kill_node(self, which: int | str) -> None:
        """SIGKILL the node's VM: no goodbye to its peers, as when its machine dies."""
        node = self.node(which)
        if node.process is not None:
            node.process.kill()
            self._reap(node)

    def start_node(self, which: int | str) -> None:
        """Boot a stopped node again; it rejoins the cluster from its own data."""
        node = self.node(which)
        self._launch(node)
        self._await_listener(node)
        self._await_cluster(node)

    # --- asking the cluster -----------------------------------------------------------------------

    def rabbitmqctl(self, *args: str, node: int | str | RabbitNode = 0, tool: str = "rabbitmqctl") -> str:
        """Run a CLI tool (rabbitmqctl, rabbitmq-queues, ...) against one node; its standard output."""
        target = node if isinstance(node, RabbitNode) else self.node(node)
        # The CLI is an Erlang node of its own: it finds ours through our epmd and stays on loopback.
        env = {**self._env(), "RABBITMQ_CTL_ERL_ARGS": LOOPBACK_DIST}
        done = subprocess.run(
            [_tool(tool), "-q", "-n", target.name, *args],
            env=env,
            cwd=self.base,
            user=self.user,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{tool} {' '.join(args)} on {target.name}: {done.stderr or done.stdout}")
        return done.stdout

    def leader(self, queue: str, vhost: str = "/") -> str:
        """The name of the node that leads quorum queue `queue`."""
        return str(self._queue(queue, vhost, "leader"))

    def queue_messages(self, queue: str, vhost: str = "/") -> int:
        """Messages in `queue`, ready and unacknowledged (for a quorum queue, as of up to a second ago)."""
        return int(self._queue(queue, vhost, "messages"))

    def _queue(self, queue: str, vhost: str, column: str) -> Any:
        asked = next(node for node in self.nodes if node.running)
        reply = self.rabbitmqctl("list_queues", "-p", vhost, "name", column, "--formatter", "json", node=asked)
        for row in json.loads(reply):
            if row["name"] == queue:
                return row[column]
        raise LookupError(f"no queue {queue!r} in vhost {vhost!r}")

    # --- inside -----------------------------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        return {
            **os.environ,
            "HOME": str(self.base),  # where Erlang reads .erlang.cookie
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }

    def _prepare(self) -> None:
        """Directories, cookie, configurations and the trimmed plugins directory, owned by the node user."""
        self.logs.mkdir(parents=True)
        if self.user is not None and not self._user_reaches(self.logs):
            self.base = Path(tempfile.mkdtemp(prefix="supworker-rabbit-cluster-"))
        cookie = self.base / ".erlang.cookie"
        cookie.write_text(self.cookie)
        cookie.chmod(0o400)  # Erlang refuses a cookie others may read
        plugins = self.base / "plugins"
        plugins.mkdir()
        for app in _broker_apps(Path(_tool("rabbitmq-server")).resolve().parent.parent / "plugins"):
            (plugins / app.name).symlink_to(app)
        # Classic config peer discovery: booted together, the nodes cluster by themselves (no
        # stop_app/join_cluster/start_app round, which took 5-10 s more). The first to take the
        # discovery lock finds only blank peers and starts the cluster; with RabbitMQ's default of 10
        # retries 500 ms apart it would first wait 5 s for them to have a database, for nothing.
        # The others take the lock after it and join it.
        discovery = "".join(
            f"cluster_formation.classic_config.nodes.{n} = {node.name}\n" for n, node in enumerate(self.nodes, 1)
        )
        for node in self.nodes:
            node.home = self.base / node.letter
            node.home.mkdir()
            (node.home / "enabled_plugins").write_text("[].\n")
            (node.home / "rabbitmq.conf").write_text(
                f"listeners.tcp.1 = 127.0.0.1:{node.amqp_port}\n"
                "loopback_users.guest = true\n"
                "disk_free_limit.absolute = 50MB\n"
                "log.file = false\nlog.console = true\nlog.console.level = info\nlog.console.use_colors = off\n"
                "cluster_formation.peer_discovery_backend = classic_config\n"
                "cluster_formation.discovery_retry_limit = 1\n"
                "cluster_formation.discovery_retry_interval = 100\n" + discovery
            )
            # A quorum queue's leader publishes its message count (what list_queues shows) on each
            # tick: every 5 s by default, every second here, so queue_messages is at most 1 s old.
            (node.home / "advanced.config").write_text("[{rabbit, [{quorum_tick_interval, 1000}]}].\n")
        if self.user is not None:
            user = pwd.getpwnam(self.user)
            for path in [self.base, *self.base.rglob("*")]:
                os.chown(path, user.pw_uid, user.pw_gid, follow_symlinks=False)

    def _user_reaches(self, path: Path) -> bool:
        return subprocess.run(["test", "-x", str(path)], user=self.user, check=False).returncode == 0

    def _launch(self, node: RabbitNode) -> None:
        env = {
            **self._env(),
            "RABBITMQ_NODENAME": node.name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(node.amqp_port),
            "RABBITMQ_DIST_PORT": str(node.dist_port),
            # rabbitmq-server execs the VM only when "input is allowed" (else it stays as a shell
            # around it): our child is then the VM itself, whose exit is final. -noinput still holds.
            "RABBITMQ_ALLOW_INPUT": "1",
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": f"{LOOPBACK_DIST} -noinput",
            "RABBITMQ_MNESIA_BASE": str(node.home / "mnesia"),
            "RABBITMQ_LOG_BASE": str(node.home),
            "RABBITMQ_PID_FILE": str(node.home / "rabbitmq.pid"),
            "RABBITMQ_CONFIG_FILE": str(node.home / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(node.home / "enabled_plugins"),
            "RABBITMQ_PLUGINS_DIR": str(self.base / "plugins"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(node.home / "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": str(node.home / "rabbitmq-env.conf"),  # none: /etc/rabbitmq's is not ours
        }
        with open(self.logs / f"{node.letter}.log", "ab") as log:
            # A session of its own: a Ctrl-C in the test run reaches the tests, not the brokers.
            node.process = subprocess.Popen(
                [_tool("rabbitmq-server")],
                env=env,
                cwd=node.home,
                user=self.user,
                group=self.user,
                extra_groups=[] if self.user else None,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _await_listener(self, node: RabbitNode) -> None:
        """The AMQP listener opens last in a node's boot, after the node has joined its cluster."""
        deadline = time.monotonic() + BOOT_TIMEOUT
        while not _listening(node.amqp_port):
            if not node.running:
                raise RuntimeError(f"{node.name} exited while booting; see {self.logs / node.letter}.log")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{node.name} did not listen on {node.amqp_port}; see {self.logs / node.letter}.log")
            time.sleep(0.1)

    def _await_cluster(self, asked: RabbitNode) -> None:
        """Until `asked` counts every node we run among the cluster's running nodes."""
        expected = {node.name for node in self.nodes if node.running}
        deadline = time.monotonic() + BOOT_TIMEOUT
        while True:
            try:
                status = json.loads(self.rabbitmqctl("cluster_status", "--formatter", "json", node=asked))
                running = set(status["running_nodes"])
            except RuntimeError:  # its listener opens a moment before the node counts as booted
                running = set()
            if expected <= running:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{asked.name} sees {sorted(running)} running, not {sorted(expected)}")
            time.sleep(0.5)

    def _reap(self, node: RabbitNode) -> None:
        """Wait for the node's VM to exit; SIGKILL it if it will not."""
        if node.process is None:
            return
        try:
            node.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            node.process.kill()
            node.process.wait(timeout=10)
        node.process = None
