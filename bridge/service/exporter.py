"""The metrics HTTP server: serves a registry's exposition on ``/metrics`` from one thread.

One thread multiplexes every connection with a selector, so no client can hold the endpoint:
sockets are non-blocking, each connection has a deadline for its request and one for its
response, a request larger than ``MAX_REQUEST`` is refused, and beyond ``max_connections``
the oldest connection still sending its request is closed to make room. The thread count is
fixed (one), whatever the number of clients: the real-time loop competes with the same
single thread for the interpreter lock whether one or a thousand connections are open.

It must be started before the loop raises itself to SCHED_FIFO, so that its thread stays
SCHED_OTHER; it starts no thread itself, and it never touches the loop's state except through
the registry's collectors. It never blocks on a client.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import threading
import time
from collections.abc import Callable

from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import REGISTRY, CollectorRegistry

from bridge.errors import EndpointError

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
REQUEST_TIMEOUT_S = 2.0    # from accept to the end of the request's headers
RESPONSE_TIMEOUT_S = 5.0   # from the end of the request to the last byte written
MAX_CONNECTIONS = 256
MAX_REQUEST = 8192         # request line and headers; Prometheus sends about 300 bytes
ACCEPT_BATCH = 64          # connections accepted per wake-up
SWEEP_S = 0.1              # deadlines are checked this often (a scan of every connection)
_READ = selectors.EVENT_READ
_WRITE = selectors.EVENT_WRITE
_INDEX = b'<html><body><a href="/metrics">spikebridge metrics</a></body></html>\n'
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            408: "Request Timeout", 431: "Request Header Fields Too Large",
            500: "Internal Server Error"}


class _Conn:
    """One client connection: bytes read so far, bytes left to write, and its deadline."""

    __slots__ = ("deadline", "inbuf", "opened", "out", "sock", "writing")

    def __init__(self, sock: socket.socket, now: float, timeout_s: float) -> None:
        self.sock = sock
        self.opened = now
        self.deadline = now + timeout_s
        self.inbuf = bytearray()
        self.out = memoryview(b"")
        self.writing = False


def parse_request(head: bytes) -> tuple[str, str, dict[str, str]] | None:
    """(method, path, lower-cased headers) of an HTTP/1.x request head; None when malformed."""
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
        return None
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        return None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            return None
        headers[name.strip().lower()] = value.strip()
    return parts[0], parts[1].split("?", 1)[0], headers


def respond(method: str, path: str, headers: dict[str, str],
            exposition: Callable[[str], tuple[bytes, str]]) -> tuple[int, bytes, str, bool]:
    """(status, body, content type, send the body) for one request; ``exposition(accept)``."""
    if method not in ("GET", "HEAD"):
        return 405, b"only GET and HEAD\n", "text/plain; charset=utf-8", True
    with_body = method == "GET"
    if path == "/metrics":
        try:
            body, ctype = exposition(headers.get("accept", ""))
        except Exception:
            log.exception("metrics collection failed")
            return 500, b"collection failed\n", "text/plain; charset=utf-8", with_body
        return 200, body, ctype, with_body
    if path == "/":
        return 200, _INDEX, "text/html; charset=utf-8", with_body
    return 404, b"not found; try /metrics\n", "text/plain; charset=utf-8", with_body


def _response(code: int, body: bytes, ctype: str, with_body: bool, extra: str = "") -> bytes:
    head = (f"HTTP/1.1 {code} {_REASONS.get(code, 'Error')}\r\n"
            f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n{extra}"
            "Connection: close\r\n\r\n").encode("latin-1")
    return head + body if with_body else head


class MetricsServer:
    """Serves ``registry`` over HTTP on ``host:port`` (port 0 picks a free one)."""

    def __init__(
        self,
        host: str = DEFAULT_HOST,
        port: int = 0,
        registry: CollectorRegistry = REGISTRY,
        *,
        poll_s: float = 0.5,
        max_connections: int = MAX_CONNECTIONS,
        request_timeout_s: float = REQUEST_TIMEOUT_S,
        response_timeout_s: float = RESPONSE_TIMEOUT_S,
        sock: socket.socket | None = None,
    ) -> None:
        if max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, got {max_connections}")
        if not (request_timeout_s > 0 and response_timeout_s > 0):
            raise ValueError("request and response timeouts must be > 0 s")
        self._request_s = request_timeout_s
        self._response_s = response_timeout_s
        self._poll_s = poll_s  # the longest the thread sleeps with connections open
        self._host = host
        self._port = port
        self._registry = registry
        self._max = max_connections
        self._listener: socket.socket | None = None
        self._given = sock  # an already listening socket to serve instead of binding
        self._thread: threading.Thread | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._stop = False
        self._conns: dict[int, _Conn] = {}
        self.scrapes = 0    # successful /metrics responses
        self.evicted = 0    # connections closed to stay under max_connections
        self.timed_out = 0  # connections closed at their deadline

    def start(self) -> tuple[str, int]:
        """Bind and start serving in a daemon thread; EndpointError when the bind is refused."""
        if self._listener is not None:
            raise RuntimeError("metrics server already started")
        if self._given is not None:
            sock = self._given
        else:
            family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((self._host, self._port))
                sock.listen(128)
            except OSError as exc:
                sock.close()
                raise EndpointError(
                    f"metrics server cannot listen on {self._host}:{self._port}: {exc.strerror}"
                ) from None
        sock.setblocking(False)
        self._listener = sock
        self._thread = threading.Thread(target=self._serve, name="metrics-http", daemon=True)
        self._thread.start()
        host, port = self.address
        if self._given is None:
            log.info("metrics on http://%s:%d/metrics", f"[{host}]" if ":" in host else host,
                     port)
        return host, port

    @property
    def address(self) -> tuple[str, int]:
        """The bound host and port."""
        if self._listener is None:
            raise RuntimeError("metrics server not started")
        host, port = self._listener.getsockname()[:2]
        return str(host), int(port)

    @property
    def connections(self) -> int:
        """Client connections open now."""
        return len(self._conns)

    def close(self) -> None:
        """Stop serving and release the socket; idempotent."""
        listener, self._listener = self._listener, None
        if listener is None:
            return
        self._stop = True
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
        listener.close()
        self._wake_r.close()
        self._wake_w.close()

    # -- the server thread ----------------------------------------------------------------

    def _exposition(self, accept: str) -> tuple[bytes, str]:
        encoder, ctype = choose_encoder(accept)
        return encoder(self._registry), ctype

    def _serve(self) -> None:
        listener = self._listener
        assert listener is not None
        sel = selectors.DefaultSelector()
        sel.register(listener, _READ, None)
        sel.register(self._wake_r, _READ, None)
        next_sweep = 0.0
        try:
            while not self._stop:
                # Work per event is O(1); the O(connections) deadline scan runs on a timer,
                # so a busy client costs the same whether 1 or 256 connections are open.
                timeout = None
                if self._conns:
                    timeout = max(0.0, min(self._poll_s, next_sweep - time.monotonic()))
                for key, mask in sel.select(timeout):
                    if key.fileobj is listener:
                        self._accept(sel, listener)
                    elif key.data is None:
                        continue  # the wake socket: the loop condition sees _stop
                    elif mask & _READ and not key.data.writing:
                        self._read(sel, key.data)
                    elif mask & _WRITE:
                        self._write(sel, key.data)
                now = time.monotonic()
                if now >= next_sweep:
                    self._expire(sel, now)
                    next_sweep = now + SWEEP_S
        except Exception:  # pragma: no cover - a bug here must not go unseen
            log.exception("metrics server failed; scrapes are no longer answered")
        finally:
            for conn in list(self._conns.values()):
                self._drop(sel, conn)
            sel.close()

    def _accept(self, sel: selectors.BaseSelector, listener: socket.socket) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                sock, _addr = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and the like: keep serving who is connected
                log.warning("metrics server cannot accept: %s", exc.strerror)
                return
            sock.setblocking(False)
            if len(self._conns) >= self._max:
                self._evict(sel)
            conn = _Conn(sock, time.monotonic(), self._request_s)
            self._conns[sock.fileno()] = conn
            sel.register(sock, _READ, conn)

    def _evict(self, sel: selectors.BaseSelector) -> None:
        """Close the oldest connection still sending its request (else the oldest one)."""
        conns = list(self._conns.values())
        reading = [c for c in conns if not c.writing] or conns
        self._drop(sel, min(reading, key=lambda c: c.opened))
        self.evicted += 1

    def _read(self, sel: selectors.BaseSelector, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(sel, conn)
            return
        conn.inbuf += data
        end = conn.inbuf.find(b"\r\n\r\n")
        if end < 0:
            if len(conn.inbuf) > MAX_REQUEST:
                self._reply(sel, conn, _response(431, b"request too large\n",
                                                 "text/plain; charset=utf-8", True))
            return
        request = parse_request(bytes(conn.inbuf[:end]))
        if request is None:
            reply = _response(400, b"bad request\n", "text/plain; charset=utf-8", True)
        else:
            method, path, headers = request
            code, body, ctype, with_body = respond(method, path, headers, self._exposition)
            extra = "Allow: GET, HEAD\r\n" if code == 405 else ""
            reply = _response(code, body, ctype, with_body, extra)
            if code == 200 and path == "/metrics":
                self.scrapes += 1
        self._reply(sel, conn, reply)

    def _reply(self, sel: selectors.BaseSelector, conn: _Conn, data: bytes) -> None:
        conn.writing = True
        conn.out = memoryview(data)
        conn.deadline = time.monotonic() + self._response_s
        sel.modify(conn.sock, _WRITE, conn)
        self._write(sel, conn)  # most responses fit in the socket buffer: done at once

    def _write(self, sel: selectors.BaseSelector, conn: _Conn) -> None:
        try:
            sent = conn.sock.send(conn.out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(sel, conn)
            return
        conn.out = conn.out[sent:]
        if not conn.out:
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_WR)
            self._drop(sel, conn)

    def _expire(self, sel: selectors.BaseSelector, now: float) -> None:
        for conn in [c for c in self._conns.values() if c.deadline <= now]:
            self.timed_out += 1
            self._drop(sel, conn)

    def _drop(self, sel: selectors.BaseSelector, conn: _Conn) -> None:
        self._conns.pop(conn.sock.fileno(), None)
        with contextlib.suppress(KeyError, ValueError, OSError):
            sel.unregister(conn.sock)
        conn.sock.close()
