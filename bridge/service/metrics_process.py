"""The metrics exporter in a process of its own, so that scrapes never hold the loop's interpreter.

Formatting an exposition takes milliseconds of Python, under the interpreter lock: with the
loop thread at SCHED_FIFO it waits for that lock, and its step lateness p99 grew 18-60x at 10
scrapes a second (docs/operations.md). So the daemon keeps only a snapshot thread: on each
scrape it copies the hot-path counters (plain ints and lists) as JSON and sends them down a
socketpair. A child process owns the HTTP server (bridge.service.exporter), builds the metric
families from the snapshot, adds the daemon's process_* metrics (read from /proc by its pid)
and formats the exposition. Connections, slow clients and formatting all live there.

The parent binds the listening socket itself (a taken port is the daemon's exit 2) and hands
it over; the parent terminates the child when it closes, and the child exits by itself when
it is re-parented (the daemon died). The snapshot thread and the child are started before
the loop raises itself to SCHED_FIFO. The thread never blocks the loop: it waits in recv
(without the lock), never writes to the stats, and never unpickles or evaluates anything.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import os
import select
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from types import SimpleNamespace
from typing import Any

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import CollectorRegistry

from bridge.engine.stats import BridgeStats, EndpointStats, Histogram
from bridge.errors import EndpointError
from bridge.service.exporter import DEFAULT_HOST, MetricsServer
from bridge.service.metrics import BridgeCollector

log = logging.getLogger(__name__)

_ASK = struct.Struct("!cI")     # b"?" and the request's number
_REPLY = struct.Struct("!II")   # the request's number and the JSON's length
SNAPSHOT_TIMEOUT_S = 2.0  # a daemon that cannot answer this fast is reported as a failed scrape
START_TIMEOUT_S = 30.0
BOOKS_TRIES = 100       # copies of one input's counters before a torn one is exported as is
BOOKS_RETRY_S = 0.0002  # between two copies: the loop finishes the frame it is booking


# -- the snapshot (daemon side) -----------------------------------------------------------------


def _plain(value: Any) -> Any:
    """``value`` as JSON-able data: Histograms and EndpointStats become tagged dicts."""
    if value is None or isinstance(value, int | float | str):
        return value
    if isinstance(value, Histogram):
        return {"__hist__": [list(value.edges_ns), list(value.counts), value.sum_ns, value.count]}
    if isinstance(value, EndpointStats):
        return {"__ep__": {n: _plain(getattr(value, n)) for n in EndpointStats.__slots__}}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):  # dicts, and live views such as endpoint counters
        return {str(k): _plain(v) for k, v in list(value.items())}
    return None  # nothing else is exported


def _unplain(value: Any) -> Any:
    if isinstance(value, list):
        return [_unplain(v) for v in value]
    if not isinstance(value, dict):
        return value
    if "__hist__" in value:
        edges, counts, sum_ns, count = value["__hist__"]
        h = Histogram.__new__(Histogram)
        h.edges_ns, h.counts, h.sum_ns, h.count = tuple(edges), counts, sum_ns, count
        return h
    if "__ep__" in value:
        e = EndpointStats.__new__(EndpointStats)
        for name, v in value["__ep__"].items():
            setattr(e, name, _unplain(v))
        return e
    return {k: _unplain(v) for k, v in value.items()}


def _books(ep: EndpointStats) -> Any:
    """An input's counters copied between two frames, so that its books balance.

    The loop books a frame in two steps (received, then accepted or a drop reason), and this
    thread may hold the interpreter between them: such a copy shows one frame received and
    neither accepted nor dropped. Copy again, after letting the loop finish its frame, until
    the books balance; a copy that still does not after BOOKS_TRIES is exported as it is
    (books that never balance are a bug to show, not to hide).
    """
    doc = _plain(ep)
    for _ in range(BOOKS_TRIES):
        fields = doc["__ep__"]
        if fields["frames"] == fields["accepted"] + sum(fields["drops"]):
            break
        time.sleep(BOOKS_RETRY_S)  # without the interpreter lock: the loop runs on
        doc = _plain(ep)
    return doc


def snapshot(stats: BridgeStats) -> bytes:
    """The counters of ``stats`` and the interpreter's GC stats, now, as JSON bytes.

    JSON, not pickle: nothing that crosses a socket is unpickled in this project.
    """
    doc: dict[str, Any] = {}
    for name in BridgeStats.__slots__:
        value = getattr(stats, name)
        if name in ("inputs", "outputs"):
            doc[name] = []
            for ep in list(value):  # let go of the interpreter between endpoints
                doc[name].append(_books(ep) if name == "inputs" else _plain(ep))
                os.sched_yield()
        elif name != "recorder":
            doc[name] = _plain(value)
    rec = stats.recorder
    doc["recorder"] = None if rec is None else {
        "frames_written": rec.frames_written, "bytes_written": rec.bytes_written,
        "files": rec.files, "write_errors": rec.write_errors,
        "dropped_frames": rec.dropped_frames, "lost_frames": rec.lost_frames,
        "paused": rec.paused is not None,
    }
    return json.dumps({"stats": doc, "gc": gc.get_stats()}, separators=(",", ":")).encode()


def restore(data: bytes) -> tuple[BridgeStats, list[dict[str, int]]]:
    """A BridgeStats holding the values of a ``snapshot``, and the GC stats."""
    doc = json.loads(data)
    st = BridgeStats.__new__(BridgeStats)
    for name, value in doc["stats"].items():
        if name in BridgeStats.__slots__:
            setattr(st, name, _unplain(value))
    rec = doc["stats"].get("recorder")
    st.recorder = None if rec is None else SimpleNamespace(
        **{**rec, "paused": True if rec["paused"] else None})
    return st, list(doc["gc"])


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError("snapshot socket closed")
        buf += chunk
    return bytes(buf)


class MetricsProcess:
    """Serves ``stats`` on ``host:port`` from a child process (port 0 picks a free one)."""

    def __init__(self, host: str = DEFAULT_HOST, port: int = 0,
                 stats: BridgeStats | None = None) -> None:
        self._host = host
        self._port = port
        self._stats = stats if stats is not None else BridgeStats()
        self._sock: socket.socket | None = None
        self._child: subprocess.Popen[bytes] | None = None
        self._thread: threading.Thread | None = None
        self._listen: socket.socket | None = None
        self.scrapes = 0  # snapshots asked for (one per /metrics request)

    def start(self) -> tuple[str, int]:
        """Bind, start the child and the snapshot thread; EndpointError when the bind fails."""
        if self._child is not None:
            raise RuntimeError("metrics process already started")
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        listen = socket.socket(family, socket.SOCK_STREAM)
        try:
            listen.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listen.bind((self._host, self._port))
            listen.listen(128)
        except OSError as exc:
            listen.close()
            raise EndpointError(
                f"metrics server cannot listen on {self._host}:{self._port}: {exc.strerror}"
            ) from None
        ours, theirs = socket.socketpair()
        cmd = [sys.executable, "-m", "bridge.service.metrics_process",
               "--listen-fd", str(listen.fileno()), "--snapshot-fd", str(theirs.fileno()),
               "--pid", str(os.getpid())]
        try:
            self._child = subprocess.Popen(cmd, pass_fds=(listen.fileno(), theirs.fileno()),
                                           stdin=subprocess.DEVNULL)
        except OSError as exc:
            listen.close()
            ours.close()
            theirs.close()
            raise EndpointError(f"cannot start the metrics process: {exc.strerror}") from None
        theirs.close()
        self._listen = listen  # kept open for ``address``; the child serves it
        self._sock = ours
        ready = select.select([ours], [], [], START_TIMEOUT_S)[0]
        greeting = ours.recv(1) if ready else b""
        if greeting != b"R":
            child = self._child
            code = child.poll() if child is not None else None
            self.close()
            why = (f"it exited with code {code}" if code is not None else
                   f"no answer in {START_TIMEOUT_S:g} s" if not ready else f"it said {greeting!r}")
            raise EndpointError(f"the metrics process did not start: {why}")
        self._thread = threading.Thread(target=self._serve, name="metrics-snapshot", daemon=True)
        self._thread.start()
        host, port = self.address
        log.info("metrics on http://%s:%d/metrics", f"[{host}]" if ":" in host else host, port)
        return host, port

    @property
    def address(self) -> tuple[str, int]:
        """The bound host and port."""
        if self._listen is None:
            raise RuntimeError("metrics process not started")
        host, port = self._listen.getsockname()[:2]
        return str(host), int(port)

    @property
    def pid(self) -> int | None:
        """The child's pid while it runs."""
        return self._child.pid if self._child is not None else None

    def _serve(self) -> None:
        sock = self._sock
        assert sock is not None
        try:
            while True:
                ask, number = _ASK.unpack(_recv_exact(sock, _ASK.size))  # waits unlocked
                if ask != b"?":
                    return
                self.scrapes += 1  # before the answer: a client may count on it once answered
                data = snapshot(self._stats)
                sock.sendall(_REPLY.pack(number, len(data)) + data)
        except (OSError, EOFError):
            return

    def close(self) -> None:
        """Stop the child and the thread and release the port; idempotent."""
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        child, self._child = self._child, None
        if child is not None:
            if child.poll() is None:
                child.terminate()
            try:
                child.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
        if self._listen is not None:
            self._listen.close()
            self._listen = None


