"""Recorder: bounded buffer with counted drops, rotation, free-space guard, write errors.

The writer is driven by explicit ``pump`` calls on a FakeClock, except in the one test of
the real writer thread, which waits for ``flush`` (completion, not elapsed time).
"""

from __future__ import annotations

import errno
from pathlib import Path

import numpy as np
import pytest

from bridge.engine.clock import FakeClock
from bridge.record.format import EndpointInfo, EndRecord, GapRecord, SpikeRecord
from bridge.record.recorder import Recorder, segment_path
from bridge.record.sbrfile import SbrReader, load_table

EPS = [EndpointInfo("in0", "udp://127.0.0.1:5000", "in", "native", 100),
       EndpointInfo("out0", "udp://127.0.0.1:5001", "out", "native", 100)]
MS = 1_000_000


class Disk:
    """A fake free-space probe the test sets by hand."""

    def __init__(self, free: int) -> None:
        self.free = free

    def __call__(self, _path: str) -> int:
        return self.free


def make(tmp_path: Path, clock: FakeClock, name: str = "run.sbr", **kw: object) -> Recorder:
    kw.setdefault("min_free_bytes", 0)
    rec = Recorder(tmp_path / name, EPS, clock=clock, **kw)  # type: ignore[arg-type]
    rec.start(thread=False)
    return rec


def ids(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.uint32)


def spike_records(path: Path) -> list[SpikeRecord]:
    return list(SbrReader(path).spikes())


def test_records_are_written_with_times_relative_to_the_header(tmp_path: Path) -> None:
    clock = FakeClock(5 * MS)
    rec = make(tmp_path, clock, node=3)
    assert rec.record(6 * MS, 0, 11, 0, ids(1, 2))
    assert rec.record(7 * MS, 1, 3, 5, ids(), t_sent_ns=123)
    rec.pump()
    rec.close()
    reader = SbrReader(tmp_path / "run.sbr")
    assert reader.header.start_mono_ns == 5 * MS
    assert reader.header.node == 3
    assert reader.header.endpoints == tuple(EPS)
    got = list(reader)
    assert [(r.t_ns, r.endpoint) for r in got if isinstance(r, SpikeRecord)] == [
        (1 * MS, 0), (2 * MS, 1)
    ]
    spikes = [r for r in got if isinstance(r, SpikeRecord)]
    assert spikes[0].frame.ids.tolist() == [1, 2]
    assert spikes[1].frame.t_sent_ns == 123
    assert got[-1] == EndRecord(0, 2, 2, 0, 0)  # closed at the start time (fake clock)
    assert (rec.frames_written, rec.spikes_written) == (2, 2)


def test_full_buffer_drops_new_frames_counts_them_and_notes_a_gap(tmp_path: Path) -> None:
    clock = FakeClock()
    rec = make(tmp_path, clock, buffer_frames=3)
    results = [rec.record(i, 0, 1, i, ids(i, i + 1)) for i in range(5)]
    assert results == [True, True, True, False, False]
    assert (rec.dropped_frames, rec.dropped_spikes, rec.queued) == (2, 4, 3)
    clock.advance(MS)
    rec.pump()
    rec.close()
    got = list(SbrReader(tmp_path / "run.sbr"))
    assert got[0] == GapRecord(MS, "overflow", 2, 4)
    assert [r.frame.seq for r in got if isinstance(r, SpikeRecord)] == [0, 1, 2]
    assert got[-1] == EndRecord(MS, 3, 6, 2, 4)


def test_spike_budget_bounds_memory(tmp_path: Path) -> None:
    rec = make(tmp_path, FakeClock(), buffer_spikes=10)
    assert rec.record(0, 0, 1, 0, np.arange(8, dtype=np.uint32))
    assert not rec.record(0, 0, 1, 1, np.arange(3, dtype=np.uint32))
    rec.pump()  # the writer frees the budget
    assert rec.record(0, 0, 1, 2, np.arange(10, dtype=np.uint32))
    rec.close()


