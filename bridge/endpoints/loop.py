"""loop://NAME: an in-process datagram channel, for tests and for wiring stages together.

Writers to a name reach the one reader of that name through a Unix datagram socket pair, so
the reader has a real descriptor for the loop's poller. Nothing leaves the process.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Mapping
from typing import ClassVar

from bridge.endpoints.base import Address, Endpoint
from bridge.endpoints.url import EndpointURL
from bridge.errors import EndpointError

_lock = threading.Lock()
_channels: dict[str, tuple[socket.socket, socket.socket]] = {}
_readers: set[str] = set()
BUFFER_BYTES = 1 << 20


def channel(name: str) -> tuple[socket.socket, socket.socket]:
    """The (reader, writer) socket pair of ``name``, created on first use."""
    with _lock:
        pair = _channels.get(name)
        if pair is None:
            reader, writer = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
            for s in (reader, writer):
                s.setblocking(False)
            reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, BUFFER_BYTES)
            writer.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, BUFFER_BYTES)
            pair = _channels[name] = (reader, writer)
        return pair


def reset() -> None:
    """Close every channel (tests call this between cases)."""
    with _lock:
        for reader, writer in _channels.values():
            reader.close()
            writer.close()
        _channels.clear()
        _readers.clear()


class LoopEndpoint(Endpoint):
    """One end of an in-process channel: inputs read NAME, outputs write NAME."""

    scheme: ClassVar[str] = "loop"
    KEYS: ClassVar[Mapping[str, str]] = {}

    def __init__(self, url: EndpointURL, role: str, options: Mapping[str, str]) -> None:
        super().__init__(url, role, options)
        self.channel = url.target
        self._sock: socket.socket | None = None
        self._buf = bytearray(65536)
        self._view = memoryview(self._buf)

    def open(self) -> None:
        """Attach to the channel; a second reader of one name is an error."""
        reader, writer = channel(self.channel)
        if self.role == "in":
            with _lock:
                if self.channel in _readers:
                    raise EndpointError(f"{self.url}: channel already has a reader")
                _readers.add(self.channel)
            self._sock = reader
        else:
            self._sock = writer

    def fileno(self) -> int:
        """The reader socket's descriptor."""
        if self._sock is None:
            raise RuntimeError(f"{self.url} is not open")
        return self._sock.fileno()

    def recv(self) -> tuple[memoryview, Address] | None:
        """One datagram, or None when the channel is empty."""
        assert self._sock is not None
        try:
            n = self._sock.recv_into(self._buf)
        except (BlockingIOError, InterruptedError):
            return None
        return self._view[:n], None

    def send(self, data: bytes) -> bool:
        """Queue one datagram; False when the channel is full."""
        assert self._sock is not None
        try:
            self._sock.send(data)
        except OSError:
            return False
        return True

    def close(self) -> None:
        """Detach (the channel itself lives until ``reset``)."""
        if self._sock is not None and self.role == "in":
            with _lock:
                _readers.discard(self.channel)
        self._sock = None
