"""sd_notify(3) messages to the service manager: READY, STATUS, WATCHDOG, RELOADING, STOPPING.

The transport is a non-blocking AF_UNIX datagram socket to ``$NOTIFY_SOCKET`` (the protocol
is one datagram of ``KEY=VALUE`` lines), written here rather than through systemd-python's
``systemd.daemon.notify``: that call opens a blocking socket and holds the GIL while it
sends, so a notify queue that is full (the service manager busy; the kernel queues only
``net.unix.max_dgram_qlen`` datagrams, 10 by default) would freeze the real-time loop and
every other thread. Here a refused datagram is counted and the next ping tries again.
Outside systemd (no ``NOTIFY_SOCKET``) every call is a silent no-op.

Never raises out of a send: the loop thread pings the watchdog through this module, so a
refused datagram is counted in ``errors`` and logged once, never propagated. Never reads the
clock: callers pass the monotonic time where a message needs it.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)

Sender = Callable[[str], bool]


class SocketSender:
    """Writes notify datagrams to an AF_UNIX socket path (``@`` = abstract), never blocking."""

    __slots__ = ("_address", "_sock")

    def __init__(self, path: str) -> None:
        if not path or path[0] not in "/@":
            raise ValueError(f"NOTIFY_SOCKET must be an absolute path or @abstract, got {path!r}")
        self._address = "\0" + path[1:] if path[0] == "@" else path
        self._sock: socket.socket | None = None

    def __call__(self, message: str) -> bool:
        """Send ``message``; OSError when refused (nobody listening, or the queue is full)."""
        if self._sock is None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.setblocking(False)
        self._sock.sendto(message.encode(), self._address)
        return True

    def close(self) -> None:
        """Release the socket; idempotent."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class Notifier:
    """Formats and sends service-manager notifications; a no-op when not run by systemd."""

    __slots__ = ("_send", "errors", "sent")

    def __init__(self, environ: Mapping[str, str] | None = None, sender: Sender | None = None):
        env = os.environ if environ is None else environ
        path = env.get("NOTIFY_SOCKET", "")
        if sender is None and path:
            try:
                sender = SocketSender(path)
            except ValueError as exc:
                log.warning("ignoring NOTIFY_SOCKET: %s", exc)
        self._send = sender
        self.sent = 0
        self.errors = 0

    @property
    def enabled(self) -> bool:
        """True when a service manager is listening for notifications."""
        return self._send is not None

    def notify(self, *fields: str) -> bool:
        """Send ``KEY=VALUE`` fields as one message; False when disabled or refused."""
        if self._send is None:
            return False
        try:
            ok = self._send("\n".join(fields))
        except OSError as exc:
            ok = False
            if self.errors == 0:
                log.warning("sd_notify failed (%s); further failures are only counted", exc)
        if ok:
            self.sent += 1
        else:
            self.errors += 1
        return ok

    def ready(self, status: str | None = None) -> bool:
        """READY=1: every endpoint is open and the processor is built (or a reload is done)."""
        return self.notify("READY=1", *_status(status))

    def status(self, line: str) -> bool:
        """STATUS=: one line for ``systemctl status``."""
        return self.notify(*_status(line))

    def extend_timeout(self, usec: int, status: str | None = None) -> bool:
        """EXTEND_TIMEOUT_USEC: ask for ``usec`` more start-up (or stop) time from now."""
        if usec <= 0:
            raise ValueError(f"timeout extension must be > 0 us, got {usec}")
        return self.notify(f"EXTEND_TIMEOUT_USEC={usec}", *_status(status))

    def watchdog(self) -> bool:
        """WATCHDOG=1: the loop is alive and healthy."""
        return self.notify("WATCHDOG=1")

    def reloading(self, monotonic_ns: int) -> bool:
        """RELOADING=1 with MONOTONIC_USEC (CLOCK_MONOTONIC, as systemd 253+ requires)."""
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={monotonic_ns // 1000}")

    def stopping(self, status: str | None = None) -> bool:
        """STOPPING=1: shutdown has begun."""
        return self.notify("STOPPING=1", *_status(status))


def _status(line: str | None) -> tuple[str, ...]:
    """The STATUS field for ``line``, flattened to one line; empty when None."""
    if line is None:
        return ()
    return ("STATUS=" + " ".join(line.split()),)
