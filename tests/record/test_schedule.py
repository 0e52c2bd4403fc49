"""Replay timing on a fake clock: absolute due times, no drift under jitter, speed, loop, skip."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from bridge.engine.clock import FakeClock
from bridge.frame import SpikeFrame
from bridge.record.format import EndpointInfo, Header, encode_end, encode_spikes
from bridge.record.sbrfile import SbrWriter
from bridge.record.schedule import Player, Recording, Schedule, Selection, wait_until

MS = 1_000_000
EPS = (EndpointInfo("in0", "udp://h:1", "in", "native", 100),
       EndpointInfo("in1", "udp://h:2", "in", "native", 100))


def write(path: Path, frames: list[tuple[int, int, int, int]], end_t: int | None = None) -> Path:
    """frames: (t_ns, endpoint, source, seq); ids are [seq % 100]."""
    w = SbrWriter(path, Header(EPS, start_wall_ns=0, start_mono_ns=0, run="x"))
    for t, ep, src, seq in frames:
        w.write(encode_spikes(t, ep, src, seq, 0, np.array([seq % 100], dtype=np.uint32)))
    if end_t is not None:
        w.write(encode_end(end_t, len(frames), len(frames), 0, 0))
    w.close()
    return path


class JitterClock(FakeClock):
    """A fake clock whose sleeps overshoot by a random 0..max_ns, as real sleeps do."""

    __slots__ = ("max_ns", "rng")

    def __init__(self, max_ns: int) -> None:
        super().__init__(1_000 * MS)
        self.max_ns = max_ns
        self.rng = random.Random(7)

    def sleep_ns(self, ns: int) -> None:
        if ns > 0:
            self.advance(ns + self.rng.randrange(self.max_ns + 1))


def play(player: Player, clock: FakeClock) -> list[tuple[int, int, int]]:
    sent: list[tuple[int, int, int]] = []

    def send(ep: int, frame: SpikeFrame) -> bool:
        sent.append((clock.monotonic_ns(), ep, frame.seq))
        return True

    player.run(send)
    return sent


def test_schedule_arithmetic() -> None:
    s = Schedule(start_ns=1000, first_t_ns=500, speed=2.0, span_ns=4000)
    assert s.due(500) == 1000
    assert s.due(2500) == 2000
    assert s.due(500, lap=1) == 3000
    with pytest.raises(ValueError):
        Schedule(0, 0, speed=0)


def test_frames_go_out_at_their_recorded_offsets(tmp_path: Path) -> None:
    times = [5 * MS, 6 * MS, 6 * MS, 10 * MS, 1005 * MS]
    path = write(tmp_path / "a.sbr", [(t, 0, 1, i) for i, t in enumerate(times)])
    clock = FakeClock(777)
    player = Player(Recording([path]), clock=clock)
    sent = play(player, clock)
    assert [s[0] - 777 for s in sent] == [t - times[0] for t in times]
    assert [s[2] for s in sent] == [0, 1, 2, 3, 4]
    assert player.stats.frames == 5
    assert player.stats.lateness.count == 5
    assert player.stats.lateness.sum_ns == 0


def test_jittery_sleeps_do_not_accumulate(tmp_path: Path) -> None:
    n = 5000
    path = write(tmp_path / "a.sbr", [(i * MS, 0, 1, i) for i in range(n)])
    clock = JitterClock(max_ns=50_000)
    player = Player(Recording([path]), clock=clock, keep_lateness=True)
    sent = play(player, clock)
    late = np.array(player.stats.lateness_ns)
    assert len(late) == n
    assert late.max() <= 50_000  # each frame is late by at most one sleep's overshoot
    start = sent[0][0]
    # The last frame is due exactly (n-1) ms after the first; drift would be n x mean jitter.
    assert sent[-1][0] - start - (n - 1) * MS == late[-1] <= 50_000


def test_speed_scales_the_schedule(tmp_path: Path) -> None:
    path = write(tmp_path / "a.sbr", [(0, 0, 1, 0), (10 * MS, 0, 1, 1), (30 * MS, 0, 1, 2)])
    clock = FakeClock()
    sent = play(Player(Recording([path]), speed=2.0, clock=clock), clock)
    assert [s[0] for s in sent] == [0, 5 * MS, 15 * MS]


def test_ignore_timing_sends_without_waiting(tmp_path: Path) -> None:
    path = write(tmp_path / "a.sbr", [(0, 0, 1, 0), (10 * MS, 0, 1, 1), (30 * MS, 0, 1, 2)])
    clock = FakeClock()
    player = Player(Recording([path]), timing=False, clock=clock)
    sent = play(player, clock)
    assert [s[0] for s in sent] == [0, 0, 0]
    assert player.stats.lateness.count == 0


def test_skip_and_filters(tmp_path: Path) -> None:
    frames = [(i * MS, i % 2, 1 + i % 3, i) for i in range(12)]
    path = write(tmp_path / "a.sbr", frames)
    clock = FakeClock()
    sel = Selection(endpoints=["in1"], sources=[1, 2], skip_ns=4 * MS)
    sent = play(Player(Recording([path]), selection=sel, clock=clock), clock)
    want = [seq for t, ep, src, seq in frames if t >= 4 * MS and ep == 1 and src in (1, 2)]
    assert [s[2] for s in sent] == want == [7, 9]
    assert [s[0] for s in sent] == [0, 2 * MS]  # starts at the first selected frame
    with pytest.raises(KeyError, match="no endpoint nope"):
        play(Player(Recording([path]), selection=Selection(endpoints=["nope"]), clock=clock),
             clock)


def test_loop_repeats_with_the_recording_length_as_period(tmp_path: Path) -> None:
    path = write(tmp_path / "a.sbr", [(MS, 0, 1, 0), (2 * MS, 0, 1, 1)], end_t=4 * MS)
    clock = FakeClock()
    player = Player(Recording([path]), loop=True, clock=clock)
    sent: list[int] = []

    def send(_ep: int, _frame: SpikeFrame) -> bool:
        sent.append(clock.monotonic_ns())
        if len(sent) == 6:
            player.stop()
        return True

    stats = player.run(send)
    # Lap period is end (4 ms) minus the first frame (1 ms) = 3 ms.
    assert sent == [0, MS, 3 * MS, 4 * MS, 6 * MS, 7 * MS]
    assert stats.laps == 2


def test_refused_sends_are_counted(tmp_path: Path) -> None:
    path = write(tmp_path / "a.sbr", [(0, 0, 1, 0), (MS, 0, 1, 1)])
    stats = Player(Recording([path]), clock=FakeClock()).run(lambda _e, _f: False)
    assert (stats.frames, stats.send_errors) == (2, 2)


def test_wait_until_stops_early_when_asked() -> None:
    clock = FakeClock()
    calls = []

    def stopped() -> bool:
        calls.append(clock.monotonic_ns())
        return len(calls) > 3

    now = wait_until(clock, 10_000 * MS, stopped=stopped)
    assert now < 10_000 * MS  # returned in slices, not after one long sleep
