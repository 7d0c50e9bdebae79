"""A TCP link that can be cut: a proxy between a worker and its Redis that blackholes traffic.

``LinkCut(upstream_host, upstream_port)`` listens on a free local port; the
worker is pointed at ``url_for(db)`` instead of at Redis. While ``cut()`` is
in force nothing crosses in either direction: bytes already sent sit in the
kernel's buffers, as packets do on a dropped route, and new connections are
accepted but not carried on. No connection is closed or reset, so the worker
sees exactly what a network partition shows it: silence. ``heal()`` lets the
held bytes through, as TCP's retransmissions would once the route is back.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from types import TracebackType

#: Bytes moved per read; Redis replies for a 5,000-reading batch are ~100 kB.
_CHUNK_BYTES = 65_536
#: How often an idle pump looks at the cut flag and at shutdown, in seconds.
_POLL_S = 0.05


class LinkCut:
    """A TCP proxy to ``upstream_host:upstream_port`` whose link can be cut and healed."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._open = threading.Event()
        self._open.set()
        self._closing = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        #: Connections accepted over the proxy's life (the worker's and its pool's).
        self.connections = 0
        self._spawn(self._accept_loop, "link-accept")

    @property
    def is_cut(self) -> bool:
        return not self._open.is_set()

    def url_for(self, db: int) -> str:
        """A redis:// URL that reaches the upstream server's ``db`` through this link."""
        return f"redis://127.0.0.1:{self.port}/{db}"

    def cut(self) -> None:
        """Stop carrying bytes both ways and hold new connections, closing nothing."""
        self._open.clear()

    def heal(self) -> None:
        """Carry bytes again, held ones first."""
        self._open.set()

    def close(self) -> None:
        self._closing.set()
        self._open.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            for s in self._sockets:
                with contextlib.suppress(OSError):
                    s.close()
        for t in self._threads:
            t.join(timeout=2.0)

    def __enter__(self) -> LinkCut:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:  # fmt: skip
        self.close()

    def _spawn(self, target: object, name: str, *args: object) -> None:
        t = threading.Thread(target=target, args=args, name=name, daemon=True)  # type: ignore[arg-type]
        self._threads.append(t)
        t.start()

    def _track(self, s: socket.socket) -> None:
        with self._lock:
            self._sockets.append(s)

    def _accept_loop(self) -> None:
        self._listener.settimeout(_POLL_S)
        while not self._closing.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            self._track(client)
            self._spawn(self._carry, "link-carry", client)

    def _carry(self, client: socket.socket) -> None:
        # A connection opened during a cut waits here, as a SYN would go unanswered.
        while not self._open.wait(_POLL_S):
            if self._closing.is_set():
                return
        try:
            upstream = socket.create_connection(self.upstream)
        except OSError:
            client.close()
            return
        self._track(upstream)
        peer = {client: upstream, upstream: client}
        try:
            while not self._closing.is_set():
                if not self._open.wait(_POLL_S):
                    continue
                readable, _, _ = select.select(list(peer), [], [], _POLL_S)
                for src in readable:
                    data = src.recv(_CHUNK_BYTES)
                    if not data:
                        return
                    peer[src].sendall(data)
        except OSError:
            return
        finally:
            for s in peer:
                with contextlib.suppress(OSError):
                    s.close()
