"""The real-time loop: poll every endpoint, admit frames, step the processor, send, tick.

One thread runs it. It never blocks on a peer: sockets and devices are non-blocking, queues
are bounded and drop their oldest entry (counted), and a refused send is a counted drop. It
reads the clock once per wake-up and passes ``now`` down. It starts no thread.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from bridge.config import BridgeConfig, resolve_outputs
from bridge.endpoints import Endpoint, EndpointSpec, make_codec, open_endpoint
from bridge.engine.clock import SYSTEM_CLOCK, Clock
from bridge.engine.pacer import Pacer
from bridge.engine.router import (
    DECODE,
    PASS,
    Span,
    count_unrouted,
    merged_size,
    relay_route,
    routed_mask,
    shift,
    take,
    uncovered,
)
from bridge.engine.sequence import ACCEPT, DUPLICATE, SeqTracker
from bridge.engine.stats import BridgeStats, EndpointStats, Histogram
from bridge.errors import REASON_INDEX, ConfigError, DecodeError, EndpointError
from bridge.frame import IdArray, SpikeFrame
from bridge.processors import Processor, processor_from_spec
from bridge.processors.usercode import user_traceback

log = logging.getLogger("spikebridge.loop")

BATCH = 256               # datagrams read from one input per wake-up, for fairness
MAX_IDLE_NS = 50_000_000  # the loop wakes at least this often, so ticks run when idle
MAX_SOURCES = 4096        # sequence trackers kept per input
HOUSEKEEPING_NS = 5_000_000  # under load, housekeeping (ticks, reopen) runs this often
PEER_DOWN_HOLD_NS = 1_000_000_000  # a refusing peer reads as down this long after its last refusal

_NOT_ALLOWED = REASON_INDEX["not_allowed"]
_UNKNOWN_SOURCE = REASON_INDEX["unknown_source"]
_DUPLICATE = REASON_INDEX["duplicate"]
_REPLAY = REASON_INDEX["replay"]
_STALE = REASON_INDEX["stale"]
_QUEUE_FULL = REASON_INDEX["queue_full"]
_SEND_FAILED = REASON_INDEX["send_failed"]
_RCVBUF = REASON_INDEX["rcvbuf_overflow"]
_UNROUTED = REASON_INDEX["unrouted"]
_PEER_UNREACHABLE = REASON_INDEX["peer_unreachable"]
_EMPTY = np.empty(0, dtype=np.uint32)


class OutputPort:
    """An output endpoint with its codec, its slice of the output population and its counters."""

    __slots__ = ("codec", "down", "ep", "index", "peer_down", "rec", "recorder", "refused_frames",
                 "refused_ns", "refused_seen", "send", "seq", "source", "span", "spec", "stats",
                 "stream", "whole")

    def __init__(self, spec: EndpointSpec, ep: Endpoint, stats: EndpointStats, node: int,
                 index: int) -> None:
        self.spec = spec
        self.ep = ep
        self.send = ep.send  # bound once: the hot path calls it per datagram
        self.stats = stats
        stats.counters = ep.counters
        self.index = index
        self.codec: Any = ep.bind_codec(make_codec(spec))
        self.stream = spec.stream
        self.span = Span(spec.offset, spec.offset + spec.neurons)
        self.whole = False
        self.seq = 0
        self.source = node if spec.source is None else spec.source
        self.down = False
        self.peer_down = False  # the peer refused a datagram (nobody listening) recently
        self.refused_ns = 0     # when it last refused (monotonic)
        self.refused_frames = 0  # stats.frames at that refusal
        self.refused_seen = 0  # the endpoint's ``refused`` count already booked
        self.recorder: Any = None  # set with ``rec`` when this output is recorded
        self.rec: int | None = None
        try:  # the node must fit the format's source field (legacy: 0..255)
            self.codec.encode(SpikeFrame(self.source, 0, 0, _EMPTY))
        except ValueError as exc:
            raise ConfigError(f"cannot send as node {self.source}: {exc}",
                              key=f"output {spec.url}") from None

    def _send_all(self, datagrams: list[bytes], spikes: int, now: int) -> None:
        st = self.stats
        ok = True
        for d in datagrams:
            try:
                sent = self.send(d)
            except EndpointError as exc:
                self._lost(exc)
                sent = False
            if sent:
                st.frames += 1
            else:
                self._failed(now)
                ok = False
        if ok:
            st.spikes += spikes

    def _failed(self, now: int) -> None:
        """Book a send that returned False: peer_unreachable if the peer refused, else send_failed.

        Off the hot path: only a refused send gets here. A refusal marks the peer down
        (logged once per outage) and keeps the transport open: sends go on, as probes.
        """
        st = self.stats
        refused = self.ep.refused
        if refused == self.refused_seen:
            st.drops[self.ep.refusal_reason] += 1
            return
        self.refused_seen = refused
        st.drops[_PEER_UNREACHABLE] += 1
        self.refused_ns = now
        self.refused_frames = st.frames
        if not self.peer_down:
            self.peer_down = True
            st.peer_up = 0
            log.warning("output %s: the peer is not listening (%s); sends go on, refusals are "
                        "counted as peer_unreachable", self.spec.name, self.ep.refusal)

    def peer_back(self, now: int) -> bool:
        """True once a down peer has refused nothing for PEER_DOWN_HOLD_NS and two frames went.

        Two frames: a refusal is reported on the send after the refused one, so one frame
        handed to the kernel since the last refusal proves nothing yet.
        """
        return (now - self.refused_ns >= PEER_DOWN_HOLD_NS
                and self.stats.frames - self.refused_frames >= 2)

    def _lost(self, exc: EndpointError) -> None:
        if not self.down:
            log.warning("output %s is down: %s; reopening with backoff", self.spec.name, exc)
            self.down = True

    def emit_raw(self, codec: Any, data: Any, spikes: int, now: int, wall_ns: int) -> None:
        """Forward a datagram that ``codec.peek`` accepted, under this output's header."""
        if self.down:
            self.stats.drops[_SEND_FAILED] += 1
            return
        if self.rec is not None:
            self.recorder.record(now, self.rec, self.source, self.seq, codec.decode(data).ids,
                                 wall_ns)
        datagrams = codec.relay_to(self.codec, data, self.source, self.seq, wall_ns)
        if len(datagrams) == 1:  # the common case, without the general loop's overhead
            self.seq += 1
            st = self.stats
            try:
                sent = self.send(datagrams[0])
            except EndpointError as exc:
                self._lost(exc)
                sent = False
            if sent:
                st.frames += 1
                st.spikes += spikes
            else:
                self._failed(now)
            return
        self.seq += len(datagrams)
        self._send_all(datagrams, spikes, now)

    def emit(self, ids: IdArray, now: int, wall_ns: int, send_empty: bool) -> None:
        """Send this output's slice of the output population's ``ids``."""
        local = take(ids, self.span, self.whole)
        if not local.size and not send_empty:
            return
        if self.down:
            self.stats.drops[_SEND_FAILED] += 1
            return
        if self.rec is not None:
            self.recorder.record(now, self.rec, self.source, self.seq, local, wall_ns)
        frame = SpikeFrame(self.source, self.seq, wall_ns, local)
        if self.stream:
            self.seq += 1
            self._send_all([self.codec.encode(frame)], len(local), now)
        else:
            datagrams = self.codec.encode(frame)
            self.seq += len(datagrams)
            self._send_all(datagrams, len(local), now)


