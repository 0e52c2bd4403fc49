"""Reading and writing .sbr files: round trips, refusal to overwrite, cut-off files, SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from bridge.frame import SpikeFrame
from bridge.record.format import (
    EndpointInfo,
    EndRecord,
    Header,
    RecordingError,
    SpikeRecord,
    encode_end,
    encode_header,
    encode_record,
)
from bridge.record.sbrfile import SbrReader, SbrWriter, load_table, read_header

EPS = (EndpointInfo("in0", "udp://127.0.0.1:5000", "in", "native", 100),
       EndpointInfo("in1", "udp://127.0.0.1:5001", "in", "native", 100, offset=100))


def header(run: str = "r", segment: int = 0, mono: int = 0, wall: int = 10**18) -> Header:
    return Header(EPS, start_wall_ns=wall, start_mono_ns=mono, segment=segment, run=run)


def rec(t: int, ep: int, ids: list[int], seq: int = 0) -> SpikeRecord:
    return SpikeRecord(t, ep, SpikeFrame(9, seq, 0, np.array(ids, dtype=np.uint32)))


def write(path: Path, records: list[SpikeRecord], hdr: Header | None = None,
          end: bool = True) -> None:
    w = SbrWriter(path, hdr or header())
    for r in records:
        w.write(encode_record(r))
    if end:
        w.write(encode_end(records[-1].t_ns if records else 0, len(records), 0, 0, 0))
    w.close()


def test_write_then_read(tmp_path: Path) -> None:
    records = [rec(i * 1000, i % 2, [i, i + 1], seq=i) for i in range(50)]
    write(tmp_path / "a.sbr", records)
    reader = SbrReader(tmp_path / "a.sbr")
    assert reader.header == header()
    got = list(reader)
    assert got[:-1] == records
    assert isinstance(got[-1], EndRecord)
    assert reader.report.complete
    assert reader.report.problems() == ""


def test_writer_never_overwrites(tmp_path: Path) -> None:
    write(tmp_path / "a.sbr", [rec(0, 0, [1])])
    with pytest.raises(FileExistsError):
        SbrWriter(tmp_path / "a.sbr", header())


def test_file_cut_inside_the_header_is_a_clear_error(tmp_path: Path) -> None:
    data = encode_header(header())
    (tmp_path / "cut.sbr").write_bytes(data[:-3])
    with pytest.raises(RecordingError, match="header is incomplete"):
        read_header(tmp_path / "cut.sbr")


def test_not_a_recording(tmp_path: Path) -> None:
    (tmp_path / "x.csv").write_text("t,id\n1,2\n")
    with pytest.raises(RecordingError, match="not a spikebridge recording"):
        SbrReader(tmp_path / "x.csv")


def test_cut_file_reads_to_its_last_complete_record(tmp_path: Path) -> None:
    records = [rec(i, 0, list(range(i % 7))) for i in range(20)]
    write(tmp_path / "a.sbr", records, end=False)
    full = (tmp_path / "a.sbr").read_bytes()
    (tmp_path / "b.sbr").write_bytes(full[:-5])
    reader = SbrReader(tmp_path / "b.sbr")
    assert list(reader) == records[:-1]
    assert reader.report.truncated_bytes == len(encode_record(records[-1])) - 5
    assert not reader.report.complete
    assert "cut off" in reader.report.problems()


def test_load_table_puts_rotated_segments_on_one_time_base(tmp_path: Path) -> None:
    write(tmp_path / "s1.sbr", [rec(500, 1, [7, 8])], header(segment=1, mono=2_000))
    write(tmp_path / "s0.sbr", [rec(100, 0, [1]), rec(900, 0, [2, 3])], header(mono=1_000))
    table = load_table([tmp_path / "s1.sbr", tmp_path / "s0.sbr"])  # given out of order
    assert table.t_ns.tolist() == [100, 900, 900, 1500, 1500]
    assert table.ids.tolist() == [1, 2, 3, 7, 8]
    assert table.endpoint.tolist() == [0, 0, 0, 1, 1]
    assert table.frame.tolist() == [0, 1, 1, 2, 2]
    assert table.frames == 3


def test_files_of_different_runs_align_by_wall_time(tmp_path: Path) -> None:
    write(tmp_path / "a.sbr", [rec(10, 0, [1])], header(run="a", mono=5, wall=1_000))
    write(tmp_path / "b.sbr", [rec(10, 0, [2])], header(run="b", mono=999_999, wall=3_000))
    table = load_table([tmp_path / "a.sbr", tmp_path / "b.sbr"])
    assert table.t_ns.tolist() == [10, 2_010]


WRITER = textwrap.dedent("""
    import sys, numpy as np
    from bridge.record.format import EndpointInfo
    from bridge.record.recorder import Recorder
    rec = Recorder(sys.argv[1], [EndpointInfo("in0", "udp://x:1", "in", "native", 1000)],
                   min_free_bytes=0, flush_interval_ns=1_000_000)
    rec.start()
    print("started", flush=True)
    i = 0
    while True:
        ids = np.arange(i % 50, dtype=np.uint32) + (i % 900)
        if rec.record(i, 0, 1, i, ids):
            i += 1
""")


@pytest.mark.integration
def test_file_of_a_writer_killed_with_sigkill_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "killed.sbr"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"started\n"
        deadline = time.monotonic() + 30
        while path.stat().st_size < 200_000 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    reader = SbrReader(path)
    got = list(reader.spikes())
    assert len(got) > 1000
    for i, r in enumerate(got):  # every record intact, in order, none missing before the cut
        assert r.frame.seq == i
        assert r.frame.ids.tolist() == list(range(i % 900, i % 900 + i % 50))
    assert not reader.report.complete
    assert reader.report.damaged == 0
