"""The loop's per-iteration service duties: READY once, watchdog pings, the STATUS line.

``Heartbeat`` is the ``tick(now_ns)`` callable handed to ``Bridge.run``: it runs in the
real-time loop thread, so the common path is a few comparisons. READY=1 goes out on the first
tick, that is once the loop runs (after it raised itself to real time), not before. It never
starts a thread, never reads the clock (the loop passes ``now_ns``) and never raises.
"""

from __future__ import annotations

import logging

from bridge.engine.stats import BridgeStats
from bridge.service.notify import Notifier
from bridge.service.status import StatusLine
from bridge.service.watchdog import WatchdogPolicy

log = logging.getLogger(__name__)

DEFAULT_STATUS_PERIOD_NS = 2_000_000_000


class Heartbeat:
    """Pings WATCHDOG=1 when the policy says so and refreshes STATUS= every period."""

    __slots__ = (
        "_next_status_ns",
        "_notifier",
        "_ready",
        "_stats",
        "_status",
        "_status_period_ns",
        "_unhealthy",
        "watchdog",
    )

    def __init__(
        self,
        stats: BridgeStats,
        notifier: Notifier,
        watchdog: WatchdogPolicy | None,
        *,
        status_period_ns: int = DEFAULT_STATUS_PERIOD_NS,
        ready: str | None = None,
    ) -> None:
        if status_period_ns <= 0:
            raise ValueError(f"status period must be > 0 ns, got {status_period_ns}")
        self._stats = stats
        self._notifier = notifier
        self.watchdog = watchdog  # replaceable between ticks (a reload applies new limits)
        self._status = StatusLine()
        self._status_period_ns = status_period_ns
        self._next_status_ns: int | None = None
        self._unhealthy = ""
        self._ready = ready  # the STATUS sent with READY=1 on the first tick; None: no READY

    def __call__(self, now_ns: int) -> None:
        """One loop iteration happened at ``now_ns`` (monotonic)."""
        if self._ready is not None:
            self._notifier.ready(self._ready)
            self._ready = None
        wd = self.watchdog
        if wd is not None:
            if wd.tick(now_ns, self._stats):
                if self._notifier.watchdog():
                    self._stats.watchdog_pings += 1
                if self._unhealthy:
                    log.warning("loop healthy again; watchdog pings resumed")
                    self._unhealthy = ""
            elif wd.unhealthy and not self._unhealthy:
                self._unhealthy = wd.unhealthy
                log.warning("withholding watchdog pings: %s", wd.unhealthy)
        if self._next_status_ns is None or now_ns >= self._next_status_ns:
            self._next_status_ns = now_ns + self._status_period_ns
            if self._notifier.enabled:
                self._notifier.status(self.status_line(now_ns))

    def status_line(self, now_ns: int) -> str:
        """The current STATUS text (advances the rate window)."""
        line = self._status(now_ns, self._stats)
        return f"{line}; watchdog withheld: {self._unhealthy}" if self._unhealthy else line