class InputPort:
    """An input endpoint: reads, decodes and admits frames, then hands them to the engine."""

    __slots__ = (
        "allow",
        "allowed",
        "checks",
        "codec",
        "down",
        "drops_seen",
        "ep",
        "generic",
        "index",
        "logged",
        "max_age_ns",
        "neurons",
        "nowhere",
        "offset",
        "overflow_seen",
        "partial",
        "pass_outputs",
        "passthrough",
        "rec",
        "seq_bits",
        "source",
        "spec",
        "stats",
        "stream",
        "strict",
        "trackers",
    )

    def __init__(self, spec: EndpointSpec, ep: Endpoint, stats: EndpointStats, index: int,
                 max_age_ns: int | None) -> None:
        self.spec = spec
        self.ep = ep
        self.stats = stats
        stats.counters = ep.counters
        self.index = index
        self.codec: Any = ep.bind_codec(make_codec(spec))
        self.stream = spec.stream
        self.offset = spec.offset
        self.neurons = spec.neurons
        self.allow = spec.allow or None
        self.allowed: dict[Any, bool] = {}
        self.source = spec.source
        self.strict = bool(spec.keys)
        self.seq_bits = int(getattr(self.codec, "seq_bits", 32))
        self.trackers: dict[int, SeqTracker] = {}
        self.max_age_ns = max_age_ns
        self.passthrough = False
        self.pass_outputs: list[OutputPort] = []
        self.generic: list[OutputPort] = []
        self.partial = False  # some of its ids reach no output (identity processors only)
        self.nowhere = False  # none of its ids reaches an output: every frame is unrouted
        self.down = False
        self.overflow_seen = 0
        self.drops_seen: dict[str, int] = {}  # the endpoint's own drops() already booked
        self.rec: int | None = None  # the recorder's slot when this input is recorded
        self.logged: set[str] = set()  # drop reasons already logged once
        # Admission beyond decoding is needed only with a source filter, sequence numbers
        # or a staleness bound; the legacy relay path skips the call entirely.
        self.checks = (
            spec.source is not None
            or bool(getattr(self.codec, "has_seq", True))
            or max_age_ns is not None
        )

    def _is_allowed(self, addr: Any) -> bool:
        ok = self.allowed.get(addr)
        if ok is None:
            import ipaddress

            try:
                ip = ipaddress.ip_address(addr[0])
            except (ValueError, TypeError, IndexError):
                ok = False
            else:
                assert self.allow is not None
                ok = any(ip in net for net in self.allow)
            if len(self.allowed) > 4096:
                self.allowed.clear()
            self.allowed[addr] = ok
        return ok

    def admit(self, source: int, seq: int, t_sent_ns: int, wall_ns: int) -> int:
        """-1 to accept, else the drop-reason index (the caller counts it)."""
        if self.source is not None and source != self.source:
            return _UNKNOWN_SOURCE
        if seq >= 0:
            tracker = self.trackers.get(source)
            if tracker is None:
                if len(self.trackers) >= MAX_SOURCES:
                    # Forget the oldest source rather than refuse new ones: a flood of spoofed
                    # sources must not lock out a real newcomer.
                    del self.trackers[next(iter(self.trackers))]
                tracker = self.trackers[source] = SeqTracker(self.seq_bits)
            verdict = tracker.check(seq, t_sent_ns, self.strict)
            if verdict != ACCEPT:
                return _DUPLICATE if verdict == DUPLICATE else _REPLAY
        if self.max_age_ns is not None and t_sent_ns and wall_ns - t_sent_ns > self.max_age_ns:
            return _STALE
        return -1

    def note_drop(self, exc: DecodeError, addr: Any) -> None:
        """Log the first drop of each reason here with its detail; later ones are only counted."""
        self.logged.add(exc.reason)
        sender = f" from {addr[0]}:{addr[1]}" if isinstance(addr, tuple) else ""
        log.warning("input %s: dropped a frame%s: %s (further %s drops are counted, not "
                    "logged)", self.spec.name, sender, exc, exc.reason)

    def account_overflow(self) -> None:
        """Book the kernel's drops (rcvbuf_overflow) and the endpoint's own as received+dropped."""
        seen = self.ep.overflow_drops()
        if seen != self.overflow_seen:
            new = (seen - self.overflow_seen) & 0xFFFFFFFF
            self.overflow_seen = seen
            self.stats.frames += new
            self.stats.drops[_RCVBUF] += new
        for reason, seen in self.ep.drops().items():
            new = seen - self.drops_seen.get(reason, 0)
            if new > 0:
                self.drops_seen[reason] = seen
                self.stats.frames += new
                self.stats.drops[REASON_INDEX[reason]] += new


