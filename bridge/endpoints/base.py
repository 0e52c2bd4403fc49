"""The Endpoint contract: a transport opened from a URL, read and written by the loop.

An endpoint moves bytes only. It never decodes, never blocks the real-time loop (sockets and
devices are non-blocking) and never raises out of ``recv``/``send`` for a peer's behaviour:
a refused send returns False and the caller counts it. When the peer itself refused it (an ICMP
port-unreachable, reported as ECONNREFUSED on a connected socket's next send or receive), the
endpoint also counts it in ``refused`` (``note_refusal``): the loop then books the send as
``peer_unreachable`` and reports the peer down, apart from a fault of the bridge's own.

Counters of an endpoint's own (reconnects, clients dropped) stay plain int attributes that the
endpoint increments; it names them in ``IN_COUNTERS``/``OUT_COUNTERS`` and ``counters`` is a
live, read-only view of them that the metrics collector reads at scrape time. Frames an
endpoint drops itself, before ``recv`` hands them to the loop, it reports by reason in
``drops()``; the loop books them as received and dropped, so the input's books still balance.
"""

from __future__ import annotations

import errno
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, ClassVar

from bridge.endpoints.url import EndpointURL
from bridge.errors import REASON_INDEX

Address = Any  # a socket address tuple, or None for endpoints without peers

# What a connected socket's send reports once the peer answered with ICMP port-unreachable.
PEER_REFUSED_ERRNOS = frozenset({errno.ECONNREFUSED})


class CounterView(Mapping[str, int]):
    """A read-only mapping of counter name -> the int attribute of that name, read when asked."""

    __slots__ = ("_names", "_obj")

    def __init__(self, obj: object, names: Iterable[str]) -> None:
        self._obj = obj
        self._names = tuple(names)

    def __getitem__(self, name: str) -> int:
        if name not in self._names:
            raise KeyError(name)
        return int(getattr(self._obj, name, 0))

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


class Endpoint(ABC):
    """A non-blocking transport: inputs are polled by ``fileno``, outputs written by ``send``."""

    scheme: ClassVar[str]
    KEYS: ClassVar[Mapping[str, str]] = {}  # scheme-specific URL keys -> one line of help
    # Of KEYS, those the format's codec takes as well (sensor geometry): they go to both.
    SHARED_KEYS: ClassVar[frozenset[str]] = frozenset()
    datagram: ClassVar[bool] = True  # False for byte streams: recv returns chunks to a decoder
    refused = 0  # sends the peer refused since open (see note_refusal); the loop reads it
    state: str = ""  # a protocol state for metrics and STATUS= ("" when there is none)
    control: Mapping[str, int] = {}  # control messages by result, for endpoints with a handshake
    # the drop reason the loop counts for a refused send that is not a peer refusal
    refusal_reason: int = REASON_INDEX["send_failed"]
    # Int attributes of the endpoint's own, exported per endpoint as
    # spikebridge_endpoint_events_total{counter}: name -> one line of help, by role.
    IN_COUNTERS: ClassVar[Mapping[str, str]] = {}
    OUT_COUNTERS: ClassVar[Mapping[str, str]] = {}

    def __init__(self, url: EndpointURL, role: str, options: Mapping[str, str]) -> None:
        if role not in ("in", "out"):
            raise ValueError(f"role must be 'in' or 'out', got {role!r}")
        self.url = url
        self.role = role
        self.options = dict(options)
        # the live view of this role's counters (the loop hands it to the stats once)
        self.counters: Mapping[str, int] = CounterView(
            self, self.IN_COUNTERS if role == "in" else self.OUT_COUNTERS)

    @abstractmethod
    def open(self) -> None:
        """Bind, connect or open the device; EndpointError with a clear message on failure."""

    @abstractmethod
    def fileno(self) -> int:
        """The descriptor the loop polls for readability (inputs)."""

    @abstractmethod
    def recv(self) -> tuple[bytes | memoryview, Address] | None:
        """One pending datagram (or stream chunk) and its sender; None when nothing is pending.

        A returned memoryview is valid only until the next ``recv``.
        """

    @abstractmethod
    def send(self, data: bytes) -> bool:
        """Hand ``data`` to the kernel without blocking; False when it was refused.

        An endpoint whose peer can refuse calls ``note_refusal(exc)`` before returning False.
        """

    def note_refusal(self, exc: OSError) -> bool:
        """Count ``exc`` in ``refused`` when it says the peer refused (ECONNREFUSED); True if so."""
        if exc.errno in PEER_REFUSED_ERRNOS:
            self.refused += 1
            self.refusal = exc.strerror or "connection refused"
            return True
        return False

    refusal = ""  # the last refusal's message, for the log

    def reopen(self, now_ns: int) -> bool:
        """Called by the loop while this endpoint is down; True once it is open again.

        ``recv``/``send`` raise EndpointError when the transport is gone (a serial port
        unplugged); the loop then unregisters the endpoint and calls ``reopen`` each tick.
        The endpoint keeps its own backoff schedule, measured against ``now_ns`` (monotonic).
        Endpoints that cannot come back return False.
        """
        return False

    def bind_codec(self, codec: Any) -> Any:
        """The codec the loop uses for this endpoint: ``codec`` (the URL's), or its own."""
        return codec

    def service(self, now_ns: int) -> None:  # noqa: B027 - optional
        """Housekeeping from the loop (timers, control traffic); never blocks."""

    def overflow_drops(self) -> int:
        """Datagrams the kernel dropped before we read them, since open (0 when unknown)."""
        return 0

    def drops(self) -> Mapping[str, int]:
        """Frames this endpoint dropped itself before ``recv``, since open, by DROP_REASONS name.

        The loop books each increase as received and dropped for that reason (off the hot
        path, in its housekeeping), as it books ``overflow_drops`` as ``rcvbuf_overflow``.
        """
        return {}

    def close(self) -> None:  # noqa: B027 - optional
        """Release the socket or device; idempotent."""

    def describe(self) -> str:
        """The URL and, once open, what it is bound or connected to (for logs)."""
        return str(self.url)
