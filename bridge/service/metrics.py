"""The Prometheus collector: reads a BridgeStats at scrape time and yields spikebridge_* families.

Base units (seconds), the ``spikebridge_`` prefix, small fixed label sets (endpoint names from
the config, drop reasons from errors.DROP_REASONS, latency paths set up by the loop). It runs
in the metrics server's thread: it only reads the loop's plain counters, never writes to them,
never takes a lock the loop could wait on, and never calls ``observe`` on anything.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Callable, Iterable, Iterator, Mapping
from importlib import metadata

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import REGISTRY, CollectorRegistry
from prometheus_client.utils import floatToGoString

from bridge import __version__
from bridge.engine.stats import BridgeStats, EndpointStats, Histogram
from bridge.errors import DROP_REASONS

PREFIX = "spikebridge_"

# Reasons an output can drop for; an output's other reasons are exported once non-zero.
# (Inputs export every input reason, so that rate() alerts see them from 0.)
OUTPUT_REASONS = frozenset({"queue_full", "send_failed", "peer_unreachable"})
INPUT_REASONS = frozenset(DROP_REASONS) - {"send_failed", "peer_unreachable"}


def build_labels() -> dict[str, str]:
    """Version labels for ``spikebridge_build_info``: ours, Python's and the numeric stack's."""
    labels = {"version": __version__, "python": platform.python_version()}
    for dist in ("numpy", "brian2"):
        try:
            labels[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            labels[dist] = ""
    return labels


class BridgeCollector:
    """A custom collector over one BridgeStats (client_python's ``collect`` protocol)."""

    def __init__(self, stats: BridgeStats, build: Mapping[str, str] | None = None) -> None:
        self._stats = stats
        self._build = dict(build_labels() if build is None else build)
        self._le_cache: dict[tuple[int, ...], list[str]] = {}

    def describe(self) -> list[Metric]:
        """No up-front description: the label values exist only once the loop is set up."""
        return []

    def collect(self) -> Iterator[Metric]:
        """Every spikebridge_* family, read from the stats now.

        The exposition is formatted family by family as this generator is consumed, in the
        metrics thread; between families it lets go of the GIL, so that the real-time loop,
        waking for its next step, waits for one family's formatting and not a whole scrape's.
        """
        for family in self._families():
            yield family
            os.sched_yield()  # releases the GIL (~1 µs; time.sleep(0) costs the timer slack)

    def _families(self) -> Iterator[Metric]:
        """The families, built from one read of the stats each."""
        st = self._stats
        inputs, outputs = list(st.inputs), list(st.outputs)
        endpoints = inputs + outputs

        info = GaugeMetricFamily(
            PREFIX + "build_info", "spikebridge build and runtime versions (value is 1).",
            labels=list(self._build),
        )
        info.add_metric(list(self._build.values()), 1)
        yield info

        yield _per_endpoint(
            CounterMetricFamily, "frames_received", "Frames read from an input endpoint.",
            inputs, lambda e: e.frames)
        yield _per_endpoint(
            CounterMetricFamily, "frames_accepted", "Input frames that passed admission.",
            inputs, lambda e: e.accepted)
        yield _per_endpoint(
            CounterMetricFamily, "frames_sent", "Frames handed to the kernel by an output.",
            outputs, lambda e: e.frames)
        yield _per_endpoint(
            CounterMetricFamily, "spikes_received", "Spikes in accepted input frames.",
            inputs, lambda e: e.spikes)
        yield _per_endpoint(
            CounterMetricFamily, "spikes_sent", "Spikes in frames sent by an output.",
            outputs, lambda e: e.spikes)
        yield _per_endpoint(
            CounterMetricFamily, "frames_lost", "Sequence gaps: frames sent that never came.",
            inputs, lambda e: e.lost)
        yield _per_endpoint(
            CounterMetricFamily, "frames_reordered", "Accepted frames that arrived out of order.",
            inputs, lambda e: e.reordered)
        yield _per_endpoint(
            GaugeMetricFamily, "endpoint_up",
            "1 while the endpoint is open, 0 while the bridge reopens it (a bridge-side fault).",
            endpoints, lambda e: e.up)
        yield _per_endpoint(
            GaugeMetricFamily, "peer_up",
            "Outputs: 0 while the peer refuses datagrams (nobody listens there), else 1.",
            outputs, lambda e: e.peer_up)
        unrouted = CounterMetricFamily(
            PREFIX + "spikes_dropped",
            "Spikes accepted by an input but dropped, by reason (unrouted: in no output's slice).",
            labels=["endpoint", "reason"],
        )
        for ep in inputs:
            unrouted.add_metric([ep.name, "unrouted"], ep.unrouted)
        yield unrouted

        state = GaugeMetricFamily(
            PREFIX + "endpoint_state", "1 for the protocol state an endpoint is in "
            "(spinnaker: waiting, reading, tagging, ready, running, stopped, down).",
            labels=["endpoint", "state"])
        control = CounterMetricFamily(
            PREFIX + "control_messages", "Handshake messages an endpoint handled, by result "
            "(database, start, stop, or the reason it was dropped).",
            labels=["endpoint", "result"])
        for ep in endpoints:
            if ep.state:
                state.add_metric([ep.name, ep.state], 1)
            for result, n in sorted(dict(ep.control).items()):
                control.add_metric([ep.name, result], n)
        yield state
        yield control

        own = CounterMetricFamily(
            PREFIX + "endpoint_events", "An endpoint's own counters, by name (dv: reconnects, "
            "connect_failures, events_outside, clients_accepted, clients_refused, "
            "slow_clients, clients_closed; serial: reconnects).",
            labels=["endpoint", "counter"])
        for ep in endpoints:
            for counter, n in dict(ep.counters).items():
                own.add_metric([ep.name, counter], n)
        yield own

        dropped = CounterMetricFamily(
            PREFIX + "frames_dropped", "Frames dropped, by endpoint and reason.",
            labels=["endpoint", "reason"],
        )
        for ep in endpoints:
            always = INPUT_REASONS if ep.direction == "in" else OUTPUT_REASONS
            for reason, n in zip(DROP_REASONS, list(ep.drops), strict=True):
                if n or reason in always:
                    dropped.add_metric([ep.name, reason], n)
        yield dropped

        yield self._histogram(
            "step_lateness_seconds", "How late each step started after its deadline.",
            [((), st.step_lateness)])
        yield self._histogram(
            "frame_latency_seconds", "Ingress to egress inside the daemon, by path.",
            [((path,), h) for path, h in list(st.frame_latency.items())], ["path"])
        yield self._histogram(
            "one_way_latency_seconds", "Peer send time to arrival, from native frame timestamps.",
            [((e.name,), e.one_way) for e in inputs], ["endpoint"])

        rec = st.recorder
        if rec is not None:
            for name, doc, value in (
                ("record_frames", "Frames written to the recording.", rec.frames_written),
                ("record_bytes", "Bytes written to the recording.", rec.bytes_written),
                ("record_files", "Recording files opened (rotation).", rec.files),
                ("record_write_errors", "Failed writes to the recording.", rec.write_errors),
            ):
                yield CounterMetricFamily(PREFIX + name, doc, value=value)
            lost = CounterMetricFamily(
                PREFIX + "record_dropped_frames",
                "Frames not recorded: overflow (the writer fell behind) or not_written "
                "(disk full or write error).", labels=["reason"])
            lost.add_metric(["overflow"], rec.dropped_frames)
            lost.add_metric(["not_written"], rec.lost_frames)
            yield lost
            yield GaugeMetricFamily(PREFIX + "record_paused",
                                    "1 while recording is paused (disk full, write error).",
                                    value=int(rec.paused is not None))

        refused = GaugeMetricFamily(
            PREFIX + "realtime_refused",
            "1 when a [realtime] setting was asked for and refused by the system, else 0.",
            labels=["setting"],
        )
        for setting, flag in sorted(st.realtime_refused.items()):
            refused.add_metric([setting], flag)
        yield refused

        for name, doc, value in (
            ("steps", "Processor steps run.", st.steps),
            ("steps_skipped", "Steps dropped by the skip policy.", st.steps_skipped),
            ("deadline_misses", "Steps that started later than the miss threshold.",
             st.deadline_misses),
            ("processor_errors", "Steps whose processor raised.", st.processor_errors),
            ("processor_spikes_unrouted", "Processor output spikes in no output's slice.",
             st.processor_unrouted),
            ("serial_reconnects", "Serial ports reopened after they went away.",
             st.serial_reconnects),
            ("serial_crc_errors", "Serial frames with a bad checksum.", st.serial_crc_errors),
            ("watchdog_pings", "WATCHDOG=1 notifications sent by the loop.", st.watchdog_pings),
            ("loop_ticks", "Iterations of the real-time loop.", st.loop_ticks),
        ):
            yield CounterMetricFamily(PREFIX + name, doc, value=value)
        for name, doc, gauge in (
            ("realtime_factor", "Simulated time over wall time (1.0 keeps pace).",
             st.realtime_factor),
            ("miss_threshold_seconds", "Lateness beyond which a step counts as a deadline miss.",
             st.miss_ns / 1e9),
            ("watchdog_timeout_seconds", "The service manager's watchdog timeout (0: none).",
             st.watchdog_usec / 1e6),
        ):
            yield GaugeMetricFamily(PREFIX + name, doc, value=gauge)

    def _histogram(
        self,
        name: str,
        doc: str,
        series: Iterable[tuple[tuple[str, ...], Histogram]],
        labels: list[str] | None = None,
    ) -> HistogramMetricFamily:
        """One histogram family from ns histograms; count is read from the same snapshot."""
        fam = HistogramMetricFamily(PREFIX + name, doc, labels=labels or [])
        for values, hist in series:
            les = self._les(hist.edges_ns)
            cumulative = hist.cumulative()
            fam.add_metric(list(values), list(zip(les, cumulative, strict=True)), hist.sum_ns / 1e9)
        return fam

    def _les(self, edges_ns: tuple[int, ...]) -> list[str]:
        """The ``le`` label values for ``edges_ns`` in seconds, then +Inf (cached per edge set)."""
        les = self._le_cache.get(edges_ns)
        if les is None:
            les = [floatToGoString(e / 1e9) for e in edges_ns] + ["+Inf"]
            self._le_cache[edges_ns] = les
        return les


def _per_endpoint(
    kind: type[CounterMetricFamily] | type[GaugeMetricFamily],
    name: str,
    doc: str,
    endpoints: Iterable[EndpointStats],
    value: Callable[[EndpointStats], float],
) -> Metric:
    """A family with one sample per endpoint, labelled ``endpoint``."""
    fam = kind(PREFIX + name, doc, labels=["endpoint"])
    for ep in endpoints:
        fam.add_metric([ep.name], value(ep))
    return fam


def register(
    stats: BridgeStats,
    registry: CollectorRegistry = REGISTRY,
    build: Mapping[str, str] | None = None,
) -> BridgeCollector:
    """Register a collector over ``stats`` (the process-wide registry by default)."""
    collector = BridgeCollector(stats, build)
    registry.register(collector)
    return collector
