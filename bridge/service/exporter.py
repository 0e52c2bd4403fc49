"""The metrics HTTP server: serves a registry's exposition on ``/metrics`` from one thread.

One request at a time, no compression, no thread per request: a scrape is short and the
fewer Python threads compete with the real-time loop for the GIL, the better. It must be
started before the loop raises itself to SCHED_FIFO, so that its thread stays SCHED_OTHER,
and it never touches the loop's state except through the registry's collectors.
"""

from __future__ import annotations

import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import REGISTRY, CollectorRegistry

from bridge.errors import EndpointError

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
REQUEST_TIMEOUT_S = 10.0


class _Server(HTTPServer):
    """An HTTPServer that knows its registry; IPv6 when the host is an IPv6 literal."""

    registry: CollectorRegistry
    scrapes = 0

    def __init__(self, host: str, port: int, registry: CollectorRegistry) -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.registry = registry
        super().__init__((host, port), _Handler)


class _Handler(BaseHTTPRequestHandler):
    """GET /metrics (the exposition) and GET / (a pointer to it); everything else is 404."""

    server: _Server
    timeout = REQUEST_TIMEOUT_S
    protocol_version = "HTTP/1.0"

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
            try:
                body = encoder(self.server.registry)
            except Exception:
                log.exception("metrics collection failed")
                self._reply(500, "text/plain; charset=utf-8", b"collection failed\n")
                return
            self.server.scrapes += 1
            self._reply(200, content_type, body)
        elif path == "/":
            self._reply(200, "text/html; charset=utf-8",
                        b'<html><body><a href="/metrics">spikebridge metrics</a></body></html>\n')
        else:
            self._reply(404, "text/plain; charset=utf-8", b"not found; try /metrics\n")

    def _reply(self, code: int, content_type: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Scrapes are not worth a log line each."""


class MetricsServer:
    """Serves ``registry`` over HTTP on ``host:port`` (port 0 picks a free one)."""

    def __init__(
        self,
        host: str = DEFAULT_HOST,
        port: int = 0,
        registry: CollectorRegistry = REGISTRY,
        *,
        poll_s: float = 0.5,
    ) -> None:
        self._poll_s = poll_s  # how soon close() is noticed; each wake-up takes the GIL once
        self._host = host
        self._port = port
        self._registry = registry
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> tuple[str, int]:
        """Bind and start serving in a daemon thread; EndpointError when the bind is refused."""
        if self._server is not None:
            raise RuntimeError("metrics server already started")
        try:
            self._server = _Server(self._host, self._port, self._registry)
        except OSError as exc:
            raise EndpointError(
                f"metrics server cannot listen on {self._host}:{self._port}: {exc.strerror}"
            ) from None
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(self._poll_s,), name="metrics-http",
            daemon=True,
        )
        self._thread.start()
        host, port = self.address
        log.info("metrics on http://%s:%d/metrics", f"[{host}]" if ":" in host else host, port)
        return host, port

    @property
    def address(self) -> tuple[str, int]:
        """The bound host and port."""
        if self._server is None:
            raise RuntimeError("metrics server not started")
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    @property
    def scrapes(self) -> int:
        """Successful scrapes served so far."""
        return self._server.scrapes if self._server is not None else 0

    def close(self) -> None:
        """Stop serving and release the socket; idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
