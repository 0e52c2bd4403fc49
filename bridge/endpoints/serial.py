"""serial:DEVICE or serial:PYSERIAL-URL: a byte-stream endpoint for boards and event sensors.

The device is opened through pyserial's ``serial_for_url`` (so any pyserial URL works: a path
such as ``/dev/serial/by-id/...``, ``loop://``, ``socket://``, ``rfc2217://``), exclusively
(flock and TIOCEXCL), with ``low_latency`` where the driver has it. Reading never busy-polls:
by default the descriptor sits in the real-time loop's poller and each ``recv`` is one
non-blocking read of what is there; handlers without a descriptor (``loop://``) get one
blocking reader thread that feeds a bounded queue and wakes the poller through a pipe.
Writes never block: they go to a bounded buffer written as the device accepts it, and a send
that does not fit is refused (the caller counts it). A device that disappears makes
``recv``/``send`` raise EndpointError; ``reopen`` then retries on a backoff schedule. The
device's greeting (from the URL's stream format: for an eDVS echo off, event format, biases,
``E+``) is written at the first poll, send or receive after each open, not at open: a sensor
does not start streaming while the processor is still being built.

Never decodes (codecs do), never sleeps, never blocks the loop on the device.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import importlib
import logging
import os
import termios
import threading
from collections import deque
from collections.abc import Mapping
from typing import Any, ClassVar

import serial

from bridge.codecs import STREAM_CODECS
from bridge.codecs.base import parse_bool
from bridge.endpoints.base import Address, Endpoint
from bridge.endpoints.url import EndpointURL
from bridge.errors import ConfigError, EndpointError

log = logging.getLogger("spikebridge.serial")

READ_BYTES = 1 << 16
QUEUE_BYTES = 1 << 20      # reader-thread mode: bytes queued before the oldest are dropped
THREAD_TIMEOUT_S = 0.2     # reader-thread mode: a blocked read wakes this often to check close
# errno values that mean the device itself is gone (unplugged, hung up, driver unbound).
GONE = frozenset({errno.EIO, errno.ENXIO, errno.ENODEV, errno.EBADF, errno.EPIPE})

_PARITY = {"N": serial.PARITY_NONE, "E": serial.PARITY_EVEN, "O": serial.PARITY_ODD,
           "M": serial.PARITY_MARK, "S": serial.PARITY_SPACE}
_STOPBITS = {"1": serial.STOPBITS_ONE, "1.5": serial.STOPBITS_ONE_POINT_FIVE,
             "2": serial.STOPBITS_TWO}


def _int(url: EndpointURL, key: str, text: str, lo: int, hi: int) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        value = lo - 1
    if not lo <= value <= hi:
        raise ConfigError(f"must be an integer in {lo}..{hi}, got {text!r}", key=f"{url}: {key}")
    return value


def _bool(url: EndpointURL, key: str, text: str) -> bool:
    try:
        return parse_bool(text)
    except ValueError as exc:
        raise ConfigError(str(exc), key=f"{url}: {key}") from None


class SerialSettings:
    """The parsed scheme keys of one serial URL (validated, nothing opened)."""

    __slots__ = ("backoff_max_ns", "backoff_ns", "baud", "exclusive", "low_latency", "parity",
                 "reader", "rtscts", "stopbits", "wbuf")

    def __init__(self, url: EndpointURL, options: Mapping[str, str]) -> None:
        opt = options.get
        self.baud = _int(url, "baud", opt("baud", "115200"), 50, 50_000_000)
        parity = opt("parity", "N").upper()
        if parity not in _PARITY:
            raise ConfigError(f"parity must be one of {', '.join(_PARITY)}, got {parity!r}",
                              key=f"{url}: parity")
        self.parity = _PARITY[parity]
        stop = opt("stopbits", "1")
        if stop not in _STOPBITS:
            raise ConfigError(f"stopbits must be 1, 1.5 or 2, got {stop!r}",
                              key=f"{url}: stopbits")
        self.stopbits = _STOPBITS[stop]
        self.rtscts = _bool(url, "rtscts", opt("rtscts", "0"))
        self.exclusive = _bool(url, "exclusive", opt("exclusive", "1"))
        self.low_latency = _bool(url, "low_latency", opt("low_latency", "1"))
        self.backoff_ns = _int(url, "backoff", opt("backoff", "50"), 1, 60_000) * 1_000_000
        self.backoff_max_ns = _int(
            url, "backoff_max", opt("backoff_max", "500"), 1, 600_000
        ) * 1_000_000
        self.wbuf = _int(url, "wbuf", opt("wbuf", "65536"), 64, 1 << 26)
        self.reader = opt("reader", "auto")
        if self.reader not in ("auto", "fd", "thread"):
            raise ConfigError(f"reader must be auto, fd or thread, got {self.reader!r}",
                              key=f"{url}: reader")

    def key(self) -> tuple[object, ...]:
        """What two endpoints sharing one device must agree on."""
        return (self.baud, self.parity, self.stopbits, self.rtscts, self.exclusive, self.reader)


class _Port:
    """One open device, shared by the input and the output endpoint that name it."""

    def __init__(self, target: str, settings: SerialSettings) -> None:
        self.target = target
        self.settings = settings
        self.ser: Any = None
        self.fd = -1
        self.gen = 0                      # bumped on every (re)open
        self.users: dict[int, SerialEndpoint] = {}
        self.wbuf = bytearray()
        self.failed: str | None = None    # why the device went away (None while healthy)
        self.retry_at: int | None = None
        self.delay_ns = settings.backoff_ns
        self.threaded = False
        self.lost_bytes = 0               # accepted for sending, then lost with the device
        self.queue_dropped = 0            # reader-thread mode: oldest bytes dropped, queue full
        self.low_latency: bool | None = None
        self.greeted = False              # the users' greetings went out since the last open
        # Reader-thread mode only.
        self._lock = threading.Lock()
        self._chunks: deque[bytes] = deque()
        self._queued = 0
        self._wake_r = self._wake_w = -1
        self._thread: threading.Thread | None = None
        self._writer: threading.Thread | None = None
        self._cond = threading.Condition(self._lock)
        self._stopping = False
        self._have_port = threading.Event()

    # -- open and close -----------------------------------------------------------------

    def open_device(self) -> None:
        """Open and configure the device; the greetings go out on first use (``greet``)."""
        st = self.settings
        if self.ser is not None:
            self.close_device(self.failed)
        try:
            ser = serial.serial_for_url(
                self.target, do_not_open=True, baudrate=st.baud, parity=st.parity,
                stopbits=st.stopbits, rtscts=st.rtscts, timeout=0, write_timeout=0,
                exclusive=st.exclusive,
            )
            ser.open()
        except (serial.SerialException, OSError, ValueError) as exc:
            raise EndpointError(self._explain(exc)) from None
        fd = -1
        if st.reader != "thread":
            try:
                fd = ser.fileno()
            except (OSError, AttributeError, ValueError):
                fd = -1
            if fd < 0 and st.reader == "fd":
                ser.close()
                raise EndpointError(f"serial:{self.target}: reader=fd, but this port has no "
                                    "descriptor to poll; use reader=thread")
        if fd >= 0:
            os.set_blocking(fd, False)
            # pyserial sets VMIN=0 for timeout=0, and then an empty read returns 0 bytes,
            # which is indistinguishable from a hang-up. With VMIN=1 on a non-blocking
            # descriptor "nothing yet" is EAGAIN and 0 bytes means the device is gone.
            with contextlib.suppress(termios.error, OSError):
                attrs = termios.tcgetattr(fd)
                attrs[6][termios.VMIN], attrs[6][termios.VTIME] = 1, 0
                termios.tcsetattr(fd, termios.TCSANOW, attrs)
            if st.exclusive:
                try:
                    fcntl.ioctl(fd, termios.TIOCEXCL)
                except OSError as exc:
                    log.debug("serial:%s: TIOCEXCL refused (%s)", self.target, exc.strerror)
            if st.low_latency and hasattr(ser, "set_low_latency_mode"):
                try:
                    ser.set_low_latency_mode(True)
                    self.low_latency = True
                except (ValueError, OSError) as exc:
                    self.low_latency = False
                    log.debug("serial:%s: low_latency not supported by the driver (%s); "
                              "ptys and some adapters refuse it", self.target, exc)
        if fd < 0:
            ser.timeout = THREAD_TIMEOUT_S
            ser.write_timeout = None  # the writer thread may block; the loop never does
        with self._lock:
            self.ser, self.fd = ser, fd
            self.threaded = fd < 0
            self.gen += 1
            self.failed = None
            self.greeted = False
            self.wbuf.clear()
        if self.threaded:
            self._start_threads()

    def _explain(self, exc: BaseException) -> str:
        code = getattr(exc, "errno", None)
        text = str(exc)
        if code == errno.ENOENT or "No such file" in text:
            hint = "no such device (unplugged? prefer /dev/serial/by-id/... names)"
        elif code == errno.EACCES or "Permission denied" in text:
            hint = "permission denied (join the dialout group, or install deploy/udev rules)"
        elif code in (errno.EAGAIN, errno.EBUSY) or "exclusively lock" in text:
            hint = "the port is in use by another program (it is opened exclusively)"
        else:
            hint = text
        return f"serial:{self.target}: cannot open: {hint}"

    def close_device(self, why: str | None) -> None:
        """Close the device; ``why`` (not None) marks it failed so users see EndpointError."""
        ser, fd = self.ser, self.fd
        self.ser, self.fd = None, -1
        self._have_port.clear()
        with self._lock:
            if why is not None:
                self.failed = why
                self.lost_bytes += len(self.wbuf)
            self.wbuf.clear()
        if ser is None:
            return
        if fd >= 0 and self.settings.exclusive:
            # TIOCEXCL outlives our descriptor while anyone else holds the tty open (an
            # emulator holds its own side): clear it, or our own reopen would be refused.
            with contextlib.suppress(OSError):
                fcntl.ioctl(fd, termios.TIOCNXCL)
        with contextlib.suppress(Exception):
            ser.close()

    def shutdown(self) -> None:
        """Close for good: stop the reader thread and release the wake pipe."""
        self._stopping = True
        self.close_device(None)
        self._have_port.set()
        with self._cond:
            self._cond.notify_all()
        for thread in (self._thread, self._writer):
            if thread is not None:
                thread.join(timeout=2 * THREAD_TIMEOUT_S + 1)
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._wake_r = self._wake_w = -1

    def fail(self, why: str) -> EndpointError:
        """Mark the device gone, close it, and return the error to raise."""
        if self.failed is None:
            log.warning("serial:%s: device gone: %s", self.target, why)
        self.close_device(why)
        return EndpointError(f"serial:{self.target}: {why}")

    # -- reading ------------------------------------------------------------------------

    def readable_fd(self) -> int:
        """What the loop polls: the device, or the reader thread's wake pipe."""
        if self.threaded:
            return self._wake_r
        if self.fd < 0:
            raise EndpointError(f"serial:{self.target} is not open")
        return self.fd

    def read(self, view: memoryview) -> int:
        """Bytes read into ``view`` (0: nothing pending); EndpointError when the device is gone."""
        if self.failed is not None:
            raise EndpointError(f"serial:{self.target}: {self.failed}")
        if self.threaded:
            return self._take(view)
        try:
            n = os.readv(self.fd, [view])
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError as exc:
            if exc.errno in GONE:
                raise self.fail(f"read failed: {exc.strerror}") from None
            raise self.fail(f"read failed: {exc}") from None
        if n == 0:
            # poll() said readable, the read returned nothing: hang-up, the device is gone.
            raise self.fail("device reports readiness to read but returned no data")
        return n

    def discard_input(self) -> int:
        """Read and drop what an output-only device sent (acks, heartbeats, replies)."""
        if self.threaded or self.fd < 0:
            return 0
        total = 0
        buf = bytearray(4096)
        for _ in range(64):
            n = self.read(memoryview(buf))
            if not n:
                break
            total += n
        return total

    def _start_threads(self) -> None:
        if self._wake_r < 0:
            self._wake_r, self._wake_w = os.pipe()
            os.set_blocking(self._wake_r, False)
            os.set_blocking(self._wake_w, False)
        self._have_port.set()
        # Started once, at the first open, and kept across reopens: the loop starts no
        # thread after it has raised its priority.
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._reader, name=f"serial-reader:{self.target}", daemon=True
            )
            self._writer = threading.Thread(
                target=self._write_loop, name=f"serial-writer:{self.target}", daemon=True
            )
            self._thread.start()
            self._writer.start()

    def _write_loop(self) -> None:
        while not self._stopping:
            with self._cond:
                while not self.wbuf and not self._stopping:
                    self._cond.wait(THREAD_TIMEOUT_S)
                data = bytes(self.wbuf)
                self.wbuf.clear()
                ser = self.ser
            if not data:
                continue
            if ser is None:
                self.lost_bytes += len(data)
                continue
            try:
                ser.write(data)
            except Exception as exc:  # pyserial raises several types for a vanished port
                self.lost_bytes += len(data)
                if ser is self.ser and not self._stopping:
                    self.failed = f"write failed: {exc}"
                    self._signal()

    def _reader(self) -> None:
        while not self._stopping:
            ser = self.ser
            if ser is None or self.failed is not None:
                self._have_port.wait(THREAD_TIMEOUT_S)
                continue
            try:
                data = ser.read(max(1, ser.in_waiting))
            except Exception as exc:  # pyserial raises several types for a vanished port
                if ser is self.ser and not self._stopping:
                    self.failed = f"read failed: {exc}"
                    self._have_port.clear()
                    self._signal()
                continue
            if data:
                with self._lock:
                    self._chunks.append(data)
                    self._queued += len(data)
                    while self._queued > QUEUE_BYTES:
                        old = self._chunks.popleft()
                        self._queued -= len(old)
                        self.queue_dropped += len(old)
                self._signal()

    def _signal(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"\0")

    def _take(self, view: memoryview) -> int:
        with contextlib.suppress(OSError):
            os.read(self._wake_r, 4096)
        n = 0
        with self._lock:
            while self._chunks and n + len(self._chunks[0]) <= len(view):
                chunk = self._chunks.popleft()
                view[n:n + len(chunk)] = chunk
                n += len(chunk)
            if self._chunks and n == 0:  # one chunk larger than the view: split it
                chunk = self._chunks.popleft()
                view[:] = chunk[:len(view)]
                self._chunks.appendleft(chunk[len(view):])
                n = len(view)
            self._queued -= n
            if self._chunks:
                self._signal()  # more is queued: stay readable for the next poll
        return n

    # -- writing ------------------------------------------------------------------------

    def flush(self) -> None:
        """Write as much of the buffer as the device takes now; EndpointError if it is gone."""
        wbuf = self.wbuf
        if not wbuf or self.ser is None:
            return
        if self.threaded:
            with self._cond:
                self._cond.notify()
            return
        while wbuf:
            try:
                n = os.write(self.fd, wbuf)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                raise self.fail(f"write failed: {exc.strerror}") from None
            del wbuf[:n]

    def greet(self) -> None:
        """Write every user's greeting once per open (an eDVS starts streaming on it)."""
        if self.greeted or self.ser is None:
            return
        self.greeted = True
        with self._lock:
            for user in self.users.values():
                self.wbuf += user.greeting
        self.flush()

    def write(self, data: bytes) -> bool:
        """Queue ``data`` whole and flush; False (nothing queued) when it does not fit."""
        if self.failed is not None or self.ser is None:
            raise EndpointError(f"serial:{self.target}: {self.failed or 'not open'}")
        wbuf = self.wbuf
        if wbuf:
            self.flush()
        with self._lock:
            if len(wbuf) + len(data) > self.settings.wbuf:
                return False
            wbuf += data
        self.flush()
        return True