# -- the child ------------------------------------------------------------------------------------


class SnapshotCollector:
    """Asks the daemon for a snapshot at each collection; yields spikebridge_* and python_gc_*."""

    def __init__(self, sock: socket.socket, timeout_s: float = SNAPSHOT_TIMEOUT_S) -> None:
        self._sock = sock
        self._timeout_s = timeout_s
        self._lock = threading.Lock()
        self._build: dict[str, str] | None = None
        self._number = 0
        self._buf = bytearray()  # bytes of replies read so far (a late one may be partial)

    def describe(self) -> list[Metric]:
        """Nothing up front (as BridgeCollector)."""
        return []

    def collect(self) -> Iterator[Metric]:
        """One snapshot, as metric families; raises when the daemon does not answer in time."""
        with self._lock:
            stats, gc_stats = restore(self._ask())
        collector = BridgeCollector(stats, self._build)
        if self._build is None:
            self._build = dict(collector._build)
        yield from collector._families()
        yield from _gc_families(gc_stats)


    def _ask(self) -> bytes:
        """Ask for a snapshot and wait for its reply; a late reply to an earlier ask is skipped.

        Replies are read into one buffer across calls, so a reply that missed its deadline
        (a stalled daemon) neither breaks the stream nor answers a later scrape.
        """
        self._number = (self._number + 1) & 0xFFFFFFFF
        self._sock.sendall(_ASK.pack(b"?", self._number))
        deadline = time.monotonic() + self._timeout_s
        while True:
            while len(self._buf) >= _REPLY.size:
                number, size = _REPLY.unpack_from(self._buf)
                if len(self._buf) < _REPLY.size + size:
                    break
                data = bytes(self._buf[_REPLY.size:_REPLY.size + size])
                del self._buf[:_REPLY.size + size]
                if number == self._number:
                    return data
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"the daemon sent no snapshot in {self._timeout_s:g} s")
            self._sock.settimeout(left)
            chunk = self._sock.recv(65536)
            if not chunk:
                raise EOFError("the daemon closed the snapshot socket")
            self._buf += chunk


