"""Recorder: writes the frames the real-time loop sees to .sbr files, off the loop.

The loop calls ``record`` once per frame: a bounded append and a few integer updates, no lock,
no allocation beyond the queued tuple, no I/O. A writer thread (started by ``start``, before the
loop raises its priority) drains the buffer, encodes, writes, rotates files by size or age and
stops writing when free disk space runs low. It must never make the loop wait: when the writer
falls behind, new frames are dropped and counted (``dropped_frames``), and the loss is noted in
the file as a gap record. Counters are plain ints, read at scrape time.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from bridge import __version__
from bridge.engine.clock import SYSTEM_CLOCK, Clock
from bridge.frame import IdArray
from bridge.record.format import (
    EndpointInfo,
    Header,
    encode_end,
    encode_gap,
    encode_spikes,
)
from bridge.record.sbrfile import SbrWriter

log = logging.getLogger(__name__)

DEFAULT_BUFFER_FRAMES = 65536
DEFAULT_BUFFER_SPIKES = 1 << 24
DEFAULT_MIN_FREE_BYTES = 256 << 20
DEFAULT_FLUSH_INTERVAL_NS = 50_000_000  # the most a kill -9 can lose of what was queued
DEFAULT_FSYNC_INTERVAL_NS = 1_000_000_000  # the most a power loss can lose
SPACE_CHECK_INTERVAL_NS = 1_000_000_000

_Item = tuple[int, int, int, int, int, IdArray]


def disk_free_bytes(path: str) -> int:
    """Bytes available to unprivileged writers on the file system holding ``path``."""
    return shutil.disk_usage(path).free


def segment_path(
    template: str | os.PathLike[str], start_wall_ns: int, n: int, rotating: bool
) -> Path:
    """The file name of segment ``n``: ``{start}`` and ``{n}`` in the template are filled in.

    Without ``{n}`` in the template, ``-{n}`` goes before the suffix when rotating, and for
    every segment after the first (writing resumed after a pause), so no file is overwritten.
    """
    text = str(template)
    if (rotating or n > 0) and "{n}" not in text:
        p = Path(text)
        text = str(p.with_name(f"{p.stem}-{{n}}{p.suffix}"))
    start = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(start_wall_ns // 1_000_000_000))
    return Path(text.replace("{start}", start).replace("{n}", f"{n:04d}"))


class Recorder:
    """Records frames of the endpoints in ``endpoints`` (indexed as given) to .sbr files."""

    __slots__ = (
        "_accepting", "_cap_frames", "_cap_spikes", "_clock", "_disk_free", "_done", "_flush_done",
        "_flush_interval_ns", "_flush_req", "_fsync_due_ns", "_fsync_interval_ns", "_gap_noted",
        "_lock", "_next_space_check_ns", "_pause_mark", "_paused", "_queue", "_seg_frames",
        "_seg_spikes", "_seg_start_ns", "_spikes_taken", "_start_wall_ns", "_stop",
        "_synced_bytes", "_thread", "_wake", "_writer", "bytes_written", "dropped_frames",
        "dropped_spikes", "endpoints", "extra", "files", "frames_queued", "frames_written",
        "lost_frames", "lost_spikes", "min_free_bytes", "node", "path", "rotate_bytes",
        "rotate_ns", "run", "spikes_queued", "spikes_written", "write_errors",
    )

    def __init__(
        self,
        path: str | os.PathLike[str],
        endpoints: Sequence[EndpointInfo],
        *,
        node: int | None = None,
        rotate_bytes: int = 0,
        rotate_seconds: float = 0.0,
        min_free_bytes: int = DEFAULT_MIN_FREE_BYTES,
        buffer_frames: int = DEFAULT_BUFFER_FRAMES,
        buffer_spikes: int = DEFAULT_BUFFER_SPIKES,
        flush_interval_ns: int = DEFAULT_FLUSH_INTERVAL_NS,
        fsync_interval_ns: int = DEFAULT_FSYNC_INTERVAL_NS,
        clock: Clock = SYSTEM_CLOCK,
        disk_free: Callable[[str], int] = disk_free_bytes,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        if not endpoints:
            raise ValueError("a recorder needs at least one endpoint")
        if buffer_frames < 1 or buffer_spikes < 1:
            raise ValueError("buffer_frames and buffer_spikes must be >= 1")
        if rotate_bytes < 0 or rotate_seconds < 0 or min_free_bytes < 0:
            raise ValueError("rotate_bytes, rotate_seconds and min_free_bytes must be >= 0")
        self.path = path
        self.endpoints = tuple(endpoints)
        self.node = node
        self.rotate_bytes = rotate_bytes
        self.rotate_ns = int(rotate_seconds * 1e9)
        self.min_free_bytes = min_free_bytes
        self.extra = dict(extra or {})
        self.run = uuid.uuid4().hex
        self._cap_frames = buffer_frames
        self._cap_spikes = buffer_spikes
        self._flush_interval_ns = flush_interval_ns
        self._fsync_interval_ns = fsync_interval_ns
        self._clock = clock
        self._disk_free = disk_free
        self._queue: deque[_Item] = deque()
        self._accepting = False
        # Written by the loop thread only.
        self.frames_queued = 0
        self.spikes_queued = 0
        self.dropped_frames = 0   # buffer full: the writer fell behind
        self.dropped_spikes = 0
        # Written by the writer thread only.
        self._spikes_taken = 0
        self.frames_written = 0
        self.spikes_written = 0
        self.bytes_written = 0
        self.lost_frames = 0  # taken but not written: writing stopped, or the write failed
        self.lost_spikes = 0
        self.write_errors = 0
        self.files = 0
        self._writer: SbrWriter | None = None
        self._paused: str | None = None  # "disk_full" or "write_error" while not writing
        self._pause_mark = (0, 0)  # dropped_disk_* when writing stopped
        self._synced_bytes = 0
        self._gap_noted = [0, 0]  # dropped_frames, dropped_spikes already noted in a gap record
        self._seg_start_ns = 0
        self._seg_frames = 0
        self._seg_spikes = 0
        self._start_wall_ns = 0
        self._fsync_due_ns = 0
        self._next_space_check_ns = 0
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Condition()
        self._flush_req = 0
        self._flush_done = 0
        self._done = False

    # --- loop thread -------------------------------------------------------------------

    def record(
        self, t_ns: int, endpoint: int, source: int, seq: int, ids: IdArray, t_sent_ns: int = 0
    ) -> bool:
        """Queue one frame (``t_ns`` monotonic); never blocks. ``ids`` must not change after.

        Returns False when the frame was dropped (counted in ``dropped_frames``).
        """
        n = len(ids)
        if (
            not self._accepting
            or len(self._queue) >= self._cap_frames
            or self.spikes_queued - self._spikes_taken + n > self._cap_spikes
        ):
            # Tail drop: the queue is only ever shortened by the writer, so these counts are
            # exact without a lock.
            self.dropped_frames += 1
            self.dropped_spikes += n
            return False
        self._queue.append((t_ns, endpoint, source, seq, t_sent_ns, ids))
        self.frames_queued += 1
        self.spikes_queued += n
        return True

    # --- control (any thread but the writer) ---------------------------------------------

    def start(self, *, thread: bool = True) -> None:
        """Open the first file now (errors surface here) and start the writer thread.

        Call before the loop raises itself to SCHED_FIFO. ``thread=False`` leaves the writing
        to explicit ``pump`` calls (tests).
        """
        if self._accepting or self._done:
            raise RuntimeError("recorder already started")
        now = self._clock.monotonic_ns()
        self._start_wall_ns = self._clock.wall_ns()
        first = segment_path(self.path, self._start_wall_ns, 0, self._rotating)
        if not first.parent.is_dir():  # the daemon's [record] path makes its own directory
            first.parent.mkdir(parents=True, exist_ok=True)
            log.info("created the recording directory %s", first.parent)
        free = self._disk_free(str(first.parent))
        if free < self.min_free_bytes:
            raise OSError(
                f"{first.parent}: {free} bytes free, under the recording minimum of "
                f"{self.min_free_bytes} (record.min_free_bytes)"
            )
        self._open_segment(now, 0)
        self._next_space_check_ns = now + SPACE_CHECK_INTERVAL_NS
        self._accepting = True
        if thread:
            self._thread = threading.Thread(target=self._run, name="sbr-writer", daemon=True)
            self._thread.start()

    def flush(self, timeout: float = 10.0) -> bool:
        """Write and fsync everything queued before this call; False on timeout."""
        if self._thread is None:
            self.pump(force_sync=True)
            return True
        with self._lock:
            self._flush_req += 1
            req = self._flush_req
            self._wake.set()
            return self._lock.wait_for(lambda: self._flush_done >= req, timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Stop accepting, write what is queued, end and close the file (SIGTERM path)."""
        if self._done:
            return
        self._accepting = False
        if self._thread is not None:
            self._stop.set()
            self._wake.set()
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.error("recording writer did not finish within %.1f s", timeout)
                return
        else:
            self.pump(force_sync=True)
        self._close_segment(self._clock.monotonic_ns())
        self._done = True

    def slot(self, name: str) -> int | None:
        """The index to pass to ``record`` for endpoint ``name``; None when it is not recorded."""
        for i, ep in enumerate(self.endpoints):
            if ep.name == name:
                return i
        return None

    @property
    def current_path(self) -> Path | None:
        """The file being written, or None while writing is stopped."""
        return self._writer.path if self._writer is not None else None

    @property
    def paused(self) -> str | None:
        """Why writing is stopped ("disk_full", "write_error"), or None while it runs."""
        return self._paused

    @property
    def queued(self) -> int:
        """Frames waiting for the writer."""
        return len(self._queue)

    # --- writer thread -------------------------------------------------------------------

    @property
    def _rotating(self) -> bool:
        return bool(self.rotate_bytes or self.rotate_ns)

    def _run(self) -> None:
        interval = self._flush_interval_ns / 1e9
        while True:
            stopping = self._stop.is_set()
            with self._lock:
                req = self._flush_req
            try:
                self.pump(force_sync=stopping or req > self._flush_done)
            except Exception:  # never let the writer die silently; the loop keeps running
                log.exception("recording writer failed")
                self.write_errors += 1
            if req > self._flush_done:
                with self._lock:
                    self._flush_done = req
                    self._lock.notify_all()
            if stopping:
                return
            self._wake.wait(interval)
            self._wake.clear()

    def pump(self, force_sync: bool = False) -> int:
        """One writer cycle: write what is queued, note drops, rotate, guard space; frames taken.

        Called by the writer thread (or by tests without one); never by the loop.
        """
        now = self._clock.monotonic_ns()
        if now >= self._next_space_check_ns:
            self._next_space_check_ns = now + SPACE_CHECK_INTERVAL_NS
            self._check_space(now)
        out = bytearray()
        self._note_overflow(now, out)
        taken = 0
        q = self._queue
        base = self._seg_start_ns
        frames = spikes = 0
        while q:
            t_ns, ep, source, seq, t_sent, ids = q.popleft()
            n = len(ids)
            taken += 1
            self._spikes_taken += n
            if self._paused is not None:
                self.lost_frames += 1
                self.lost_spikes += n
                continue
            try:
                out += encode_spikes(t_ns - base, ep, source, seq, t_sent, ids)
            except ValueError as exc:
                self.write_errors += 1
                log.error("cannot record a frame of endpoint %d: %s", ep, exc)
                continue
            frames += 1
            spikes += n
        if self._writer is not None and out:
            if self._write(out):
                self.frames_written += frames
                self.spikes_written += spikes
                self._seg_frames += frames
                self._seg_spikes += spikes
            else:
                self.lost_frames += frames
                self.lost_spikes += spikes
        if self._writer is not None:
            dirty = self._writer.bytes_written != self._synced_bytes
            due_sync = dirty and (force_sync or now >= self._fsync_due_ns)
            try:
                self._writer.flush(sync=due_sync)
            except OSError as exc:
                self._write_failed(exc)
            if due_sync and self._writer is not None:
                self._synced_bytes = self._writer.bytes_written
                self._fsync_due_ns = now + self._fsync_interval_ns
            if self._writer is not None and self._rotate_due(now):
                self._close_segment(now)
                self._open_next(now)
        return taken

    def _note_overflow(self, now: int, out: bytearray) -> None:
        frames, spikes = self.dropped_frames, self.dropped_spikes
        if frames > self._gap_noted[0] and self._writer is not None:
            out += encode_gap(
                now - self._seg_start_ns, "overflow", frames - self._gap_noted[0],
                spikes - self._gap_noted[1],
            )
            self._gap_noted = [frames, spikes]

    def _rotate_due(self, now: int) -> bool:
        assert self._writer is not None
        if self.rotate_bytes and self._writer.bytes_written >= self.rotate_bytes:
            return True
        return bool(self.rotate_ns) and now - self._seg_start_ns >= self.rotate_ns

    def _write(self, data: bytes | bytearray) -> bool:
        assert self._writer is not None
        try:
            self._writer.write(data)
        except OSError as exc:
            self._write_failed(exc)
            return False
        self.bytes_written += len(data)
        return True

    def _write_failed(self, exc: OSError) -> None:
        self.write_errors += 1
        log.error("recording stopped: cannot write %s: %s", self.current_path, exc)
        writer, self._writer = self._writer, None
        if writer is not None:
            with contextlib.suppress(OSError):
                writer.close()
        self._pause("write_error")

    def _check_space(self, now: int) -> None:
        directory = str(segment_path(self.path, self._start_wall_ns, 0, False).parent)
        try:
            free = self._disk_free(directory)
        except OSError as exc:
            log.warning("cannot read free space of %s: %s", directory, exc)
            return
        if free < self.min_free_bytes:
            if self._paused is None:
                log.warning(
                    "recording stopped: %d bytes free on %s, under record.min_free_bytes=%d; "
                    "frames are counted as dropped until space is freed",
                    free, directory, self.min_free_bytes,
                )
                self._pause("disk_full")
                self._close_segment(now)
            return
        if self._paused is not None and self._open_next(now):
            log.warning("recording resumed in %s after %s", self.current_path, self._paused)
            frames = self.lost_frames - self._pause_mark[0]
            spikes = self.lost_spikes - self._pause_mark[1]
            if self._write(encode_gap(0, self._paused, frames, spikes)):
                self._paused = None

    def _pause(self, reason: str) -> None:
        if self._paused is None:
            self._pause_mark = (self.lost_frames, self.lost_spikes)
        self._paused = reason

    def _open_next(self, now: int) -> bool:
        try:
            self._open_segment(now, self.files)
        except OSError as exc:
            self.write_errors += 1
            log.error("recording stopped: cannot open the next file: %s", exc)
            self._pause(self._paused or "write_error")
            return False
        return True

    def _open_segment(self, now: int, n: int) -> None:
        wall = self._clock.wall_ns()
        header = Header(
            endpoints=self.endpoints,
            start_wall_ns=wall,
            start_mono_ns=now,
            node=self.node,
            segment=n,
            run=self.run,
            software=f"spikebridge {__version__}",
            extra=self.extra,
        )
        path = segment_path(self.path, self._start_wall_ns, n, self._rotating)
        self._writer = SbrWriter(path, header)
        self.files += 1
        self.bytes_written += self._writer.bytes_written
        self._seg_start_ns = now
        self._synced_bytes = self._writer.bytes_written
        self._seg_frames = 0
        self._seg_spikes = 0
        self._fsync_due_ns = now + self._fsync_interval_ns

    def _close_segment(self, now: int) -> None:
        writer, self._writer = self._writer, None
        if writer is None:
            return
        end = encode_end(
            now - self._seg_start_ns, self._seg_frames, self._seg_spikes,
            self.dropped_frames + self.lost_frames,
            self.dropped_spikes + self.lost_spikes,
        )
        try:
            writer.write(end)
            self.bytes_written += len(end)
            writer.close()
        except OSError as exc:
            self.write_errors += 1
            log.error("cannot close %s cleanly: %s", writer.path, exc)
