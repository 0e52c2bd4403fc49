"""The one-line STATUS= summary: frame and spike rates, drops, lateness, over the last period.

Pure: fed ``now_ns`` and the bridge's stats, it keeps the previous totals and returns the
line for the interval since. It never reads the clock, sends anything or writes to the stats.
"""

from __future__ import annotations

from bridge.engine.stats import BridgeStats, Histogram


def _diff_quantile(now: list[int], before: list[int], edges_ns: tuple[int, ...], q: float) -> float:
    """Bucket upper edge (ns) holding quantile ``q`` of the counts added since ``before``."""
    delta = Histogram(edges_ns)
    delta.counts = [a - b for a, b in zip(now, before, strict=True)]
    delta.count = sum(delta.counts)
    return delta.quantile(q)


def _fmt_ns(ns: float) -> str:
    """A bucket edge for people: 50us, 2ms, >100ms."""
    if ns != ns:  # NaN
        return "-"
    if ns == float("inf"):
        return ">max"
    if ns < 1_000_000:
        return f"{ns / 1000:g}us"
    return f"{ns / 1_000_000:g}ms"


def _rate(n: float) -> str:
    """A per-second rate, short: 950, 12.3k, 4.1M."""
    if n < 10_000:
        return f"{n:.0f}"
    if n < 10_000_000:
        return f"{n / 1000:.1f}k"
    return f"{n / 1_000_000:.1f}M"


class StatusLine:
    """Builds the STATUS= line from the change in the stats since the previous call."""

    __slots__ = ("_before", "_lat_before", "_t_ns")

    def __init__(self) -> None:
        self._t_ns: int | None = None
        self._before: tuple[int, int, int, int, int, int] = (0, 0, 0, 0, 0, 0)
        self._lat_before: list[int] = []

    def __call__(self, now_ns: int, stats: BridgeStats) -> str:
        """The line for the interval since the previous call (since start on the first)."""
        totals = (
            sum(s.frames for s in stats.inputs),
            sum(s.spikes for s in stats.inputs),
            sum(s.frames for s in stats.outputs),
            sum(s.spikes for s in stats.outputs),
            sum(s.dropped() for s in stats.inputs) + sum(s.dropped() for s in stats.outputs),
            stats.steps,
        )
        hist, what = self._timing_histogram(stats)
        counts = list(hist.counts)
        elapsed = (now_ns - self._t_ns) / 1e9 if self._t_ns is not None else 0.0
        before = self._before
        lat_before = self._lat_before if len(self._lat_before) == len(counts) else [0] * len(counts)
        self._t_ns, self._before, self._lat_before = now_ns, totals, counts
        if elapsed <= 0:
            return (
                f"running: {len(stats.inputs)} in, {len(stats.outputs)} out, "
                f"{totals[4]} dropped so far{self._states(stats)}"
            )
        d = [(a - b) / elapsed for a, b in zip(totals, before, strict=True)]
        p99 = _fmt_ns(_diff_quantile(counts, lat_before, hist.edges_ns, 0.99))
        line = (
            f"in {_rate(d[0])} fr/s {_rate(d[1])} spk/s, out {_rate(d[2])} fr/s "
            f"{_rate(d[3])} spk/s, drops {_rate(d[4])}/s ({totals[4]} total), {what} p99 {p99}"
        )
        if stats.steps:
            line += f", misses {stats.deadline_misses}, rtf {stats.realtime_factor:.2f}"
        return line + self._states(stats)

    @staticmethod
    def _states(stats: BridgeStats) -> str:
        """Endpoints with a handshake that are not running, e.g. '; in0 waiting'."""
        waiting = [f"{s.name} {s.state}" for s in (*stats.inputs, *stats.outputs)
                   if s.state and s.state != "running"]
        return f"; {', '.join(waiting)}" if waiting else ""

    @staticmethod
    def totals(stats: BridgeStats) -> str:
        """Counts since start, for the last log line."""
        line = (
            f"{sum(s.frames for s in stats.inputs)} frames in, "
            f"{sum(s.frames for s in stats.outputs)} out, "
            f"{sum(s.dropped() for s in (*stats.inputs, *stats.outputs))} dropped"
        )
        unrouted = sum(s.unrouted for s in stats.inputs) + stats.processor_unrouted
        if unrouted:
            line += f", {unrouted} spikes unrouted"
        if stats.steps:
            line += f", {stats.steps} steps, {stats.deadline_misses} deadline misses"
        return line

    @staticmethod
    def _timing_histogram(stats: BridgeStats) -> tuple[Histogram, str]:
        """Step lateness when stepping, else the busiest frame-latency path."""
        if stats.steps or not stats.frame_latency:
            return stats.step_lateness, "lateness"
        return max(stats.frame_latency.values(), key=lambda h: h.count), "latency"
