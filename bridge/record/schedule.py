"""Replay on an absolute schedule: which recorded frames go out, and when.

Every due time is computed from the replay's start (``start + (t - t_first) / speed``), never
from the previous frame, so waiting errors do not add up over a long file. The clock is
injected; with a FakeClock the whole replay runs without real time passing. Nothing here
encodes or sends: the caller's ``send`` does that.
"""

from __future__ import annotations

import os
from array import array
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from bridge.engine.clock import SYSTEM_CLOCK, Clock
from bridge.engine.stats import Histogram
from bridge.frame import SpikeFrame
from bridge.record.format import EndRecord, Header, SpikeRecord
from bridge.record.sbrfile import ReadReport, SbrReader, order_segments, segment_offsets_ns

MIN_LAP_NS = 1_000_000  # a looped file whose frames all share one time still advances
WAIT_SLICE_NS = 100_000_000  # the longest single sleep, so that a stop request is seen


class Schedule:
    """Due times of recorded times ``t_ns``: ``start_ns + (lap*span + t - first) / speed``."""

    __slots__ = ("first_t_ns", "span_ns", "speed", "start_ns")

    def __init__(
        self, start_ns: int, first_t_ns: int, speed: float = 1.0, span_ns: int = 0
    ) -> None:
        if not speed > 0:
            raise ValueError(f"speed must be > 0, got {speed}")
        self.start_ns = start_ns
        self.first_t_ns = first_t_ns
        self.speed = speed
        self.span_ns = span_ns

    def due(self, t_ns: int, lap: int = 0) -> int:
        """The monotonic time at which the frame recorded at ``t_ns`` is due in lap ``lap``."""
        offset = lap * self.span_ns + t_ns - self.first_t_ns
        if self.speed == 1.0:
            return self.start_ns + offset
        return self.start_ns + round(offset / self.speed)


def wait_until(
    clock: Clock, due_ns: int, spin_ns: int = 0, stopped: Callable[[], bool] | None = None
) -> int:
    """Sleep until ``due_ns`` (monotonic), spinning for the last ``spin_ns``; returns now.

    Spinning trades a core for precision; leave it 0 with a FakeClock (which moves only
    when slept on). Returns early, before ``due_ns``, when ``stopped()`` becomes true.
    """
    while True:
        now = clock.monotonic_ns()
        left = due_ns - now
        if left <= 0 or (stopped is not None and stopped()):
            return now
        if left > spin_ns:
            clock.sleep_ns(min(left - spin_ns, WAIT_SLICE_NS))


@dataclass
class Selection:
    """Which records to replay: by endpoint name, by source node, from ``skip_ns`` on."""

    endpoints: Collection[str] = ()
    sources: Collection[int] = ()
    skip_ns: int = 0


@dataclass
class PlayStats:
    """What a replay did: counts, and how late each frame went out (histogram, raw values)."""

    frames: int = 0
    spikes: int = 0
    laps: int = 0
    send_errors: int = 0
    lateness: Histogram = field(default_factory=Histogram)
    lateness_ns: array[int] = field(default_factory=lambda: array("q"))
    first_error_ns: int | None = None
    last_error_ns: int | None = None
    reports: list[ReadReport] = field(default_factory=list)


class Recording:
    """One recording (a file, or the rotated segments of one run) read lazily, in order."""

    def __init__(self, paths: Sequence[str | os.PathLike[str]]) -> None:
        if not paths:
            raise ValueError("no recording given")
        self.readers = order_segments([SbrReader(p) for p in paths])
        self.headers: list[Header] = [r.header for r in self.readers]
        self.offsets = segment_offsets_ns(self.headers)
        self.end_ns: int | None = None

    @property
    def header(self) -> Header:
        """The first file's header (endpoints, node, start)."""
        return self.headers[0]

    def frames(self, sel: Selection) -> Iterator[tuple[int, int, SpikeFrame]]:
        """(t_ns, endpoint index, frame) of the selected frames, times on the first file's base.

        A full pass sets ``end_ns``: the end of the recording (its end record, or its last
        frame), which is where a loop starts over.
        """
        index = {ep.name: i for i, ep in enumerate(self.header.endpoints)}
        unknown = [name for name in sel.endpoints if name not in index]
        if unknown:
            names = ", ".join(index)
            raise KeyError(f"no endpoint {', '.join(unknown)} in the recording (it has {names})")
        wanted = {index[name] for name in sel.endpoints}
        sources = set(sel.sources)
        end_t = 0
        for reader, off in zip(self.readers, self.offsets, strict=True):
            for rec in reader:
                if isinstance(rec, EndRecord):
                    end_t = max(end_t, rec.t_ns + off)
                    continue
                if not isinstance(rec, SpikeRecord):
                    continue
                t = rec.t_ns + off
                end_t = max(end_t, t)
                if t < sel.skip_ns:
                    continue
                if wanted and rec.endpoint not in wanted:
                    continue
                if sources and rec.frame.source not in sources:
                    continue
                yield t, rec.endpoint, rec.frame
        self.end_ns = end_t

    def reports(self) -> list[ReadReport]:
        """The read reports of the last pass, one per file."""
        return [r.report for r in self.readers]