def test_frames_before_start_and_after_close_are_counted(tmp_path: Path) -> None:
    rec = Recorder(tmp_path / "x.sbr", EPS, clock=FakeClock(), min_free_bytes=0)
    assert not rec.record(0, 0, 1, 0, ids(1))
    rec.start(thread=False)
    rec.close()
    assert not rec.record(0, 0, 1, 0, ids(1))
    assert rec.dropped_frames == 2


def test_rotation_by_size_keeps_every_frame_across_segments(tmp_path: Path) -> None:
    clock = FakeClock()
    rec = make(tmp_path, clock, rotate_bytes=1500)
    for i in range(100):
        clock.advance(MS)
        rec.record(clock.monotonic_ns(), 0, 1, i, np.arange(10, dtype=np.uint32))
        if i % 10 == 9:
            rec.pump()
    rec.close()
    files = sorted(tmp_path.glob("run-*.sbr"))
    assert len(files) == rec.files > 3
    assert all(f.stat().st_size < 1500 + 1000 for f in files)
    table = load_table(files)
    assert table.frames == 100
    assert np.array_equal(np.unique(table.seq), np.arange(100))
    times = table.t_ns[np.unique(table.frame, return_index=True)[1]]
    assert np.array_equal(times, np.arange(1, 101) * MS)  # one time base across segments
    for f in files:
        assert SbrReader(f).report.problems() == "" or list(SbrReader(f))  # read fully
        reader = SbrReader(f)
        list(reader)
        assert reader.report.complete


def test_rotation_by_time(tmp_path: Path) -> None:
    clock = FakeClock()
    rec = make(tmp_path, clock, "t-{n}.sbr", rotate_seconds=1.0)
    for _ in range(5):
        clock.advance(600 * MS)
        rec.record(clock.monotonic_ns(), 0, 1, 0, ids(1))
        rec.pump()
    rec.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t-0000.sbr", "t-0001.sbr", "t-0002.sbr"]
    assert [SbrReader(tmp_path / f"t-000{i}.sbr").header.segment for i in range(3)] == [0, 1, 2]


def test_segment_names() -> None:
    wall = 1_700_000_000 * 10**9
    assert str(segment_path("/d/run-{start}.sbr", wall, 0, False)) == "/d/run-20231114T221320Z.sbr"
    assert str(segment_path("/d/run.sbr", wall, 2, True)) == "/d/run-0002.sbr"
    assert str(segment_path("/d/run.sbr", wall, 0, False)) == "/d/run.sbr"
    assert str(segment_path("/d/run.sbr", wall, 1, False)) == "/d/run-0001.sbr"


def test_free_space_guard_stops_counts_and_resumes(tmp_path: Path) -> None:
    clock = FakeClock()
    disk = Disk(10**9)
    rec = make(tmp_path, clock, min_free_bytes=10**6, disk_free=disk)
    rec.record(clock.monotonic_ns(), 0, 1, 0, ids(1))
    rec.pump()
    disk.free = 10**5
    clock.advance(1000 * MS)
    rec.pump()  # the periodic check sees the disk full
    assert rec.paused == "disk_full"
    assert rec.current_path is None
    for i in range(1, 4):
        rec.record(clock.monotonic_ns(), 0, 1, i, ids(1, 2))
    rec.pump()
    assert (rec.lost_frames, rec.lost_spikes) == (3, 6)
    disk.free = 10**9
    clock.advance(1000 * MS)
    rec.record(clock.monotonic_ns(), 0, 1, 4, ids(3))
    rec.pump()
    assert rec.paused is None
    rec.close()
    first = list(SbrReader(tmp_path / "run.sbr"))
    assert [r.frame.seq for r in first if isinstance(r, SpikeRecord)] == [0]
    assert isinstance(first[-1], EndRecord)
    second = list(SbrReader(tmp_path / "run-0001.sbr"))
    assert second[0] == GapRecord(0, "disk_full", 3, 6)
    assert [r.frame.seq for r in second if isinstance(r, SpikeRecord)] == [4]
    assert second[-1] == EndRecord(0, 1, 1, 3, 6)


