"""Logging set-up: journald when systemd connected stderr to the journal, stderr otherwise.

Records are handed to a bounded queue and written by a listener thread, so a log call from the
real-time loop never blocks on journald or a slow terminal. When the queue is full the oldest
record is dropped and counted; the listener reports the count. ``configure`` must run before
the loop raises itself to SCHED_FIFO (it starts the listener thread, which stays SCHED_OTHER).
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import queue
import sys
from collections.abc import Mapping
from typing import TextIO

QUEUE_SIZE = 10_000
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# sd-daemon(3) priority prefixes, for when the journal reads our stderr without systemd-python.
_PRIORITY = {
    logging.CRITICAL: "<2>", logging.ERROR: "<3>", logging.WARNING: "<4>",
    logging.INFO: "<6>", logging.DEBUG: "<7>",
}


def journal_stream(environ: Mapping[str, str], fd: int = 2) -> bool:
    """True when ``fd`` is the journal stream systemd set up (JOURNAL_STREAM is ``dev:inode``)."""
    raw = environ.get("JOURNAL_STREAM", "")
    dev, _, ino = raw.partition(":")
    try:
        st = os.fstat(fd)
        return (st.st_dev, st.st_ino) == (int(dev), int(ino))
    except (ValueError, OSError):
        return False


class _PrefixFormatter(logging.Formatter):
    """Plain text with an sd-daemon priority prefix and no timestamp (the journal adds one)."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record).replace("\n", " | ")
        return _PRIORITY.get(record.levelno, "<6>") + text


def sink_handler(environ: Mapping[str, str], stream: TextIO) -> logging.Handler:
    """The handler that finally writes: JournalHandler, prefixed stderr, or plain stderr."""
    if journal_stream(environ, stream.fileno()):
        try:
            from systemd.journal import JournalHandler
        except ImportError:
            handler: logging.Handler = logging.StreamHandler(stream)
            handler.setFormatter(_PrefixFormatter("%(name)s: %(message)s"))
            return handler
        handler = JournalHandler(SYSLOG_IDENTIFIER="spikebridge")
        handler.setFormatter(logging.Formatter("%(message)s"))
        return handler
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter(FORMAT))
    return handler


class DroppingQueueHandler(logging.handlers.QueueHandler):
    """A QueueHandler on a bounded queue: when full, the oldest record goes and is counted."""

    def __init__(self, q: queue.Queue[logging.LogRecord]) -> None:
        super().__init__(q)
        self.dropped = 0
        self._reported = 0

    def enqueue(self, record: logging.LogRecord) -> None:
        """Put without blocking; on a full queue drop the oldest record first."""
        q: queue.Queue[logging.LogRecord] = self.queue  # type: ignore[assignment]
        while True:
            try:
                q.put_nowait(record)
                return
            except queue.Full:
                try:
                    q.get_nowait()
                    self.dropped += 1
                except queue.Empty:
                    pass

    def unreported(self) -> int:
        """Drops since the last call (the listener logs them)."""
        n, self._reported = self.dropped - self._reported, self.dropped
        return n


class _ReportingSink(logging.Handler):
    """Writes through ``sink``, first reporting records the queue dropped since last time."""

    def __init__(self, sink: logging.Handler, source: DroppingQueueHandler) -> None:
        super().__init__()
        self._sink = sink
        self._source = source

    def handle(self, record: logging.LogRecord) -> bool:
        lost = self._source.unreported()
        if lost:
            self._sink.handle(logging.makeLogRecord({
                "name": __name__, "levelno": logging.WARNING, "levelname": "WARNING",
                "msg": "%d log records dropped (log queue full)", "args": (lost,),
            }))
        return bool(self._sink.handle(record))

    def emit(self, record: logging.LogRecord) -> None:
        self._sink.emit(record)

    def close(self) -> None:
        self._sink.close()
        super().close()


class _Listener(logging.handlers.QueueListener):
    """A QueueListener whose stop waits for room for its sentinel in a full queue."""

    def enqueue_sentinel(self) -> None:
        q: queue.Queue[object] = self.queue  # type: ignore[assignment]
        q.put(self._sentinel, timeout=5.0)  # type: ignore[attr-defined]


class LogSetup:
    """The installed queue handler and its listener; ``close`` flushes and detaches them."""

    def __init__(
        self, handler: DroppingQueueHandler, listener: logging.handlers.QueueListener
    ) -> None:
        self.handler = handler
        self.listener = listener

    def close(self) -> None:
        """Write out what is queued, stop the listener thread and detach the handler."""
        logging.getLogger().removeHandler(self.handler)
        self.listener.stop()
        for h in self.listener.handlers:
            h.close()


def configure(
    level: int | str = logging.INFO,
    environ: Mapping[str, str] | None = None,
    stream: TextIO | None = None,
    queue_size: int = QUEUE_SIZE,
) -> LogSetup:
    """Route the root logger through a bounded queue to the journal or stderr."""
    env = os.environ if environ is None else environ
    out = sys.stderr if stream is None else stream
    q: queue.Queue[logging.LogRecord] = queue.Queue(maxsize=queue_size)
    handler = DroppingQueueHandler(q)
    listener = _Listener(
        q, _ReportingSink(sink_handler(env, out), handler), respect_handler_level=False
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        if isinstance(old, DroppingQueueHandler):
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    listener.start()
    return LogSetup(handler, listener)
