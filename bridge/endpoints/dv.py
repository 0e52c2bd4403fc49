"""dv+tcp://HOST:PORT and dv+unix:///PATH: iniVation DV / dv-processing network event streams.

Input: spikebridge is a client of a DV or dv-processing server. The connection is a
non-blocking socket the loop polls like any other; the bytes go through a sans-IO reader
(bridge.codecs.dvstream), each event's (x, y, polarity) becomes a neuron id with the shared
sensor geometry (the stream's own resolution), and each packet becomes one frame, encoded in
the URL's ``format=`` for the loop to decode as usual. A frame larger than one datagram waits in
a bounded queue (``queue``; the oldest is dropped and counted, as ``rcvbuf_overflow``). A lost
connection makes ``recv`` raise EndpointError; the loop then calls ``reopen``, which retries on
a backoff schedule (``backoff`` doubling up to ``backoff_max``) and counts ``reconnects``, as
serial ports do. A packet holding an event outside the stream's geometry is dropped whole and
booked as a frame dropped for ``id_out_of_range`` (``drops``); its events count in
``events_outside``. These counters and the output's client counters are exported per endpoint
(``spikebridge_endpoint_events_total``, through ``IN_COUNTERS``/``OUT_COUNTERS``).
dv-processing's own NetworkReader is not used in the daemon: it holds the GIL while it
connects, which would stall the loop (docs/event-cameras.md has the measurement).

Output: spikebridge is the server. It listens, and each client that connects gets the stream's
IOHeader and then every frame as one event packet (bridge.codecs.dvstream), each event stamped
with the frame's send time. Clients are written without blocking; one whose unsent bytes exceed
``client_buffer_kb`` is slow: it is disconnected and counted (``slow_clients``), never waited
for. An accept thread (started at ``open``) takes new connections and sends them the header.

The loop never blocks here: it reads and writes non-blocking sockets.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import socket
import stat
import threading
from collections import deque
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from bridge.codecs import dvstream
from bridge.codecs.geometry import LAYOUTS, Geometry
from bridge.endpoints import endpoint_spec, make_codec
from bridge.endpoints.base import Address, Endpoint
from bridge.endpoints.url import EndpointURL
from bridge.engine.clock import SYSTEM_CLOCK, Clock
from bridge.errors import ConfigError, DecodeError, EndpointError
from bridge.frame import NO_SEQ, SpikeFrame
from bridge.record.resend import Resender

log = logging.getLogger("spikebridge.dv")

QUEUE_DATAGRAMS = 4096     # input: datagrams queued for the loop before the oldest are dropped
READ_BYTES = 1 << 16       # input: one recv's worth
CONNECT_TIMEOUT_S = 3.0    # input: at open (before the loop runs), the first connect's wait
ACCEPT_TIMEOUT_S = 0.2     # output: the accept thread checks for close this often
HEADER_TIMEOUT_S = 1.0     # output: a client that cannot take the 1 kB header in this long


def _int(url: EndpointURL, key: str, text: str, lo: int, hi: int) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        value = lo - 1
    if not lo <= value <= hi:
        raise ConfigError(f"must be an integer in {lo}..{hi}, got {text!r}", key=f"{url}: {key}")
    return value


class Backoff:
    """Retry times: the first try at once, then ``first_ns`` doubling up to ``max_ns``."""

    __slots__ = ("delay_ns", "first_ns", "max_ns", "retry_at")

    def __init__(self, first_ns: int, max_ns: int) -> None:
        self.first_ns, self.max_ns = first_ns, max_ns
        self.delay_ns = first_ns
        self.retry_at: int | None = None

    def due(self, now_ns: int) -> bool:
        """True when a try may be made at ``now_ns``."""
        if self.retry_at is None:
            self.retry_at = now_ns
        return now_ns >= self.retry_at

    def failed(self, now_ns: int) -> int:
        """Book a failed try; returns the next try's time."""
        self.retry_at = now_ns + self.delay_ns
        self.delay_ns = min(2 * self.delay_ns, self.max_ns)
        return self.retry_at

    def succeeded(self) -> None:
        """Book a success: the next failure starts from ``first_ns`` again."""
        self.delay_ns = self.first_ns
        self.retry_at = None