def _gc_families(gc_stats: Sequence[dict[str, int]]) -> list[Metric]:
    """The daemon's python_gc_* families, as prometheus_client's GCCollector names them."""
    collected = CounterMetricFamily("python_gc_objects_collected", "Objects collected during gc",
                                    labels=["generation"])
    uncollectable = CounterMetricFamily("python_gc_objects_uncollectable",
                                        "Uncollectable objects found during GC",
                                        labels=["generation"])
    collections = CounterMetricFamily("python_gc_collections",
                                      "Number of times this generation was collected",
                                      labels=["generation"])
    for gen, st in enumerate(gc_stats):
        collected.add_metric([str(gen)], st["collected"])
        uncollectable.add_metric([str(gen)], st["uncollectable"])
        collections.add_metric([str(gen)], st["collections"])
    return [collected, uncollectable, collections]


def child_main(argv: Sequence[str] | None = None) -> int:
    """Serve until the snapshot socket closes: the daemon's metrics, formatted here."""
    parser = argparse.ArgumentParser(prog="spikebridge-metrics")
    parser.add_argument("--listen-fd", type=int, required=True)
    parser.add_argument("--snapshot-fd", type=int, required=True)
    parser.add_argument("--pid", type=int, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="spikebridge metrics: %(message)s")
    listen = socket.socket(fileno=args.listen_fd)
    snap = socket.socket(fileno=args.snapshot_fd)
    registry = CollectorRegistry()
    ProcessCollector(pid=lambda: args.pid, registry=registry)  # the daemon's, not ours
    PlatformCollector(registry=registry)  # the same interpreter as the daemon's
    registry.register(SnapshotCollector(snap))
    server = MetricsServer(registry=registry, sock=listen)
    snap.sendall(b"R")  # before serving: a scrape's request must not come first
    server.start()
    # The daemon terminates us when it stops; if it dies, we are re-parented: stop then.
    try:
        while os.getppid() == args.pid:
            time.sleep(0.5)
    finally:
        server.close()
    return 0


if __name__ == "__main__":  # pragma: no cover - run as the child process
    sys.exit(child_main())
