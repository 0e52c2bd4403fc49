"""A host-side view of an emulator's pty, for the emulator tests."""

from __future__ import annotations

import contextlib
import os
import select
import termios
import tty
from collections.abc import Callable, Iterator

import pytest


class Host:
    """The host end of an emulated device: the pty slave, opened raw and non-blocking."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(self.fd, termios.TCSANOW)

    def write(self, data: bytes) -> None:
        os.write(self.fd, data)

    def read(self, timeout: float = 0.5, want: int = 1 << 30) -> bytes:
        """What arrives until ``want`` bytes, or ``timeout`` passes with nothing new."""
        out = b""
        while len(out) < want and select.select([self.fd], [], [], timeout)[0]:
            try:
                chunk = os.read(self.fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        return out

    def close(self) -> None:
        os.close(self.fd)


@pytest.fixture
def open_host() -> Iterator[Callable[[str], Host]]:
    """Open the host side of a pty path; closed at teardown."""
    opened: list[Host] = []

    def open_(path: str) -> Host:
        host = Host(path)
        opened.append(host)
        return host

    yield open_
    for host in opened:
        with contextlib.suppress(OSError):
            host.close()
