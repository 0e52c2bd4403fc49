"""The emulator engine shared by the eDVS and board emulators: a device on its own thread.

It owns a pty port, a bounded transmit FIFO (the device's UART buffer), line-rate pacing and
line noise, and the unplug schedule. Subclasses say what the device does with host bytes
(``on_host``) and on time (``on_tick``), both given ``now``. Runs on its own thread (or in
its own process via the CLI), never in the bridge's loop, and never busy-waits: it sleeps in
select() until host bytes, line capacity or its own next deadline.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from bridge.emulate.faults import Faults, LineNoise, TokenBucket
from bridge.emulate.port import PtyPort
from bridge.engine.clock import SYSTEM_CLOCK, Clock

FIFO_BYTES = 1 << 16  # the device's own transmit buffer; beyond it, output is dropped
MAX_SLEEP_NS = 50_000_000


class Emulator:
    """A device behind a pty: start() runs it on a thread, stop() ends it."""

    kind = "device"

    def __init__(
        self, *, link: str | os.PathLike[str] | None = None, faults: Faults | None = None,
        clock: Clock = SYSTEM_CLOCK, fifo_bytes: int = FIFO_BYTES,
    ) -> None:
        self.faults = faults or Faults()
        self.clock = clock
        self.port = PtyPort(link)
        self.rng = np.random.default_rng(self.faults.seed)
        self.noise = LineNoise(self.faults, self.rng)
        self.fifo = bytearray()
        self.fifo_bytes = fifo_bytes
        self.bucket: TokenBucket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._requests: list[tuple[Callable[[int], Any], threading.Event]] = []
        self._req_lock = threading.Lock()
        self._contact = False        # the host has written since the last plug-in
        self._next_unplug: int | None = None
        self._replug_at: int | None = None
        self.started_ns = 0
        # Counters (read from other threads; plain ints).
        self.bytes_out = 0           # bytes written to the pty (after noise)
        self.bytes_in = 0            # bytes the host wrote
        self.fifo_dropped = 0        # bytes refused by a full FIFO (the device's own loss)
        self.unplug_lost = 0         # FIFO bytes lost by an unplug
        self.unplugs = 0
        self.garbage_sent = 0

    # -- what subclasses implement --------------------------------------------------------

    def on_host(self, data: bytes, now_ns: int) -> None:
        """Bytes the host wrote."""

    def on_tick(self, now_ns: int) -> int:
        """Periodic work; return ns until it is needed again."""
        return MAX_SLEEP_NS

    def on_plug(self, now_ns: int) -> None:
        """The device was (re)plugged: a power-on reset."""

    def on_quiesce(self, now_ns: int) -> None:
        """Stop producing data of its own accord (streams, spontaneous spikes)."""

    # -- output -----------------------------------------------------------------------------

    def emit(self, data: bytes) -> bool:
        """Queue bytes for the host whole; False (counted) when the FIFO has no room."""
        if len(self.fifo) + len(data) > self.fifo_bytes:
            self.fifo_dropped += len(data)
            return False
        self.fifo += data
        return True

    def fifo_room(self) -> int:
        """Free bytes in the transmit FIFO."""
        return self.fifo_bytes - len(self.fifo)

    def _pump(self, now_ns: int) -> int:
        """Write what pacing allows; return ns until more can go (0: blocked on the pty)."""
        if not self.fifo or not self.port.plugged:
            return MAX_SLEEP_NS
        want = len(self.fifo)
        split = self.faults.split
        bucket = self.bucket
        while self.fifo:
            n = min(len(self.fifo), split) if split else len(self.fifo)
            if bucket is not None:
                n = bucket.take(n, now_ns)
                if n == 0:
                    return bucket.wait_ns(min(want, split or want), now_ns)
            chunk = bytes(self.fifo[:n])
            wire = self.noise.apply(chunk) if self.faults.noisy else chunk
            written = self.port.write(wire)
            if written < len(wire):
                # The pty is full (the host is not reading): keep what did not go, unless
                # noise changed the length, in which case the partial chunk is gone.
                if len(wire) == len(chunk):
                    del self.fifo[:written]
                    if bucket is not None:
                        bucket.give_back(n - written)
                else:
                    del self.fifo[:n]
                self.bytes_out += written
                return 0
            del self.fifo[:n]
            self.bytes_out += written
        return MAX_SLEEP_NS

    # -- plugging -------------------------------------------------------------------------

    def plug(self, now_ns: int | None = None) -> str:
        """Plug the device in (at start, and to end an unplug); return its pty path."""
        now = self.clock.monotonic_ns() if now_ns is None else now_ns
        path = self.port.plug()
        self._contact = False
        self._replug_at = None
        if self.faults.baud:
            self.bucket = TokenBucket.for_baud(self.faults.baud, now)
        if self.faults.unplug_every_s:
            self._next_unplug = now + int(self.faults.unplug_every_s * 1e9)
        self.on_plug(now)
        return path

    def unplug(self, now_ns: int | None = None, down_ms: float | None = None) -> None:
        """Pull the plug; with ``down_ms`` the device comes back by itself after that long."""
        now = self.clock.monotonic_ns() if now_ns is None else now_ns
        self.port.unplug()
        self.unplug_lost += len(self.fifo)
        self.fifo.clear()
        self.unplugs += 1
        self._next_unplug = None
        self._replug_at = None if down_ms is None else now + int(down_ms * 1e6)

    # -- the thread -------------------------------------------------------------------------

    @property
    def path(self) -> str:
        """The current pty path (changes on each replug)."""
        return self.port.path

    @property
    def link(self) -> str | None:
        """The stable symlink, when there is one."""
        return str(self.port.link) if self.port.link is not None else None

    def start(self) -> str:
        """Plug in and run on a daemon thread; return the path for the host to open."""
        if self._thread is not None:
            raise RuntimeError("already started")
        self.started_ns = self.clock.monotonic_ns()
        path = self.plug(self.started_ns)
        self._thread = threading.Thread(target=self.run, name=f"emulate-{self.kind}",
                                        daemon=True)
        self._thread.start()
        return self.link or path

    def call(self, fn: Callable[[int], Any], timeout: float = 5.0) -> None:
        """Run ``fn(now)`` on the emulator's thread (or here when it is not running)."""
        if self._thread is None or not self._thread.is_alive():
            fn(self.clock.monotonic_ns())
            return
        done = threading.Event()
        with self._req_lock:
            self._requests.append((fn, done))
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"\0")
        if not done.wait(timeout):
            raise TimeoutError(f"the {self.kind} emulator did not answer")

    def request_unplug(self, down_ms: float | None = None) -> None:
        """Unplug from another thread (a test); ``down_ms`` schedules the replug."""
        self.call(lambda now: self.unplug(now, down_ms))

    def request_replug(self) -> str:
        """Plug back in from another thread; return the new pty path."""
        self.call(lambda now: self.plug(now))
        return self.port.path

    def quiesce(self, timeout: float = 2.0) -> bool:
        """Stop producing and wait until the FIFO is written out; False if it did not drain."""
        self.call(self.on_quiesce)
        end = self.clock.monotonic_ns() + int(timeout * 1e9)
        running = self._thread is not None and self._thread.is_alive()
        while running and self.fifo and self.port.plugged and self.clock.monotonic_ns() < end:
            self._stop.wait(0.01)
        return not self.fifo

    def stop(self) -> None:
        """Stop the thread and unplug for good; idempotent."""
        self._stop.set()
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"\0")
        if self._thread is not None:
            self._thread.join(5)
        self.port.close()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._wake_r = self._wake_w = -1

    def run(self) -> None:
        """The device's loop: host bytes, own work, paced output, the unplug schedule."""
        clock = self.clock
        while not self._stop.is_set():
            now = clock.monotonic_ns()
            self._serve_requests(now)
            if self._next_unplug is not None and now >= self._next_unplug:
                self.unplug(now, self.faults.down_ms)
            if self._replug_at is not None and now >= self._replug_at:
                self.plug(now)
            sleep = min(self.on_tick(now), self._pump(now) or MAX_SLEEP_NS, MAX_SLEEP_NS)
            blocked = bool(self.fifo) and self.port.plugged and self._last_blocked(now)
            for deadline in (self._next_unplug, self._replug_at):
                if deadline is not None:
                    sleep = min(sleep, max(0, deadline - now))
            rlist = [self._wake_r]
            if self.port.plugged:
                rlist.append(self.port.master)
            wlist = [self.port.master] if blocked else []
            try:
                readable, _, _ = select.select(rlist, wlist, [], max(sleep, 0) / 1e9)
            except (OSError, ValueError):
                continue  # a descriptor closed under us by an unplug request
            now = clock.monotonic_ns()
            if self._wake_r in readable:
                with contextlib.suppress(OSError):
                    os.read(self._wake_r, 4096)
            if self.port.plugged and self.port.master in readable:
                data = self.port.read()
                if data:
                    self.host_bytes(data, now)

    def host_bytes(self, data: bytes, now_ns: int) -> None:
        """Bytes from the host: the first after a plug-in releases the start-up garbage."""
        self.bytes_in += len(data)
        if not self._contact:
            self._contact = True
            self._send_garbage()
        self.on_host(data, now_ns)

    def _last_blocked(self, now_ns: int) -> bool:
        # Blocked on the pty (not on pacing): wait for writability instead of spinning.
        return self.bucket is None or self.bucket.wait_ns(1, now_ns) == 0

    def _serve_requests(self, now_ns: int) -> None:
        with self._req_lock:
            requests, self._requests = self._requests, []
        for fn, done in requests:
            try:
                fn(now_ns)
            finally:
                done.set()

    def _send_garbage(self) -> None:
        n = self.faults.garbage
        if n:
            junk = self.rng.integers(0, 256, n).astype(np.uint8).tobytes()
            # Garbage goes out before anything queued: it is what the UART had at power-on.
            self.fifo[:0] = junk
            self.garbage_sent += n

    def counters(self) -> dict[str, int]:
        """The emulator's counters, for tests, the CLI's --stats and the benchmark."""
        return {
            "bytes_out": self.bytes_out, "bytes_in": self.bytes_in,
            "fifo_dropped": self.fifo_dropped, "unplug_lost": self.unplug_lost,
            "fifo_pending": len(self.fifo),
            "unplugs": self.unplugs, "garbage_sent": self.garbage_sent,
            "flipped": self.noise.flipped, "inserted": self.noise.inserted,
            "deleted": self.noise.deleted,
        }
