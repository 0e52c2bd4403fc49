"""Hot-path statistics: plain integers and lists updated in place by the loop.

Nothing here takes a lock, reads a clock or talks to Prometheus. The metrics collector reads
these objects at scrape time; an input's books are copied between two frames (see
bridge.service.metrics_process), a torn read of any other counter is harmless.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Mapping
from typing import Any

from bridge.errors import DROP_REASONS, REASON_INDEX

# Bucket upper edges in ns, 10 µs to 100 ms. The default miss threshold (DEFAULT_MISS_NS) is
# one of the edges so "late beyond the threshold" can be read exactly from the buckets.
DEFAULT_MISS_NS = 1_000_000
BUCKET_EDGES_NS: tuple[int, ...] = (
    10_000, 20_000, 50_000, 100_000, 200_000, 300_000, 500_000,
    1_000_000, 2_000_000, 5_000_000, 10_000_000, 20_000_000, 50_000_000, 100_000_000,
)


def bucket_edges(miss_ns: int = DEFAULT_MISS_NS) -> tuple[int, ...]:
    """The standard edges with ``miss_ns`` added as an edge when it is not already one."""
    if not miss_ns > 0:
        raise ValueError(f"miss threshold must be > 0 ns, got {miss_ns}")
    return tuple(sorted(set(BUCKET_EDGES_NS) | {miss_ns}))


class Histogram:
    """Cumulative-on-read histogram in ns: ``observe`` is a bisect and two additions."""

    __slots__ = ("count", "counts", "edges_ns", "sum_ns")

    def __init__(self, edges_ns: tuple[int, ...] = BUCKET_EDGES_NS) -> None:
        if list(edges_ns) != sorted(set(edges_ns)):
            raise ValueError("bucket edges must be strictly increasing")
        self.edges_ns = edges_ns
        self.counts = [0] * (len(edges_ns) + 1)  # the last slot is +Inf
        self.sum_ns = 0
        self.count = 0

    def observe(self, ns: int) -> None:
        """Count one value (values below zero count in the first bucket)."""
        self.counts[bisect_left(self.edges_ns, ns)] += 1
        self.sum_ns += ns
        self.count += 1

    def cumulative(self) -> list[int]:
        """Counts at or below each edge, then the total (+Inf), as Prometheus wants them."""
        out, run = [], 0
        for c in self.counts:
            run += c
            out.append(run)
        return out

    def quantile(self, q: float) -> float:
        """Upper edge (ns) of the bucket that holds quantile ``q``; inf when beyond the last."""
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile must be in [0, 1], got {q}")
        if self.count == 0:
            return float("nan")
        target = q * self.count
        run = 0
        for i, c in enumerate(self.counts):
            run += c
            if run >= target and c:
                return float(self.edges_ns[i]) if i < len(self.edges_ns) else float("inf")
        return float("inf")


class EndpointStats:
    """Counters of one endpoint. For inputs, received = accepted + sum(drops) always holds."""

    __slots__ = (
        "accepted", "control", "counters", "direction", "drops", "frames", "lost", "name",
        "one_way", "peer_up", "reordered", "spikes", "state", "unrouted", "up",
    )

    def __init__(self, name: str, direction: str) -> None:
        if direction not in ("in", "out"):
            raise ValueError(f"direction must be 'in' or 'out', got {direction!r}")
        self.name = name
        self.direction = direction
        self.frames = 0      # received (inputs) or handed to the kernel (outputs)
        self.accepted = 0    # inputs only
        self.spikes = 0      # spikes accepted (inputs) or sent (outputs)
        self.drops = [0] * len(DROP_REASONS)
        self.lost = 0        # sequence gaps seen on the wire (frames the peer sent, never came)
        self.reordered = 0   # accepted but arrived after a later sequence number
        self.one_way = Histogram()
        self.up = 1          # 0 while the transport is gone and the loop is reopening it
        self.peer_up = 1     # outputs: 0 while the peer refuses datagrams (peer_unreachable)
        self.unrouted = 0    # inputs: accepted spikes that fall in no output's slice
        self.state = ""      # the endpoint's protocol state (spinnaker: waiting ... running)
        self.control: Mapping[str, int] = {}  # its control messages by result (handshakes)
        self.counters: Mapping[str, int] = {}  # the endpoint's own counters (a live view)

    def drop(self, reason: str, n: int = 1) -> None:
        """Count ``n`` drops for ``reason`` (a DROP_REASONS name); not for the hot path."""
        self.drops[REASON_INDEX[reason]] += n

    def dropped(self) -> int:
        """All drops, every reason."""
        return sum(self.drops)

    def drops_by_reason(self) -> dict[str, int]:
        """Non-zero drop counts by reason name."""
        return {r: n for r, n in zip(DROP_REASONS, self.drops, strict=True) if n}

    def balanced(self) -> bool:
        """For inputs: every received frame was accepted or dropped for a counted reason."""
        return self.direction == "out" or self.frames == self.accepted + self.dropped()


class BridgeStats:
    """All counters of one running bridge; the loop owns it and the collector reads it."""

    __slots__ = (
        "deadline_misses",
        "frame_latency",
        "inputs",
        "last_tick_ns",
        "loop_ticks",
        "miss_ns",
        "outputs",
        "processor_errors",
        "processor_unrouted",
        "realtime_factor",
        "realtime_refused",
        "recorder",
        "serial_crc_errors",
        "serial_reconnects",
        "started_ns",
        "step_lateness",
        "steps",
        "steps_skipped",
        "watchdog_pings",
        "watchdog_usec",
    )

    def __init__(self, miss_ns: int = DEFAULT_MISS_NS) -> None:
        edges = bucket_edges(miss_ns)
        self.miss_ns = miss_ns
        self.inputs: list[EndpointStats] = []
        self.outputs: list[EndpointStats] = []
        self.step_lateness = Histogram(edges)
        self.frame_latency: dict[str, Histogram] = {}
        self.steps = 0
        self.steps_skipped = 0
        self.deadline_misses = 0
        self.realtime_factor = 0.0
        self.realtime_refused: dict[str, int] = {}  # setting -> 1 when asked for and refused
        self.recorder: Any = None  # the daemon's Recorder when [record] is on (plain counters)
        self.processor_errors = 0
        self.processor_unrouted = 0  # processor output ids that fall in no output's slice
        self.watchdog_pings = 0
        self.watchdog_usec = 0      # the service manager's watchdog timeout; 0 when none
        self.serial_reconnects = 0
        self.serial_crc_errors = 0
        self.loop_ticks = 0
        self.last_tick_ns = 0
        self.started_ns = 0

    def add_input(self, name: str) -> EndpointStats:
        """Register and return the counters of a new input."""
        st = EndpointStats(name, "in")
        self.inputs.append(st)
        return st

    def add_output(self, name: str) -> EndpointStats:
        """Register and return the counters of a new output."""
        st = EndpointStats(name, "out")
        self.outputs.append(st)
        return st

    def latency(self, path: str) -> Histogram:
        """The frame-latency histogram for ``path`` (created on first use, at set-up)."""
        hist = self.frame_latency.get(path)
        if hist is None:
            hist = self.frame_latency[path] = Histogram(self.step_lateness.edges_ns)
        return hist