class DvEndpoint(Endpoint):
    """A DV network event stream: a client of a DV server (input) or a server (output)."""

    scheme: ClassVar[str] = "dv+tcp"
    KEYS: ClassVar[Mapping[str, str]] = {
        "width": "sensor width (output: required unless the format has it; input: check)",
        "height": "sensor height (likewise)",
        "layout": "id layout of (x, y, p), most significant first (default pyx)",
        "polarity": "polarity sent for layouts without p (outputs; default 1)",
        "backoff": "inputs: first reconnect delay, ms (default 100)",
        "backoff_max": "inputs: longest reconnect delay, ms (default 2000)",
        "queue": f"inputs: datagrams queued for the loop (default {QUEUE_DATAGRAMS})",
        "clients": "outputs: most clients at once (default 10)",
        "client_buffer_kb": "outputs: unsent kB a client may lag before it is dropped "
                            "(default 4096)",
        "camera": "outputs: the camera name clients see (default spikebridge)",
    }
    SHARED_KEYS: ClassVar[frozenset[str]] = frozenset({"width", "height", "layout", "polarity"})
    IN_COUNTERS: ClassVar[Mapping[str, str]] = {
        "reconnects": "connections made again after one was lost",
        "connect_failures": "reconnection tries that failed",
        "events_outside": "events outside the stream's width x height (their packet dropped)",
    }
    OUT_COUNTERS: ClassVar[Mapping[str, str]] = {
        "clients_accepted": "clients that connected and took the header",
        "clients_refused": "clients turned away: already ``clients`` connected",
        "slow_clients": "clients dropped for lagging over ``client_buffer_kb``",
        "clients_closed": "clients that went away by themselves",
    }

    def __init__(self, url: EndpointURL, role: str, options: Mapping[str, str], *,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        super().__init__(url, role, options)
        self.clock = clock
        in_only, out_only = {"backoff", "backoff_max", "queue"}, {
            "clients", "client_buffer_kb", "camera", "polarity"}
        wrong = sorted(k for k in options if k in (out_only if role == "in" else in_only))
        if wrong:
            raise ConfigError(f"{', '.join(wrong)} do(es) not apply to "
                              f"{'inputs' if role == 'in' else 'outputs'}", key=str(url))
        if url.scheme == "dv+tcp":
            self.host, self.port = url.host_port()
            self.path = ""
        else:
            if not url.target.startswith("/"):
                raise ConfigError(f"dv+unix takes an absolute socket path (dv+unix:///run/x."
                                  f"sock), got {url.target!r}", key=str(url))
            self.host, self.port, self.path = "", 0, url.target
        opt = options.get
        self.width = None if opt("width") is None else _int(url, "width", opt("width", ""),
                                                            1, 65536)
        self.height = None if opt("height") is None else _int(url, "height", opt("height", ""),
                                                              1, 65536)
        self.layout = opt("layout", "pyx")
        if self.layout not in LAYOUTS:
            raise ConfigError(f"layout must be one of {', '.join(LAYOUTS)}, got {self.layout!r}",
                              key=f"{url}: layout")
        self.polarity = _int(url, "polarity", opt("polarity", "1"), 0, 1)
        self.backoff = Backoff(_int(url, "backoff", opt("backoff", "100"), 1, 60_000) * 10**6,
                               _int(url, "backoff_max", opt("backoff_max", "2000"), 1,
                                    600_000) * 10**6)
        self.queue_max = _int(url, "queue", opt("queue", str(QUEUE_DATAGRAMS)), 1, 1 << 20)
        self.max_clients = _int(url, "clients", opt("clients", "10"), 1, 1024)
        self.client_buffer = _int(url, "client_buffer_kb", opt("client_buffer_kb", "4096"),
                                  1, 1 << 20) * 1024
        self.camera = opt("camera", "spikebridge")
        # Counters (plain ints, read at scrape time).
        self.reconnects = 0        # inputs: connections made again after one was lost
        self.connect_failures = 0  # inputs: tries that failed
        self.queue_dropped = 0     # inputs: datagrams dropped, oldest first, queue full
        self.events_outside = 0    # inputs: events outside width x height (dropped)
        self.packets_outside = 0   # inputs: packets dropped for holding such events
        self.clients_accepted = 0  # outputs
        self.clients_refused = 0   # outputs: over ``clients``
        self.slow_clients = 0      # outputs: dropped for lagging over ``client_buffer_kb``
        self.clients_closed = 0    # outputs: went away by themselves
        self.packets_sent = 0
        self.connected = False
        self.geometry: Geometry | None = None
        self.codec: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._out: deque[bytes] = deque()
        self._sock: socket.socket | None = None
        self._fd = -1
        self._ever = False
        self._dec = dvstream.DvStreamDecoder()
        self._resender: Any = None
        self._buf = bytearray(READ_BYTES)
        self._view = memoryview(self._buf)
        self._listener: socket.socket | None = None
        self._new: deque[_Client] = deque()
        self._clients: list[_Client] = []
        self._header = b""

    # -- open / close ---------------------------------------------------------------------

    def open(self) -> None:
        """Input: start the reader thread. Output: listen and start the accept thread."""
        spec = endpoint_spec(self.url, self.role)
        self.codec = make_codec(spec)
        if self.role == "in":
            self._open_client()
            return
        geo = getattr(self.codec, "geometry", None)
        try:
            self.geometry = geo if self.width is None and geo is not None else Geometry(
                "dv", spec.neurons, self.width, self.height, self.layout, self.polarity)
        except ValueError as exc:
            raise ConfigError(f"{exc} (width= and height= on the dv URL)",
                              key=str(self.url)) from None
        self._header = dvstream.io_header(self.geometry.width, self.geometry.height, self.camera)
        self._listener = self._listen()
        self._thread = threading.Thread(target=self._accept_loop, name=f"dv-server:{self.url}",
                                        daemon=True)
        self._thread.start()

    def _listen(self) -> socket.socket:
        try:
            if self.path:
                if os.path.exists(self.path):
                    if not stat.S_ISSOCK(os.stat(self.path).st_mode):
                        raise EndpointError(f"{self.url}: {self.path} exists and is not a socket")
                    with contextlib.suppress(OSError):
                        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                        probe.settimeout(0.2)
                        try:
                            probe.connect(self.path)
                            raise EndpointError(f"{self.url}: another server is listening on "
                                                f"{self.path}")
                        except (ConnectionRefusedError, FileNotFoundError):
                            os.unlink(self.path)  # a stale socket left by a dead server
                        finally:
                            probe.close()
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.bind(self.path)
            else:
                family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
                sock = socket.socket(family, socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((self.host, self.port))
            sock.listen(self.max_clients)
        except OSError as exc:
            raise EndpointError(f"{self.url}: cannot listen: {exc.strerror or exc}") from None
        sock.settimeout(ACCEPT_TIMEOUT_S)
        return sock

    def close(self) -> None:
        """Stop the thread, close every socket (and remove a Unix socket we made); idempotent."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None
        for c in [*self._clients, *self._new]:
            c.sock.close()
        self._clients.clear()
        self._new.clear()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
            if self.path:
                with contextlib.suppress(OSError):
                    os.unlink(self.path)
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def describe(self) -> str:
        """The URL and what it does."""
        what = "client of a DV stream" if self.role == "in" else "serving a DV stream"
        return f"{self.url} ({what})"

    # -- input ------------------------------------------------------------------------------

    def _address(self) -> tuple[int, Any]:
        if self.path:
            return socket.AF_UNIX, self.path
        return (socket.AF_INET6 if ":" in self.host else socket.AF_INET), (self.host, self.port)

    def _connect(self, wait_s: float = 0.0) -> int:
        """Start a connection; returns 0 (connected), EINPROGRESS, or the errno of a refusal.

        ``wait_s`` > 0 (at open, before the loop runs) waits that long for the connection.
        """
        family, addr = self._address()
        sock = socket.socket(family, socket.SOCK_STREAM)
        if wait_s:
            sock.settimeout(wait_s)
            try:
                sock.connect(addr)
                err = 0
            except TimeoutError:
                err = errno.ETIMEDOUT
            except OSError as exc:
                err = exc.errno or errno.ECONNREFUSED
            sock.setblocking(False)
        else:
            sock.setblocking(False)
            err = sock.connect_ex(addr)
        if err not in (0, errno.EINPROGRESS, errno.EAGAIN):
            sock.close()
            return err
        if self._sock is not None:
            self._sock.close()
        self._sock, self._fd = sock, sock.fileno()
        self._dec = dvstream.DvStreamDecoder()
        self._out.clear()
        if self._resender is None:  # one numbering across reconnects: no false duplicates
            self._resender = Resender(self.codec, renumber=True)
        self.connected = err == 0
        return 0 if err == 0 else errno.EINPROGRESS

    def _open_client(self) -> None:
        err = self._connect(CONNECT_TIMEOUT_S)
        if err not in (0, errno.EINPROGRESS):
            raise EndpointError(f"{self.url}: cannot connect: {os.strerror(err)} (is the DV "
                                "network output or the dv-processing server running?)")
        self._ever = True

    def _lost(self, why: str) -> EndpointError:
        if self.connected or self._sock is not None:
            log.warning("%s: %s; reconnecting with backoff", self.url, why)
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self.connected = False
        return EndpointError(f"{self.url}: {why}")

    def reopen(self, now_ns: int) -> bool:
        """Reconnect on the backoff schedule; True once connected again."""
        if self.role != "in":
            return False
        sock = self._sock
        if sock is not None and not self.connected:  # a connect in progress
            _, writable, _ = select.select([], [sock], [], 0)
            if not writable:
                return False
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err == 0:
                return self._reconnected()
            sock.close()
            self._sock = None
            self.connect_failures += 1
            self.backoff.failed(now_ns)
            return False
        if not self.backoff.due(now_ns):
            return False
        err = self._connect()
        if err == 0:
            return self._reconnected()
        if err != errno.EINPROGRESS:
            self.connect_failures += 1
            self.backoff.failed(now_ns)
        return False

    def _reconnected(self) -> bool:
        self.connected = True
        self.backoff.succeeded()
        self.reconnects += 1
        log.info("%s: reconnected (reconnect %d)", self.url, self.reconnects)
        return True

    def fileno(self) -> int:
        """Inputs: the connection's socket (while down, the descriptor it had)."""
        if self._fd < 0:
            raise RuntimeError(f"{self.url} is not an open input")
        return self._fd

    def recv(self) -> tuple[bytes | memoryview, Address] | None:
        """One frame's datagram, or None; EndpointError when the connection is gone."""
        if self._out:
            return self._out.popleft(), None
        sock = self._sock
        if sock is None:
            raise EndpointError(f"{self.url}: not connected")
        try:
            n = sock.recv_into(self._buf)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError as exc:
            raise self._lost(f"connection failed: {exc.strerror or exc}") from None
        if n == 0:
            raise self._lost("the server closed the connection")
        self.connected = True
        dec = self._dec
        dec.feed(self._view[:n])
        try:
            while (ev := dec.next_events()) is not None:
                self._frame(ev)
        except DecodeError as exc:
            raise self._lost(f"cannot follow the stream: {exc.detail}") from None
        return (self._out.popleft(), None) if self._out else None

    def _frame(self, ev: Any) -> None:
        info = self._dec.info
        assert info is not None
        geo = self.geometry
        if geo is None or (geo.width, geo.height) != (info.width, info.height):
            if self.width is not None and (self.width, self.height) != (info.width,
                                                                         info.height):
                log.warning("%s: the stream is %dx%d, not width=%s height=%s; using the "
                            "stream's", self.url, info.width, info.height, self.width,
                            self.height)
            geo = self.geometry = Geometry("dv", self.codec.neurons, info.width, info.height,
                                           self.layout, self.polarity)
        if not len(ev):
            return
        x, y, p = ev["x"], ev["y"], ev["p"]
        try:
            ids = geo.ids(x, y, p)
        except DecodeError as exc:
            # As for a spif or Faery datagram: an event outside the geometry drops its packet
            # (a counted id_out_of_range frame, see drops()), never a silent misdecode.
            ok = (x >= 0) & (x < geo.width) & (y >= 0) & (y < geo.height)
            self.events_outside += int((~ok).sum())
            self.packets_outside += 1
            if self.packets_outside == 1:
                log.warning("%s: dropped a packet: %s (further ones are counted, not logged)",
                            self.url, exc.detail)
            return
        frame = SpikeFrame(0, NO_SEQ, 0, ids.astype(np.uint32))
        out = self._out
        for d in self._resender.datagrams(frame, self.clock.wall_ns()):
            if len(out) >= self.queue_max:
                out.popleft()
                self.queue_dropped += 1
            out.append(d)

    def overflow_drops(self) -> int:
        """Datagrams dropped, oldest first, because the loop did not take them in time."""
        return self.queue_dropped

    def drops(self) -> Mapping[str, int]:
        """Inputs: packets dropped for an event outside the stream's geometry."""
        return {"id_out_of_range": self.packets_outside} if self.role == "in" else {}

    # -- output -----------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        lst = self._listener
        assert lst is not None
        while not self._stop.is_set():
            try:
                sock, _ = lst.accept()
            except (TimeoutError, BlockingIOError):
                continue
            except OSError:
                if self._stop.is_set():
                    return
                continue
            if len(self._clients) + len(self._new) >= self.max_clients:
                self.clients_refused += 1
                sock.close()
                continue
            try:
                if sock.family != socket.AF_UNIX:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.settimeout(HEADER_TIMEOUT_S)
                sock.sendall(self._header)
                sock.setblocking(False)
            except OSError:
                sock.close()
                continue
            self.clients_accepted += 1
            self._new.append(_Client(sock))

    def send(self, data: bytes) -> bool:
        """Send one frame's events to every client without blocking; False if undecodable."""
        try:
            frame = self.codec.decode(data)
        except DecodeError:
            return False
        return self.send_frame(frame, self.clock.wall_ns())

    def send_frame(self, frame: SpikeFrame, wall_ns: int) -> bool:
        """Events of ``frame`` stamped ``frame.t_sent_ns`` (or ``wall_ns``) to every client."""
        geo = self.geometry
        if geo is None:
            return False
        while self._new:
            self._clients.append(self._new.popleft())
        if not len(frame.ids):
            return True
        try:
            x, y, p = geo.pixels(frame.ids)
        except ValueError:
            return False
        t_us = (frame.t_sent_ns or wall_ns) // 1000
        packet = dvstream.event_packet(dvstream.events_array(t_us, x, y, p))
        self.packets_sent += 1
        for c in self._clients:
            c.buf += packet
        self.flush()
        return True

    def pending(self) -> int:
        """Bytes queued for clients and not yet written (the loop calls ``flush`` then)."""
        return sum(len(c.buf) for c in self._clients)

    def flush(self) -> None:
        """Write what each client takes now; drop slow ones and ones that went away."""
        keep = []
        for c in self._clients:
            if c.buf:
                try:
                    n = c.sock.send(c.buf)
                    del c.buf[:n]
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError:
                    self.clients_closed += 1
                    c.sock.close()
                    continue
            if len(c.buf) > self.client_buffer:
                self.slow_clients += 1
                log.warning("%s: a client lagged %d kB behind; dropped", self.url,
                            len(c.buf) // 1024)
                c.sock.close()
                continue
            keep.append(c)
        self._clients = keep

    @property
    def clients(self) -> int:
        """Clients connected now."""
        return len(self._clients) + len(self._new)


class _Client:
    """One connected client: its socket and the bytes it has not taken yet."""

    __slots__ = ("buf", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()


class DvUnixEndpoint(DvEndpoint):
    """dv+unix:///PATH: the same stream over a Unix socket."""

    scheme: ClassVar[str] = "dv+unix"
