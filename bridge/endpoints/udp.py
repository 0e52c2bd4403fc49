"""UDP unicast endpoints: an input binds HOST:PORT, an output sends to HOST:PORT.

Non-blocking only. A receive drains into one buffer allocated at open; the kernel's per-socket
drop counter (SO_MEMINFO) is read at housekeeping time, so datagrams lost in a full receive
buffer are counted too. Never raises out of recv/send for a peer's behaviour.
"""

from __future__ import annotations

import errno
import socket
import struct
from collections.abc import Mapping
from typing import Any, ClassVar

from bridge.endpoints.base import Address, Endpoint
from bridge.endpoints.url import EndpointURL
from bridge.errors import ConfigError, EndpointError

SO_MEMINFO = getattr(socket, "SO_MEMINFO", 55)
SK_MEMINFO_DROPS = 8
_MEMINFO = struct.Struct("=9I")
MAX_DATAGRAM = 65536
DEFAULT_RCVBUF = 4 << 20
_TIMEVAL = struct.Struct("@ll")
_DONTWAIT = socket.MSG_DONTWAIT


def _size(url: EndpointURL, key: str, text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        value = -1
    if not 0 < value <= 1 << 30:
        raise ConfigError(f"must be a byte count in 1..2**30, got {text!r}", key=f"{url}: {key}")
    return value


def resolve(url: EndpointURL, host: str, port: int) -> tuple[int, tuple[str, int]]:
    """Resolve HOST:PORT to (address family, sockaddr) for a datagram socket."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except socket.gaierror as exc:
        raise EndpointError(f"{url}: cannot resolve {host!r}: {exc.strerror}") from None
    family, _, _, _, addr = infos[0]
    return int(family), (str(addr[0]), int(addr[1]))


def _closed(*_args: object) -> Any:
    raise OSError(errno.EBADF, "endpoint is not open")


class UdpEndpoint(Endpoint):
    """udp://HOST:PORT: bound receive socket (input) or connected send socket (output)."""

    scheme: ClassVar[str] = "udp"
    KEYS: ClassVar[Mapping[str, str]] = {
        "rcvbuf": "receive buffer bytes (inputs; default 4 MiB, capped by net.core.rmem_max)",
        "sndbuf": "send buffer bytes (outputs)",
        "bind": "local HOST:PORT to send from (outputs)",
    }

    def __init__(self, url: EndpointURL, role: str, options: Mapping[str, str]) -> None:
        super().__init__(url, role, options)
        self.host, self.port = url.host_port()
        self.rcvbuf = _size(url, "rcvbuf", options["rcvbuf"]) if "rcvbuf" in options else None
        self.sndbuf = _size(url, "sndbuf", options["sndbuf"]) if "sndbuf" in options else None
        self.bind_to: tuple[str, int] | None = None
        if "bind" in options:
            if role != "out":
                raise ConfigError("bind= applies to outputs; an input binds its URL", key=str(url))
            self.bind_to = EndpointURL("udp", options["bind"]).host_port()
        self._sock: socket.socket | None = None
        self._buf = bytearray(MAX_DATAGRAM)
        self._view = memoryview(self._buf)
        self._timeout_ns = 50_000_000
        self._recvfrom_into: Any = _closed
        self._meminfo = True
        self._send: Any = _closed

    def _new_socket(self, family: int) -> socket.socket:
        return socket.socket(family, socket.SOCK_DGRAM)

    def open(self) -> None:
        """Bind (input) or connect (output); EndpointError naming the address on failure."""
        family, addr = resolve(self.url, self.host, self.port)
        sock = self._new_socket(family)
        try:
            # Blocking at the Python level (no poll() before each call) with a kernel receive
            # timeout: recv() passes MSG_DONTWAIT, recv_wait() blocks in one recvmsg call.
            sock.setblocking(True)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _TIMEVAL.pack(0, 50_000))
            if self.role == "in":
                sock.setsockopt(
                    socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf or DEFAULT_RCVBUF
                )
                self._bind(sock, addr)
            else:
                if self.sndbuf:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.sndbuf)
                if self.bind_to is not None:
                    sock.bind(self.bind_to)
                self._connect(sock, addr)
        except OSError as exc:
            sock.close()
            what = "bind" if self.role == "in" else "send to"
            hint = " (is another process using it?)" if exc.errno == errno.EADDRINUSE else ""
            raise EndpointError(f"{self.url}: cannot {what} {addr}: {exc.strerror}{hint}") from None
        self._sock = sock
        self._recvfrom_into = sock.recvfrom_into
        self._send = sock.send

    def _bind(self, sock: socket.socket, addr: tuple[str, int]) -> None:
        sock.bind(addr)

    def _connect(self, sock: socket.socket, addr: tuple[str, int]) -> None:
        sock.connect(addr)

    @property
    def sock(self) -> socket.socket:
        """The open socket (RuntimeError before open)."""
        if self._sock is None:
            raise RuntimeError(f"{self.url} is not open")
        return self._sock

    def local_address(self) -> tuple[str, int]:
        """The bound (host, port), e.g. to learn an ephemeral port chosen by ``:0``."""
        host, port = self.sock.getsockname()[:2]
        return host, port

    def fileno(self) -> int:
        """The socket's descriptor."""
        return self.sock.fileno()

    def recv(self, _flags: int = _DONTWAIT) -> tuple[memoryview, Address] | None:
        """One datagram (valid until the next recv) and its sender, or None when drained."""
        try:
            n, addr = self._recvfrom_into(self._buf, 0, _flags)
        except OSError:
            return None  # drained (EAGAIN), interrupted, or a queued ICMP error
        return self._view[:n], addr

    def recv_wait(self, timeout_ns: int) -> tuple[memoryview, Address] | None:
        """Like ``recv`` but block up to ``timeout_ns`` (one system call when data flows)."""
        if timeout_ns != self._timeout_ns:
            sec, ns = divmod(max(timeout_ns, 1000), 1_000_000_000)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO,
                                 _TIMEVAL.pack(sec, ns // 1000))
            self._timeout_ns = timeout_ns
        try:
            n, addr = self._recvfrom_into(self._buf, 0, 0)
        except OSError:
            return None  # timed out (EAGAIN), interrupted, or a queued ICMP error
        return self._view[:n], addr

    def send(self, data: bytes) -> bool:
        """Send one datagram; False when the kernel refused it (full buffer, peer unreachable).

        A peer that answered an earlier datagram with ICMP port-unreachable makes the kernel
        fail this connected socket's next send with ECONNREFUSED (this datagram is not sent):
        that is counted in ``refused``.
        """
        try:
            self._send(data, _DONTWAIT)
        except OSError as exc:
            self.note_refusal(exc)
            return False
        return True

    def overflow_drops(self) -> int:
        """Datagrams the kernel dropped for want of receive-buffer space, since open.

        Read with SO_MEMINFO (one system call), so the loop asks at housekeeping time,
        not per datagram; 0 where the kernel does not report it.
        """
        if self._sock is None or not self._meminfo:
            return 0
        try:
            info = self._sock.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, _MEMINFO.size)
        except OSError:
            self._meminfo = False
            return 0
        return int(_MEMINFO.unpack_from(info)[SK_MEMINFO_DROPS])

    def close(self) -> None:
        """Close the socket; idempotent."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
            self._recvfrom_into = self._send = _closed

    def describe(self) -> str:
        """URL plus the bound or peer address."""
        if self._sock is None:
            return str(self.url)
        try:
            where = self._sock.getsockname() if self.role == "in" else self._sock.getpeername()
        except OSError:
            return str(self.url)
        return f"{self.url} ({'bound' if self.role == 'in' else 'to'} {where[0]}:{where[1]})"
