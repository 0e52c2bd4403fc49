"""Clocks: the only place that reads time. Logic takes a Clock (or ``now``) injected.

SystemClock is the production default; FakeClock lets tests move time by hand.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """A source of monotonic and wall-clock time in integer nanoseconds."""

    def monotonic_ns(self) -> int:
        """Monotonic time for deadlines and durations."""
        ...

    def wall_ns(self) -> int:
        """Wall-clock (CLOCK_REALTIME) time, comparable with a peer's send time."""
        ...

    def sleep_ns(self, ns: int) -> None:
        """Block for ``ns`` nanoseconds (a FakeClock advances instead)."""
        ...


class SystemClock:
    """The real clocks: time.monotonic_ns and time.time_ns."""

    __slots__ = ()

    # The C functions themselves, not wrappers: the loop reads the clock per datagram.
    monotonic_ns = staticmethod(time.monotonic_ns)
    wall_ns = staticmethod(time.time_ns)

    def sleep_ns(self, ns: int) -> None:
        """Sleep; negative or zero returns at once."""
        if ns > 0:
            time.sleep(ns / 1e9)


class FakeClock:
    """A clock that moves only when told: ``advance`` or ``sleep_ns``."""

    __slots__ = ("_mono", "_wall_offset")

    def __init__(self, start_ns: int = 0, wall_offset_ns: int = 1_700_000_000_000_000_000) -> None:
        self._mono = start_ns
        self._wall_offset = wall_offset_ns

    def monotonic_ns(self) -> int:
        """The fake monotonic time."""
        return self._mono

    def wall_ns(self) -> int:
        """The fake wall time: monotonic plus a fixed offset."""
        return self._mono + self._wall_offset

    def sleep_ns(self, ns: int) -> None:
        """Advance instead of sleeping."""
        if ns > 0:
            self._mono += ns

    def advance(self, ns: int) -> None:
        """Move time forward by ``ns`` (must be >= 0)."""
        if ns < 0:
            raise ValueError("a clock does not go backwards")
        self._mono += ns

    def set(self, ns: int) -> None:
        """Jump to monotonic time ``ns`` (not before now)."""
        self.advance(ns - self._mono)


SYSTEM_CLOCK = SystemClock()