_ports: dict[str, _Port] = {}
_ports_lock = threading.Lock()


def _target(url: EndpointURL) -> str:
    target = url.target
    if "://" in target:
        return target
    return os.path.abspath(target)


def _greeting(url: EndpointURL, role: str) -> bytes:
    """The device's start-up lines for this role, from the URL's stream format, if any."""
    fmt = url.params.get("format")
    entry = STREAM_CODECS.get(fmt or "")
    if entry is None:
        return b""
    module, _, attr = entry.partition(":")
    cls = getattr(importlib.import_module(module), attr)
    options = {k: v for k, v in url.params.items() if k in cls.OPTIONS}
    try:
        codec = cls.from_options(0, options)
    except (KeyError, ValueError):
        return b""  # endpoint_spec reports bad codec options before anything is opened
    try:
        codec.check_role(role)
    except ValueError as exc:
        raise ConfigError(str(exc), key=str(url)) from None
    greeting: bytes = codec.greeting(role)
    return greeting


class SerialEndpoint(Endpoint):
    """A serial device or pyserial URL; an input and an output naming it share one open port."""

    scheme: ClassVar[str] = "serial"
    datagram: ClassVar[bool] = False
    KEYS: ClassVar[Mapping[str, str]] = {
        "baud": "line rate in bit/s (default 115200; eDVS boards run 4000000 or 12000000)",
        "parity": "N, E, O, M or S (default N)",
        "stopbits": "1, 1.5 or 2 (default 1)",
        "rtscts": "RTS/CTS hardware flow control, 1 or 0 (default 0)",
        "exclusive": "lock the port against other programs (flock + TIOCEXCL), default 1",
        "low_latency": "ask the driver for ASYNC_LOW_LATENCY, default 1 (skipped if unsupported)",
        "backoff": "first reopen delay after an unplug, ms (default 50, doubling)",
        "backoff_max": "longest reopen delay, ms (default 500)",
        "wbuf": "output buffer bytes; a send that does not fit is refused (default 65536)",
        "reader": "fd (poll the device), thread (reader thread + bounded queue) or auto",
    }
    IN_COUNTERS: ClassVar[Mapping[str, str]] = {"reconnects": "the port reopened after it went"}
    OUT_COUNTERS: ClassVar[Mapping[str, str]] = IN_COUNTERS

    def __init__(self, url: EndpointURL, role: str, options: Mapping[str, str]) -> None:
        super().__init__(url, role, options)
        self.settings = SerialSettings(url, options)
        self.target = _target(url)
        self.greeting = _greeting(url, role)
        self.reconnects = 0
        self._port: _Port | None = None
        self._gen = 0
        self._buf = bytearray(READ_BYTES)
        self._view = memoryview(self._buf)
        self.discarded = 0  # bytes an output-only device sent that nobody reads
        self._fd = -1

    # -- lifecycle ----------------------------------------------------------------------

    def open(self) -> None:
        """Open the device (or join the port the other direction opened); EndpointError."""
        with _ports_lock:
            port = _ports.get(self.target)
            if port is not None and port.settings.key() != self.settings.key():
                raise ConfigError(
                    "an input and an output on one device must use the same baud, parity, "
                    "stopbits, rtscts, exclusive and reader keys", key=str(self.url))
            fresh = port is None
            if port is None:
                port = _Port(self.target, self.settings)
            port.users[id(self)] = self
            try:
                if fresh:
                    port.open_device()
                elif port.greeted and self.greeting:
                    port.write(self.greeting)
            except BaseException:
                del port.users[id(self)]
                if fresh:
                    port.shutdown()
                raise
            _ports[self.target] = port
        self._port = port
        self._gen = port.gen

    def close(self) -> None:
        """Leave the port; the last user closes the device. Idempotent."""
        port, self._port = self._port, None
        if port is None:
            return
        with _ports_lock:
            port.users.pop(id(self), None)
            if not port.users:
                port.shutdown()
                if _ports.get(self.target) is port:
                    del _ports[self.target]

    def _live(self) -> _Port:
        port = self._port
        if port is None:
            raise EndpointError(f"{self.url} is not open")
        if port.failed is not None:
            raise EndpointError(f"serial:{self.target}: {port.failed}")
        if port.gen != self._gen:
            # The other direction reopened the device: this side saw the unplug late.
            raise EndpointError(f"serial:{self.target}: device was reopened")
        return port

    def reopen(self, now_ns: int) -> bool:
        """Retry the device on a backoff schedule (``backoff`` doubling to ``backoff_max``)."""
        port = self._port
        if port is None:
            return False
        if port.ser is not None and port.failed is None:
            self._gen = port.gen  # the other direction already brought it back
            return True
        if port.retry_at is None:
            port.retry_at = now_ns  # the first try is immediate: a glitch may be over
        if now_ns < port.retry_at:
            return False
        try:
            port.open_device()
        except (EndpointError, ConfigError) as exc:
            port.retry_at = now_ns + port.delay_ns
            port.delay_ns = min(2 * port.delay_ns, self.settings.backoff_max_ns)
            log.debug("%s; next try in %.0f ms", exc, (port.retry_at - now_ns) / 1e6)
            return False
        port.retry_at = None
        port.delay_ns = self.settings.backoff_ns
        self.reconnects += 1
        self._gen = port.gen
        log.info("serial:%s: reopened (reconnect %d)", self.target, self.reconnects)
        return True

    # -- I/O ----------------------------------------------------------------------------

    def fileno(self) -> int:
        """The descriptor the loop polls (the device, or the reader thread's wake pipe).

        While the device is down this is the descriptor it had, so that the loop can
        unregister it; EndpointError only before the first open.
        """
        port = self._port
        if port is not None and port.failed is None and port.gen == self._gen:
            self._fd = port.readable_fd()
            port.greet()
        if self._fd < 0:
            raise EndpointError(f"{self.url} is not open")
        return self._fd

    def recv(self) -> tuple[memoryview, Address] | None:
        """The bytes available now (valid until the next recv), or None; never blocks."""
        port = self._live()
        if not port.greeted:
            port.greet()
        elif port.wbuf:
            port.flush()
        n = port.read(self._view)
        if not n:
            return None
        return self._view[:n], None

    def send(self, data: bytes) -> bool:
        """Queue ``data`` whole without blocking; False when the output buffer is full."""
        port = self._live()
        port.greet()
        if self.role == "out" and not any(u.role == "in" for u in port.users.values()):
            self.discarded += port.discard_input()
        if not data:
            return True
        return port.write(data)

    def flush(self) -> None:
        """Write buffered bytes the device can take now (call when ``pending`` is non-zero)."""
        self._live().flush()

    def pending(self) -> int:
        """Bytes accepted by ``send`` and not yet written to the device."""
        port = self._port
        return len(port.wbuf) if port is not None else 0

    @property
    def lost_bytes(self) -> int:
        """Bytes accepted by ``send`` and then lost because the device went away."""
        return self._port.lost_bytes if self._port is not None else 0

    def describe(self) -> str:
        """URL, device and how it is read."""
        port = self._port
        if port is None or port.ser is None:
            return str(self.url)
        how = "reader thread" if port.threaded else "polled fd"
        lat = {True: ", low_latency", False: ", no low_latency", None: ""}[port.low_latency]
        return f"{self.url} ({self.settings.baud} baud, {how}{lat})"
