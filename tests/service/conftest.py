"""Shared fixtures for the service tests: a fake NOTIFY_SOCKET to read datagrams from."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest


class NotifySocket:
    """A unix datagram socket standing in for the service manager's notify socket."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)

    def messages(self, timeout: float = 0.0) -> list[str]:
        """Every datagram waiting now (waiting up to ``timeout`` s for the first one)."""
        out = []
        self.sock.settimeout(timeout if timeout > 0 else None)
        self.sock.setblocking(timeout > 0)
        while True:
            try:
                out.append(self.sock.recv(65536).decode())
            except (BlockingIOError, TimeoutError):
                return out
            self.sock.setblocking(False)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[NotifySocket]:
    ns = NotifySocket(tmp_path / "notify.sock")
    yield ns
    ns.close()
