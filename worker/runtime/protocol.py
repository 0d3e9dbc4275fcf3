"""JSON lines over Unix sockets: how the job's work horse, the supervisor and rank 0 talk.

horse -> supervisor   {"type": "job", "spec": {...}, "job_dir", "out_dir", "model_dir", "nproc", "profile"}
                      or a live session: {"type": "job", "kind": "play", "spec": PlaySpec, "image_path",
                      "work_dir", "model_dir", "nproc", "profile"}, then while it runs
                      {"type": "chunk", "chunk", "c2w", "intrinsics", "actions", "prompt"} ... {"type": "end"}
supervisor -> rank 0  the same job (plus "attempt"), the horse's requests as they come, {"type": "cancel"},
                      {"type": "stop"}
rank 0 -> supervisor  {"type": "ready"}, {"type": "loaded", ...}, then per job "stage" / "progress" / "log"
                      events (a session: {"type": "session", "load_s", "reused_weights", "info"} once, then
                      per chunk {"type": "frames", "chunk", "path", "context", "generate_s"}) and one of
                      "result" / "error" / "canceled" ("error": kind, message, hint; `"fatal": false` when
                      the ranks refused the job and stay usable)
supervisor -> horse   the job's events, relayed
"""

from __future__ import annotations

import json
import select
import socket
from pathlib import Path


class ConnectionClosed(Exception):
    """The other side closed the connection (or died)."""


class Connection:
    def __init__(self, sock: socket.socket):
        self.sock = sock
        self._buffer = b""

    @classmethod
    def connect(cls, path: str | Path, timeout_s: float = 5.0) -> Connection:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout_s)
        try:
            sock.connect(str(path))
        except OSError:
            sock.close()
            raise
        sock.settimeout(None)
        return cls(sock)

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, message: dict) -> None:
        try:
            self.sock.sendall(json.dumps(message).encode() + b"\n")
        except OSError as error:
            raise ConnectionClosed(str(error)) from None

    def receive(self, timeout_s: float | None) -> dict | None:
        """The next message, or None when none arrives within `timeout_s`."""
        while b"\n" not in self._buffer:
            ready, _, _ = select.select([self.sock], [], [], timeout_s)
            if not ready:
                return None
            try:
                data = self.sock.recv(65536)
            except OSError as error:
                raise ConnectionClosed(str(error)) from None
            if not data:
                raise ConnectionClosed("connection closed")
            self._buffer += data
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)

    def receive_available(self) -> list[dict]:
        """Every complete message that arrived, without waiting; one read may bring several, and a
        caller that waits in `select` on the socket would not see those already buffered."""
        messages = []
        try:
            while (message := self.receive(0)) is not None:
                messages.append(message)
        except ConnectionClosed:
            if not messages:
                raise
        return messages

    def close(self) -> None:
        self.sock.close()


def listen(path: Path) -> socket.socket:
    """A listening Unix socket at `path` (a stale socket file is replaced)."""
    path.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.listen(4)
    return sock