class Playable(Protocol):
    """What a Player reads: a Recording, or a camera file (bridge.record.camera)."""

    end_ns: int | None

    @property
    def header(self) -> Header:
        """The recording's header."""
        ...

    def frames(self, sel: Selection) -> Iterator[tuple[int, int, SpikeFrame]]:
        """(t_ns, endpoint index, frame) of the selected frames, in time order."""
        ...

    def reports(self) -> list[ReadReport]:
        """The read reports of the last pass."""
        ...


class Player:
    """Replays a recording through ``send(endpoint_index, frame)`` on an absolute schedule."""

    def __init__(
        self,
        recording: Playable,
        *,
        selection: Selection | None = None,
        speed: float = 1.0,
        loop: bool = False,
        timing: bool = True,
        clock: Clock = SYSTEM_CLOCK,
        spin_ns: int = 0,
        keep_lateness: bool = False,
    ) -> None:
        if not speed > 0:
            raise ValueError(f"speed must be > 0, got {speed}")
        self.recording = recording
        self.selection = selection or Selection()
        self.speed = speed
        self.loop = loop
        self.timing = timing
        self.clock = clock
        self.spin_ns = spin_ns
        self.keep_lateness = keep_lateness
        self.stats = PlayStats()
        self.schedule: Schedule | None = None  # set when the first frame is due
        self._stop = False

    def stop(self) -> None:
        """Ask ``run`` to return soon (from another thread or a signal handler)."""
        self._stop = True

    @property
    def stopped(self) -> bool:
        """True once ``stop`` was called."""
        return self._stop

    def _stopped(self) -> bool:
        return self._stop

    def run(
        self,
        send: Callable[[int, SpikeFrame], bool],
        on_frame: Callable[[int, PlayStats], None] | None = None,
    ) -> PlayStats:
        """Replay until the end (or forever with ``loop``, until ``stop``); returns the stats.

        ``send`` returns False when the transport refused the frame (counted, not retried).
        ``on_frame(now_ns, stats)`` runs after each frame (progress output).
        """
        st = self.stats
        clock = self.clock
        schedule: Schedule | None = None
        lap = 0
        while not self._stop:
            sent_this_lap = 0
            for t, ep, frame in self.recording.frames(self.selection):
                if self._stop:
                    break
                if schedule is None:
                    schedule = self.schedule = Schedule(clock.monotonic_ns(), t, self.speed)
                if self.timing:
                    due = schedule.due(t, lap)
                    now = wait_until(clock, due, self.spin_ns, self._stopped)
                    if now < due:  # stopped while waiting
                        break
                    late = now - due
                    st.lateness.observe(late)
                    if self.keep_lateness:
                        st.lateness_ns.append(late)
                    if st.first_error_ns is None:
                        st.first_error_ns = late
                    st.last_error_ns = late
                else:
                    now = clock.monotonic_ns()
                if not send(ep, frame):
                    st.send_errors += 1
                st.frames += 1
                st.spikes += len(frame.ids)
                sent_this_lap += 1
                if on_frame is not None:
                    on_frame(now, st)
            st.reports = self.recording.reports()
            if self._stop:
                break
            if lap == 0 and schedule is not None and self.recording.end_ns is not None:
                schedule.span_ns = max(self.recording.end_ns - schedule.first_t_ns, MIN_LAP_NS)
            st.laps += 1
            lap += 1
            if not self.loop or sent_this_lap == 0:
                break
        return st
