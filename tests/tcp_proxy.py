"""A TCP proxy to a local test server that can go down at a chosen moment and come back.

``down()`` stops forwarding: every live connection is reset and new ones are refused
with a RST, which is what a client sees from a server that has stopped. ``up()``
forwards again. ``down_on(marker, nth)`` goes down by itself as soon as the ``nth``
request whose bytes contain ``marker`` starts arriving (e.g. the second
``uploadBlob``), so the fault lands in the middle of an operation; or runs an action
there instead (e.g. freezing the server with SIGSTOP).
"""

from __future__ import annotations

import socket
import threading

_RST = b"\x01\x00\x00\x00\x00\x00\x00\x00"  # SO_LINGER on, 0 s: close() sends RST


class StoppableProxy:
    """``start_up=False`` starts it down; ``on_refused`` is called after each refused connection."""

    def __init__(self, target_port: int, host: str = "127.0.0.1", *, start_up: bool = True):
        self.target = (host, target_port)
        self.listener = socket.create_server((host, 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"http://{host}:{self.port}"
        self._up = threading.Event()
        if start_up:
            self._up.set()
        self.on_refused = None
        self.forwarded = 0
        self._lock = threading.Lock()
        self._live: list[socket.socket] = []
        self._marker: bytes | None = None
        self._nth = 0
        self._action = None
        self.seen = 0
        self.refused = 0
        self._closed = False
        threading.Thread(target=self._serve, daemon=True).start()

    # -- control
    def down(self) -> None:
        self._up.clear()
        with self._lock:
            live, self._live = self._live, []
        for s in live:
            _reset(s)

    def up(self) -> None:
        self._up.set()

    def down_on(self, marker: bytes, nth: int, action=None) -> None:
        """Go down (or, with ``action``, call it and keep forwarding) at the ``nth`` request containing ``marker``."""
        self._marker, self._nth, self.seen, self._action = marker, nth, 0, action

    def close(self) -> None:
        self._closed = True
        self.listener.close()
        self.down()

    # -- plumbing
    def _serve(self) -> None:
        while not self._closed:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            if not self._up.is_set():
                self.refused += 1
                _reset(conn)
                if self.on_refused is not None:
                    self.on_refused()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                _reset(conn)
                continue
            self.forwarded += 1
            with self._lock:
                self._live += [conn, upstream]
            threading.Thread(target=self._pump, args=(conn, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, conn, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, from_client: bool) -> None:
        try:
            while data := src.recv(65536):
                if from_client and self._marker is not None and self._marker in data:
                    self.seen += 1
                    if self.seen >= self._nth:
                        self._marker = None
                        if self._action is None:
                            self.down()
                            return
                        self._action()
                if not self._up.is_set():
                    return
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def _reset(s: socket.socket) -> None:
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RST)
    except OSError:
        pass
    try:
        s.close()
    except OSError:
        pass
