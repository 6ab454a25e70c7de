"""A TCP proxy on loopback that a test can cut: every open connection is reset and new ones are
refused, as when a database server crashes or its network goes away, until it is restored.

    proxy = FaultProxy("127.0.0.1", 5440)   # listens on 127.0.0.1:<proxy.port>
    proxy.cut()       # RST on every connection through it; connecting is refused
    proxy.restore()   # accepting again, on the same port
    proxy.close()

Threads, not asyncio: a test process already runs Django and pytest in its main thread.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading


class FaultProxy:
    def __init__(self, target_host: str, target_port: int):
        self.target = (target_host, target_port)
        self.lock = threading.Lock()
        self.connections: set[socket.socket] = set()
        self.accepted = 0  # connections taken since the start, for tests that want to see traffic
        self._listener: socket.socket | None = None
        self.port = self._listen(0)

    def _listen(self, port: int) -> int:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(128)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return listener.getsockname()[1]

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # the listener was closed by cut() or close()
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                _reset(client)
                continue
            server.settimeout(None)
            with self.lock:
                self.connections.update((client, server))
                self.accepted += 1
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        # One side hung up (or was reset): so does the connection as a whole. PostgreSQL's
        # protocol has no use for half-closed connections.
        with self.lock:
            self.connections.difference_update((source, sink))
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()

    @property
    def open_connections(self) -> int:
        with self.lock:
            return len(self.connections) // 2

    def cut(self) -> None:
        """Refuse new connections, then reset every open one."""
        if self._listener is not None:
            # shutdown() first: close() alone leaves a socket that a thread is blocked accepting
            # on still listening.
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        with self.lock:
            connections, self.connections = self.connections, set()
        for connection in connections:
            _reset(connection)

    def restore(self) -> None:
        if self._listener is None:
            self._listen(self.port)

    def close(self) -> None:
        self.cut()


def _reset(sock: socket.socket) -> None:
    """Close with an RST rather than a FIN: the peer sees 'connection reset', as after a crash."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RD)  # wakes the thread blocked reading it, sends nothing
    with contextlib.suppress(OSError):
        sock.close()
