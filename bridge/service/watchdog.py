"""Watchdog policy: decides, from the loop's own ticks, when WATCHDOG=1 may be sent.

A pure object fed ``now_ns`` and the bridge's stats by the real-time loop on every iteration.
It pings at most every ``WATCHDOG_USEC / 2`` and only while the loop is healthy:

- the loop ticked recently: the gap since the previous tick is at most ``stall_ns``
  (a loop whose iterations take longer than that is stuck, even if it returns now and then);
- deadline misses in the last ``window_ns`` are at most ``max_misses``.

It must never run on a timer of its own or in a helper thread (that would hide a hung loop),
never read the clock and never send anything: the caller sends the ping it is told to send.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bridge.engine.stats import BridgeStats
from bridge.errors import ConfigError

DEFAULT_STALL_NS = 1_000_000_000
DEFAULT_MAX_MISSES = 1000
_SAMPLES = 8  # deadline-miss samples per window


def watchdog_usec(environ: Mapping[str, str], pid: int) -> int:
    """The watchdog period systemd asks this process for, in µs; 0 when there is none.

    Mirrors sd_watchdog_enabled(3): WATCHDOG_USEC must be a positive integer, and when
    WATCHDOG_PID is set it must name this process (a child that inherited the variables
    must not ping on its parent's behalf).
    """
    raw = environ.get("WATCHDOG_USEC", "")
    try:
        usec = int(raw)
    except ValueError:
        return 0
    if usec <= 0:
        return 0
    owner = environ.get("WATCHDOG_PID", "")
    if owner:
        try:
            if int(owner) != pid:
                return 0
        except ValueError:
            return 0
    return usec


class WatchdogPolicy:
    """Tells the loop when to ping: due (every interval) and healthy (ticking, few misses)."""

    __slots__ = (
        "_next_ping_ns",
        "_next_sample_ns",
        "_prev_tick_ns",
        "_sample_ns",
        "_samples",
        "interval_ns",
        "max_misses",
        "stall_ns",
        "unhealthy",
        "window_ns",
    )

    def __init__(
        self,
        usec: int,
        *,
        stall_ns: int = DEFAULT_STALL_NS,
        max_misses: int = DEFAULT_MAX_MISSES,
        window_ns: int | None = None,
    ) -> None:
        if usec <= 0:
            raise ValueError(f"watchdog period must be > 0 us, got {usec}")
        if stall_ns <= 0:
            raise ValueError(f"stall limit must be > 0 ns, got {stall_ns}")
        if max_misses < 0:
            raise ValueError(f"miss threshold must be >= 0, got {max_misses}")
        self.interval_ns = usec * 1000 // 2
        self.stall_ns = stall_ns
        self.max_misses = max_misses
        self.window_ns = usec * 1000 if window_ns is None else window_ns
        if self.window_ns <= 0:
            raise ValueError(f"miss window must be > 0 ns, got {self.window_ns}")
        self._sample_ns = max(1, self.window_ns // _SAMPLES)
        self._samples: deque[int] = deque(maxlen=_SAMPLES + 1)
        self._prev_tick_ns: int | None = None
        self._next_ping_ns: int | None = None  # None: ping on the first healthy tick
        self._next_sample_ns: int | None = None
        self.unhealthy = ""  # why the last due ping was withheld; empty once one is sent

    def tick(self, now_ns: int, stats: BridgeStats) -> bool:
        """Called on every loop iteration; True when the caller must send WATCHDOG=1 now."""
        prev, self._prev_tick_ns = self._prev_tick_ns, now_ns
        if self._next_sample_ns is None or now_ns >= self._next_sample_ns:
            self._samples.append(stats.deadline_misses)
            self._next_sample_ns = now_ns + self._sample_ns
        if self._next_ping_ns is not None and now_ns < self._next_ping_ns:
            return False
        self.unhealthy = self._why_unhealthy(now_ns, prev, stats)
        if self.unhealthy:
            return False
        self._next_ping_ns = now_ns + self.interval_ns
        return True

    def recent_misses(self, stats: BridgeStats) -> int:
        """Deadline misses since the oldest sample, i.e. over about the last window."""
        return stats.deadline_misses - self._samples[0] if self._samples else 0

    def _why_unhealthy(self, now_ns: int, prev_ns: int | None, stats: BridgeStats) -> str:
        """Why the loop is not healthy now; empty when it is."""
        if prev_ns is not None and now_ns - prev_ns > self.stall_ns:
            return f"loop stalled for {(now_ns - prev_ns) / 1e9:.3f} s"
        misses = self.recent_misses(stats)
        if misses > self.max_misses:
            return f"{misses} deadline misses in the last {self.window_ns / 1e9:g} s"
        return ""


@dataclass(frozen=True)
class WatchdogConfig:
    """The ``[watchdog]`` section: what counts as a healthy loop."""

    stall_ns: int = DEFAULT_STALL_NS
    max_misses: int = DEFAULT_MAX_MISSES
    window_ns: int | None = None  # None: the watchdog period systemd gives

    def policy(self, usec: int) -> WatchdogPolicy:
        """The policy for a watchdog period of ``usec`` µs."""
        return WatchdogPolicy(
            usec, stall_ns=self.stall_ns, max_misses=self.max_misses, window_ns=self.window_ns
        )


_KEYS = {
    "stall_ms": "longest gap between loop iterations that still counts as healthy (ms)",
    "max_misses": "deadline misses allowed within the window before pings stop",
    "window_s": "the miss-counting window in seconds (default: the watchdog period)",
}


def parse_config(table: Mapping[str, Any], path: str) -> WatchdogConfig:
    """Validate the ``[watchdog]`` table; ConfigError names the key and the value."""
    for key in table:
        if key not in _KEYS:
            raise ConfigError(
                f"unknown key; [{path}] takes {', '.join(sorted(_KEYS))}", key=f"{path}.{key}"
            )

    def number(key: str, default: float) -> float:
        value = table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise ConfigError(f"expected a number > 0, got {value!r}", key=f"{path}.{key}")
        return float(value)

    misses = table.get("max_misses", DEFAULT_MAX_MISSES)
    if isinstance(misses, bool) or not isinstance(misses, int) or misses < 0:
        raise ConfigError(f"expected an integer >= 0, got {misses!r}", key=f"{path}.max_misses")
    window = number("window_s", 1.0) if "window_s" in table else None
    return WatchdogConfig(
        stall_ns=round(number("stall_ms", DEFAULT_STALL_NS / 1e6) * 1_000_000),
        max_misses=misses,
        window_ns=None if window is None else round(window * 1e9),
    )