class Bridge:
    """The engine: opens endpoints, builds the processor, runs the loop, closes cleanly."""

    def __init__(self, config: BridgeConfig, *, clock: Clock = SYSTEM_CLOCK,
                 stats: BridgeStats | None = None) -> None:
        self.config = config
        self.clock = clock
        self.stats = stats if stats is not None else BridgeStats(config.miss_ns)
        self.inputs: list[InputPort] = []
        self.outputs: list[OutputPort] = []
        self.processor: Processor | None = None
        self.recorder: Any = None
        self.output_size = 0
        self.stepped = config.mode == "stepped"
        self.pacer: Pacer | None = None
        self._sel: selectors.BaseSelector | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._stop = False
        self._reload = False
        self._pending: deque[tuple[InputPort, IdArray, int]] = deque()
        self._latency: Histogram | None = None
        self._unrouted_mask: np.ndarray | None = None  # over the output population; None: all
        self._identity = False
        self._wall_offset = clock.wall_ns() - clock.monotonic_ns()
        self._mono = clock.monotonic_ns
        self._observe_latency: Callable[[int], None] = lambda _ns: None
        self._opened = False
        self._closed = False
        self.failure: str | None = None  # why the loop stopped itself (the exit is then 1)
        self._completed = False  # a finite stepped run simulated its whole duration
        self.realtime: Any = None

    # -- set-up -----------------------------------------------------------------------------

    def open(self, on_progress: Callable[[str], None] = lambda _msg: None) -> None:
        """Open every endpoint and build the processor; on failure, close what was opened."""
        cfg = self.config
        try:
            for i, spec in enumerate(cfg.inputs):
                ep = open_endpoint(spec)
                self.inputs.append(
                    InputPort(spec, ep, self.stats.add_input(spec.name), i, cfg.max_age_ns)
                )
            pending: list[tuple[int, EndpointSpec]] = []  # populations that follow the processor
            for i, spec in enumerate(cfg.outputs):
                if not spec.sized_by:
                    pending.append((i, spec))
                    continue
                ep = open_endpoint(spec)
                self.outputs.append(
                    OutputPort(spec, ep, self.stats.add_output(spec.name), cfg.node, i)
                )
            in_spans = [Span(p.offset, p.offset + p.neurons) for p in self.inputs]
            n_in = merged_size(in_spans)
            proc = processor_from_spec(cfg.processor)
            proc.configure(cfg.section(cfg.processor.partition(":")[0]))
            if proc.stepped_only and not self.stepped:
                raise ConfigError(f"{cfg.processor} needs stepped mode", key="bridge.mode")
            self.processor = proc
            self.output_size = proc.setup(
                inputs=n_in, dt_ns=cfg.dt_ns if self.stepped else None,
                params=cfg.params, on_progress=on_progress,
            )
            if pending:
                self._open_followers(pending)
            for out in self.outputs:
                if out.span.hi > self.output_size:
                    raise ConfigError(
                        f"{out.spec.name} takes neurons {out.span.lo}..{out.span.hi - 1} but the "
                        f"processor's output population has {self.output_size}",
                        key=f"output {out.spec.url}",
                    )
                out.whole = out.span.lo == 0 and out.span.hi == self.output_size
            self._plan(in_spans)
            self._open_recorder()
        except BaseException:
            self._close_endpoints()
            raise
        self._opened = True

    def _open_followers(self, pending: list[tuple[int, EndpointSpec]]) -> None:
        """Open the outputs whose population follows the built processor's output size."""
        resolved = resolve_outputs([spec for _, spec in pending], self.output_size)
        specs = list(self.config.outputs)
        for (i, _), spec in zip(pending, resolved, strict=True):
            specs[i] = spec
            port = OutputPort(spec, open_endpoint(spec), self.stats.add_output(spec.name),
                              self.config.node, i)
            self.outputs.append(port)
        self.outputs.sort(key=lambda port: port.index)
        self.config = replace(self.config, outputs=tuple(specs))

    def _open_recorder(self) -> None:
        """Start the recording writer (a thread) now, before the loop may go real-time."""
        settings = self.config.section("record")
        if settings is None or not settings.enabled:
            return
        rec = settings.recorder(
            [*self.config.inputs, *self.config.outputs], node=self.config.node, clock=self.clock
        )
        for port in self.inputs:
            port.rec = rec.slot(port.spec.name)
        for out in self.outputs:
            out.rec = rec.slot(out.spec.name)
            out.recorder = rec if out.rec is not None else None
        try:
            rec.start()
        except OSError as exc:
            raise EndpointError(f"cannot record to {settings.path}: {exc}") from None
        self.recorder = rec
        self.stats.recorder = rec

    def _plan(self, in_spans: list[Span]) -> None:
        self._identity = type(self.processor).__name__ == "RelayProcessor"
        for port, span in zip(self.inputs, in_spans, strict=True):
            if self._identity and not self.stepped:
                routes = [
                    (out, relay_route(span, out.span, self._same_wire(port, out)))
                    for out in self.outputs
                ]
                port.generic = [o for o, r in routes if r == DECODE]
                port.pass_outputs = [o for o, r in routes if r == PASS]
                port.passthrough = bool(port.pass_outputs) and not port.generic
                if not port.passthrough:
                    port.generic += port.pass_outputs
                    port.pass_outputs = []
            else:
                port.generic = list(self.outputs)
        self._plan_unrouted(in_spans)
        path = "stepped" if self.stepped else (
            "pass" if all(p.passthrough for p in self.inputs) else "relay"
        )
        self._latency = self.stats.latency(path)
        self._observe_latency = self._latency.observe

    def _plan_unrouted(self, in_spans: list[Span]) -> None:
        """Find the ids no output takes, warn about them once, and arm their counting."""
        out_spans = [o.span for o in self.outputs]
        gaps = uncovered(Span(0, self.output_size), out_spans)
        if gaps:
            self._unrouted_mask = routed_mask(Span(0, self.output_size), gaps)
        if not self._identity:
            if gaps:
                log.warning(
                    "processor output ids %s reach no output; they are counted in "
                    "spikebridge_processor_spikes_unrouted_total", _ranges(gaps))
            return
        taken = _ranges(sorted(out_spans, key=lambda sp: sp.lo)) or "nothing"
        for port, span in zip(self.inputs, in_spans, strict=True):
            mine = uncovered(span, out_spans)
            if not mine or span.hi == span.lo:
                continue
            port.partial = True
            local = [Span(g.lo - span.lo, g.hi - span.lo) for g in mine]
            if mine == [span]:
                port.nowhere = True
                log.warning(
                    "input %s (merged ids %s) reaches no output (the outputs take %s): its "
                    "frames are counted as dropped (unrouted) and their spikes as unrouted",
                    port.spec.name, _ranges(mine), taken)
            else:
                log.warning(
                    "input %s: ids %s (merged ids %s) reach no output (the outputs take %s); "
                    "those spikes are counted as unrouted", port.spec.name, _ranges(local),
                    _ranges(mine), taken)

    @staticmethod
    def _same_wire(port: InputPort, out: OutputPort) -> bool:
        if port.stream or out.stream:
            return False
        return bool(port.codec.same_wire(out.codec))

    def reconfigure(self, new: BridgeConfig) -> list[str]:
        """Apply what can change while running; return what differs and needs a restart.

        Runs in the loop thread (from ``on_reload``). Live: each input's allow-list, auth
        keys and source filter, and ``max_age_ms`` and ``on_error``. Anything else that
        differs (endpoints, populations, processor, mode, timing) is returned by name.
        """
        old = self.config
        new = replace(new, outputs=resolve_outputs(new.outputs, self.output_size))
        pending: list[str] = []
        by_name = {s.name: s for s in new.inputs}
        if [s.name for s in new.inputs] != [p.spec.name for p in self.inputs] or [
                s.name for s in new.outputs] != [o.spec.name for o in self.outputs]:
            pending.append("the set of endpoints")
        for port in self.inputs:
            spec = by_name.get(port.spec.name)
            if spec is None:
                continue
            fixed = ("url.scheme", "url.target", "format", "neurons", "offset", "codec_options",
                     "scheme_options")
            if any(_attr(spec, f) != _attr(port.spec, f) for f in fixed):
                pending.append(f"input {spec.name}")
                continue
            port.spec = spec
            port.allow = spec.allow or None
            port.allowed.clear()
            port.source = spec.source
            port.strict = bool(spec.keys)
            port.codec = port.ep.bind_codec(make_codec(spec))
            port.max_age_ns = new.max_age_ns
            port.checks = (spec.source is not None or bool(getattr(port.codec, "has_seq", True))
                           or new.max_age_ns is not None)
        for out, spec in zip(self.outputs, new.outputs, strict=False):
            if spec != out.spec:
                pending.append(f"output {spec.name}")
        for key in ("node", "mode", "processor", "params", "dt_ns", "policy", "spin_ns",
                    "miss_ns", "duration_ns", "repetitions", "queue_frames", "metrics"):
            if getattr(new, key) != getattr(old, key):
                pending.append(key)
        self.config = replace(old, inputs=tuple(p.spec for p in self.inputs),
                              max_age_ns=new.max_age_ns, on_error=new.on_error)
        return pending

    # -- control, safe from signal handlers ---------------------------------------------------

    def request_stop(self) -> None:
        """Ask the loop to return from ``run``; safe from a signal handler."""
        self._stop = True
        self._wake()

    def request_reload(self) -> None:
        """Ask the loop to reload what can be reloaded; safe from a signal handler."""
        self._reload = True
        self._wake()

    def _wake(self) -> None:
        # A full wake socket already holds a wake-up: the loop will wake anyway.
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    # -- the loop -----------------------------------------------------------------------------

    def run(self, tick: Callable[[int], None] | None = None,
            on_reload: Callable[[], None] | None = None) -> None:
        """Run until ``request_stop`` or the configured duration; ``tick(now)`` every wake-up."""
        if not self._opened:
            raise RuntimeError("open() the bridge before run()")
        self._go_realtime()
        # select(2) takes its timeout in microseconds; epoll's is whole milliseconds, which
        # Python rounds up, so every step would wake up to 1 ms late.
        sel = self._sel = selectors.SelectSelector()
        sel.register(self._wake_r, selectors.EVENT_READ, None)
        for port in self.inputs:
            sel.register(port.ep.fileno(), selectors.EVENT_READ, port)
        now = self.clock.monotonic_ns()
        self.stats.started_ns = now
        end = None if self.config.duration_ns is None else now + self.config.duration_ns
        try:
            for rep in range(self.config.repetitions):
                if rep:
                    self._completed = False
                    self._post_run()
                    assert self.processor is not None
                    self.processor.begin_run()
                    now = self.clock.monotonic_ns()
                    end = now + (self.config.duration_ns or 0)
                if self.stepped:
                    self._run_stepped(end, tick, on_reload)
                else:
                    self._run_relay(end, tick, on_reload)
                if self._stop:
                    break
        finally:
            sel.close()
            self._sel = None

    def _go_realtime(self) -> None:
        """Raise this (the loop's) thread as ``[realtime]`` asks; RealtimeRefused if required."""
        settings = self.config.section("realtime")
        if settings is None or self.realtime is not None:
            return
        from bridge.engine.realtime import Realtime

        self.realtime = Realtime(settings)
        report = self.realtime.apply()
        for name in settings.enabled():
            self.stats.realtime_refused[name] = report.refused_flag(name)

    def _housekeeping(self, now: int, tick: Callable[[int], None] | None,
                      on_reload: Callable[[], None] | None) -> None:
        st = self.stats
        st.loop_ticks += 1
        st.last_tick_ns = now
        self._wall_offset = self.clock.wall_ns() - self.clock.monotonic_ns()
        if self._reload:
            self._reload = False
            if on_reload is not None:
                on_reload()
        self._refresh_endpoints(now)
        if tick is not None:
            tick(now)

    def _poll(self, timeout_ns: int) -> int:
        """Wait up to ``timeout_ns`` for input, handle everything ready; return the time read."""
        assert self._sel is not None
        events = self._sel.select(timeout_ns / 1e9 if timeout_ns > 0 else 0)
        now = self.clock.monotonic_ns()
        if events:
            wall = self.clock.wall_ns()
            for key, _ in events:
                port = key.data
                if port is None:
                    self._drain_wake()
                elif port.stream:
                    self._read_stream(port, now, wall)
                else:
                    self._read_datagrams(port, now, wall)
        return now

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except OSError:
            pass

    def _run_relay(self, end: int | None, tick: Callable[[int], None] | None,
                   on_reload: Callable[[], None] | None) -> None:
        if len(self.inputs) == 1 and hasattr(self.inputs[0].ep, "recv_wait"):
            self._run_relay_one(end, tick, on_reload)
            return
        now = self.clock.monotonic_ns()
        while not self._stop:
            timeout = MAX_IDLE_NS if end is None else min(MAX_IDLE_NS, end - now)
            if timeout < 0:
                return
            now = self._poll(timeout)
            self._housekeeping(now, tick, on_reload)
            if end is not None and now >= end:
                return

    def _run_relay_one(self, end: int | None, tick: Callable[[int], None] | None,
                       on_reload: Callable[[], None] | None) -> None:
        """One datagram input: block in its receive call itself, not in a poller.

        With a single descriptor the poller only adds system calls (wait, read, read again
        until EAGAIN) per datagram; a blocking receive with a kernel timeout is one call, so
        the relay keeps pace with a bare recv/sendto loop. Signals still wake it (EINTR), and
        the timeout keeps housekeeping running when idle.
        """
        port = self.inputs[0]
        recv_wait = port.ep.recv_wait  # type: ignore[attr-defined]
        handle = self._handle_datagram
        clock = self.clock
        now = clock.monotonic_ns()
        next_house = now
        while not self._stop:
            timeout = MAX_IDLE_NS if end is None else min(MAX_IDLE_NS, end - now)
            if timeout <= 0:
                return
            try:
                got = recv_wait(timeout)
            except EndpointError as exc:
                self._input_down(port, exc)
                got = None
            now = clock.monotonic_ns()
            if got is not None:
                handle(port, got[0], got[1], now, now + self._wall_offset)
            if got is None or now >= next_house:
                self._housekeeping(now, tick, on_reload)
                next_house = now + HOUSEKEEPING_NS
                if port.down:
                    self._poll(min(timeout, 10_000_000))  # wait for the wake socket, not a spin

    def _run_stepped(self, end: int | None, tick: Callable[[int], None] | None,
                     on_reload: Callable[[], None] | None) -> None:
        cfg = self.config
        st = self.stats
        pacer = self.pacer = Pacer(cfg.dt_ns, policy=cfg.policy, spin_ns=cfg.spin_ns)
        now = self.clock.monotonic_ns()
        pacer.start(now)
        # A finite run is a number of steps (duration / dt), not a wall-clock time.
        last_step = None if end is None else max(1, round((cfg.duration_ns or 0) / cfg.dt_ns))
        while not self._stop:
            if last_step is not None and pacer.elapsed_steps() >= last_step:
                self._completed = True
                return
            due = pacer.due(now)
            if due is None:
                now = self._poll(min(pacer.sleep_ns(now), MAX_IDLE_NS))
                self._housekeeping(now, tick, on_reload)
                continue
            st.step_lateness.observe(due.lateness_ns)
            if due.lateness_ns > st.miss_ns:
                st.deadline_misses += 1
            st.steps_skipped += due.skipped
            now = self._poll(0)  # admit what arrived up to the deadline into this step
            self._step(now)
            st.steps += 1
            st.realtime_factor = pacer.realtime_factor(now)

    # -- per frame ----------------------------------------------------------------------------

    def _read_datagrams(self, port: InputPort, now: int, wall: int) -> None:
        recv = port.ep.recv
        handle = self._handle_datagram
        for _ in range(BATCH):
            try:
                got = recv()
            except EndpointError as exc:
                self._input_down(port, exc)
                return
            if got is None:
                break
            handle(port, got[0], got[1], now, wall)

    def _handle_datagram(self, port: InputPort, data: Any, addr: Any, now: int, wall: int) -> None:
        """Admit one datagram and forward it (relay) or queue it (stepped); count any drop."""
        st = port.stats
        st.frames += 1
        if port.allow is not None and not port._is_allowed(addr):
            st.drops[_NOT_ALLOWED] += 1
            return
        codec = port.codec
        try:
            if port.passthrough:
                source, seq, t_sent, n = codec.peek(data)
                frame = None
            else:
                frame = codec.decode(data)
                source, seq, t_sent, n = frame.source, frame.seq, frame.t_sent_ns, len(frame.ids)
        except DecodeError as exc:
            st.drops[REASON_INDEX[exc.reason]] += 1
            if exc.reason not in port.logged:
                port.note_drop(exc, addr)
            return
        if port.checks:
            verdict = port.admit(source, seq, t_sent, wall)
            if verdict >= 0:
                st.drops[verdict] += 1
                return
        st.accepted += 1
        st.spikes += n
        if t_sent:
            st.one_way.observe(wall - t_sent)
        if frame is None:
            if port.rec is not None:
                self.recorder.record(now, port.rec, source, seq, codec.decode(data).ids, t_sent)
            for out in port.pass_outputs:
                out.emit_raw(codec, data, n, now, wall)
            self._observe_latency(self._mono() - now)
        else:
            if port.rec is not None:
                self.recorder.record(now, port.rec, source, seq, frame.ids, t_sent)
            self._dispatch(port, frame.ids, now, wall)

    def _read_stream(self, port: InputPort, now: int, wall: int) -> None:
        st = port.stats
        codec = port.codec
        try:
            chunk = port.ep.recv()
        except EndpointError as exc:
            self._input_down(port, exc)
            return
        if chunk is None:
            return
        codec.feed(bytes(chunk[0]), now)
        while True:
            try:
                frame = codec.next_frame()
            except DecodeError as exc:
                st.frames += 1
                st.drops[REASON_INDEX[exc.reason]] += 1
                if exc.reason == "bad_crc":
                    self.stats.serial_crc_errors += 1
                if exc.reason not in port.logged:
                    port.note_drop(exc, None)
                continue
            if frame is None:
                break
            st.frames += 1
            verdict = port.admit(frame.source, frame.seq, frame.t_sent_ns, wall)
            if verdict >= 0:
                st.drops[verdict] += 1
                continue
            st.accepted += 1
            st.spikes += len(frame.ids)
            if port.rec is not None:
                self.recorder.record(now, port.rec, frame.source, frame.seq, frame.ids,
                                     frame.t_sent_ns)
            self._dispatch(port, frame.ids, now, wall)

    def _dispatch(self, port: InputPort, ids: IdArray, now: int, wall: int) -> None:
        """Relay: process and send now. Stepped: queue for the next step (bounded)."""
        merged = shift(ids, port.offset)
        if port.partial:
            st = port.stats
            if port.nowhere:
                st.accepted -= 1
                st.drops[_UNROUTED] += 1
                st.unrouted += len(ids)
                return
            if not self.stepped:  # stepped: counted at the step, after the queue's drops
                assert self._unrouted_mask is not None
                st.unrouted += count_unrouted(merged, self._unrouted_mask)
        if self.stepped:
            pending = self._pending
            if len(pending) >= self.config.queue_frames:
                old_port, old_ids, _ = pending.popleft()
                old_port.stats.accepted -= 1
                old_port.stats.spikes -= len(old_ids)
                old_port.stats.drops[_QUEUE_FULL] += 1
            pending.append((port, merged, now))
            return
        if self._identity:
            for out in port.generic:
                out.emit(merged, now, wall, True)
        else:
            out_ids = self._call_processor(merged, now)
            if out_ids is not None:
                if self._unrouted_mask is not None:
                    self.stats.processor_unrouted += count_unrouted(out_ids, self._unrouted_mask)
                for out in self.outputs:
                    out.emit(out_ids, now, wall, False)
        self._observe_latency(self._mono() - now)

    def _call_processor(self, ids: IdArray, now: int) -> IdArray | None:
        assert self.processor is not None
        try:
            out = self.processor.step(ids, now)
        except Exception as exc:
            self.stats.processor_errors += 1
            if self.config.on_error == "stop":
                log.error("processor %s failed; stopping (bridge.on_error = 'stop')\n%s",
                          self.config.processor, user_traceback(exc))
                self.failure = f"processor {self.config.processor} raised"
                self.request_stop()
            elif self.stats.processor_errors <= 10 or self.stats.processor_errors % 1000 == 0:
                log.error("processor %s failed (error %d); step skipped\n%s",
                          self.config.processor, self.stats.processor_errors, user_traceback(exc))
            return None
        if out.size and int(out.max()) >= self.output_size:
            self.stats.processor_errors += 1
            log.error("processor returned id %d, output population has %d; step skipped",
                      int(out.max()), self.output_size)
            return None
        return out

    def _step(self, now: int) -> None:
        pending = self._pending
        mask = self._unrouted_mask
        if mask is not None and self._identity:
            for port, merged, _ in pending:
                if port.partial:
                    port.stats.unrouted += count_unrouted(merged, mask)
        if not pending:
            ids = _EMPTY
            arrivals: list[int] = []
        elif len(pending) == 1:
            _, ids, t = pending[0]
            arrivals = [t]
        else:
            ids = np.concatenate([p[1] for p in pending])
            arrivals = [p[2] for p in pending]
        pending.clear()
        out_ids = self._call_processor(ids, now)
        if out_ids is None:
            return
        if mask is not None and not self._identity:
            self.stats.processor_unrouted += count_unrouted(out_ids, mask)
        wall = now + self._wall_offset
        for out in self.outputs:
            out.emit(out_ids, now, wall, False)
        if arrivals:
            done = self.clock.monotonic_ns()
            hist = self._latency
            assert hist is not None
            for t in arrivals:
                hist.observe(done - t)

    # -- endpoints that go away ---------------------------------------------------------------

    def _input_down(self, port: InputPort, exc: EndpointError) -> None:
        log.warning("input %s is down: %s; reopening with backoff", port.spec.name, exc)
        port.down = True
        if self._sel is not None:
            with contextlib.suppress(KeyError, ValueError, OSError, RuntimeError):
                self._sel.unregister(port.ep.fileno())
        if port.stream:
            port.codec = make_codec(port.spec)  # a fresh decoder: no half frame across a replug

    def _refresh_endpoints(self, now: int) -> None:
        """Reopen endpoints that are down; copy kernel drops, loss and up/down into stats."""
        for port in self.inputs:
            port.ep.service(now)
            port.stats.state = port.ep.state
            port.stats.control = port.ep.control
        for out in self.outputs:
            out.ep.service(now)
            out.stats.state = out.ep.state
            out.stats.control = out.ep.control
        for port in self.inputs:
            if port.down and port.ep.reopen(now):
                port.down = False
                if self._sel is not None:
                    self._sel.register(port.ep.fileno(), selectors.EVENT_READ, port)
                log.info("input %s is back", port.spec.name)
        for out in self.outputs:
            if out.down and out.ep.reopen(now):
                out.down = False
                log.info("output %s is back", out.spec.name)
            if out.peer_down and out.peer_back(now):
                out.peer_down = False
                out.stats.peer_up = 1
                log.info("output %s: the peer accepts datagrams again", out.spec.name)
        reconnects = 0
        for port in self.inputs:
            port.account_overflow()
            reconnects += getattr(port.ep, "reconnects", 0)
            port.stats.up = 0 if port.down or port.ep.state == "down" else 1
            if port.trackers:
                port.stats.lost = sum(t.lost for t in port.trackers.values())
                port.stats.reordered = sum(t.reordered for t in port.trackers.values())
        for out in self.outputs:
            pending = getattr(out.ep, "pending", None)
            if pending is not None and not out.down and pending():
                try:
                    out.ep.flush()  # type: ignore[attr-defined]
                except EndpointError as exc:
                    out._lost(exc)
            reconnects += getattr(out.ep, "reconnects", 0)
            out.stats.up = 0 if out.down or out.ep.state == "down" else 1
        self.stats.serial_reconnects = reconnects

    # -- shutdown -----------------------------------------------------------------------------

    def drain(self) -> None:
        """Handle what is already queued in the kernel and, when stepped, run a last step."""
        if not self._opened:
            return
        now = self.clock.monotonic_ns()
        wall = self.clock.wall_ns()
        for port in self.inputs:
            if not port.down:
                if port.stream:
                    self._read_stream(port, now, wall)
                else:
                    self._read_datagrams(port, now, wall)
                port.account_overflow()
        if self.stepped and self._pending:
            if self._completed:
                # The run already simulated its full duration: frames that came after its
                # last step are too late for it, and are counted so.
                for port, ids, _ in self._pending:
                    port.stats.accepted -= 1
                    port.stats.spikes -= len(ids)
                    port.stats.drops[_STALE] += 1
                self._pending.clear()
            else:
                self._step(self.clock.monotonic_ns())

    def _post_run(self) -> None:
        if self.processor is not None:
            try:
                self.processor.post_run()
            except Exception as exc:
                log.error("post-run hook of %s failed\n%s", self.config.processor,
                          user_traceback(exc))

    def close(self) -> None:
        """Drain, flush the recorder, run the post-run hook, close everything; idempotent."""
        if self._closed:
            return
        self._closed = True
        if self.realtime is not None:
            self.realtime.release()  # shutdown work (hooks, flushing) is not real-time work
        try:
            self.drain()
        finally:
            if self.recorder is not None:
                try:
                    self.recorder.close()
                except Exception:
                    log.exception("closing the recorder failed")
            self._post_run()
            if self.processor is not None:
                try:
                    self.processor.close()
                except Exception:
                    log.exception("closing %s failed", self.config.processor)
            self._close_endpoints()
            self._wake_r.close()
            self._wake_w.close()

    def _close_endpoints(self) -> None:
        ports: list[InputPort | OutputPort] = [*self.inputs, *self.outputs]
        for port in ports:
            try:
                port.ep.close()
            except Exception:
                log.exception("closing %s failed", port.spec.name)

    def __enter__(self) -> Bridge:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _ranges(spans: list[Span]) -> str:
    """``3..9, 20..31``: inclusive id ranges, as a user writes them."""
    return ", ".join(f"{s.lo}..{s.hi - 1}" if s.hi - s.lo > 1 else str(s.lo) for s in spans)


def _attr(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


__all__ = ["Bridge", "InputPort", "OutputPort"]