def test_start_refuses_a_disk_that_is_already_full(tmp_path: Path) -> None:
    rec = Recorder(tmp_path / "x.sbr", EPS, clock=FakeClock(), min_free_bytes=100,
                   disk_free=Disk(99))
    with pytest.raises(OSError, match="min_free_bytes"):
        rec.start(thread=False)
    assert not (tmp_path / "x.sbr").exists()


def test_write_error_stops_writing_and_the_next_check_opens_a_new_file(tmp_path: Path) -> None:
    clock = FakeClock()
    rec = make(tmp_path, clock)
    writer = rec._writer
    assert writer is not None

    def broken(_data: bytes) -> None:
        raise OSError(errno.EIO, "Input/output error")

    writer.write = broken  # type: ignore[method-assign]
    rec.record(0, 0, 1, 0, ids(1))
    rec.pump()
    assert rec.paused == "write_error"
    assert (rec.write_errors, rec.lost_frames, rec.lost_spikes) == (1, 1, 1)
    rec.record(0, 0, 1, 1, ids(5, 6))
    rec.pump()  # taken while stopped: lost, counted
    assert rec.lost_frames == 2
    clock.advance(1000 * MS)
    rec.record(clock.monotonic_ns(), 0, 1, 2, ids(1))
    rec.pump()  # the periodic check opens a new file first, then frame 2 is written
    assert rec.paused is None
    rec.close()
    got = list(SbrReader(tmp_path / "run-0001.sbr"))
    assert got[0] == GapRecord(0, "write_error", 2, 3)
    assert [r.frame.seq for r in got if isinstance(r, SpikeRecord)] == [2]


def test_writer_thread_flush_and_close(tmp_path: Path) -> None:
    rec = Recorder(tmp_path / "t.sbr", EPS, min_free_bytes=0)
    rec.start()
    for i in range(1000):
        rec.record(i, i % 2, 1, i, np.arange(i % 20, dtype=np.uint32))
    assert rec.flush(timeout=30)
    assert rec.frames_written == 1000
    assert [r.frame.seq for r in spike_records(tmp_path / "t.sbr")] == list(range(1000))
    rec.close()
    reader = SbrReader(tmp_path / "t.sbr")
    list(reader)
    assert reader.report.complete


def test_slot_maps_names_to_record_indexes(tmp_path: Path) -> None:
    rec = Recorder(tmp_path / "x.sbr", EPS)
    assert (rec.slot("out0"), rec.slot("in0"), rec.slot("nope")) == (1, 0, None)


def test_misuse_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        Recorder(tmp_path / "x.sbr", [])
    with pytest.raises(ValueError):
        Recorder(tmp_path / "x.sbr", EPS, buffer_frames=0)
    rec = make(tmp_path, FakeClock())
    with pytest.raises(RuntimeError):
        rec.start(thread=False)


def test_a_stalled_disk_never_blocks_record(tmp_path: Path) -> None:
    """The writer thread hangs in write(); record() keeps returning at once, drops counted."""
    import threading

    rec = Recorder(tmp_path / "s.sbr", EPS, min_free_bytes=0, buffer_frames=100)
    rec.start()
    writer = rec._writer
    assert writer is not None
    entered, release = threading.Event(), threading.Event()
    real_write = writer.write

    def stalled(data: bytes) -> None:
        entered.set()
        release.wait(30)
        real_write(data)

    writer.write = stalled  # type: ignore[method-assign]
    assert rec.record(0, 0, 1, 0, ids(1))
    assert entered.wait(30)  # the writer (pumping every 50 ms) is now stuck inside write()
    accepted = [rec.record(i, 0, 1, i, ids(1, 2)) for i in range(1, 1001)]
    assert sum(accepted) == 100 and rec.queued == 100
    assert (rec.dropped_frames, rec.dropped_spikes) == (900, 1800)
    release.set()
    assert rec.flush(timeout=30)
    rec.close()
    got = list(SbrReader(tmp_path / "s.sbr"))
    assert [r.frame.seq for r in got if isinstance(r, SpikeRecord)] == list(range(101))
    assert GapRecord in {type(r) for r in got}
    gap = next(r for r in got if isinstance(r, GapRecord))
    assert (gap.reason, gap.frames, gap.spikes) == ("overflow", 900, 1800)
