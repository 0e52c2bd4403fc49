"""Resender (sequence numbers across laps, unencodable frames) and the progress line."""

from __future__ import annotations

import io

from bridge.codecs.legacy import LegacyCodec
from bridge.codecs.native import NativeCodec
from bridge.frame import NO_SEQ, SpikeFrame
from bridge.record.progress import ProgressLine, human_rate
from bridge.record.resend import Resender


def test_keeps_recorded_numbers_then_renumbers_above_them() -> None:
    codec = NativeCodec(0)
    r = Resender(codec)
    out = [codec.decode(d).seq for s in (5, 9) for d in r.datagrams(
        SpikeFrame.of([1], source=2, seq=s), 1)]
    assert out == [5, 9]
    r.renumber = True
    assert [codec.decode(d).seq for d in r.datagrams(SpikeFrame.of([1], source=2, seq=5), 1)] \
        == [10]
    assert codec.decode(r.datagrams(SpikeFrame.of([1], source=3, seq=5), 7)[0]).seq == 0
    assert codec.decode(r.datagrams(SpikeFrame.of([1], source=3, seq=5), 7)[0]).t_sent_ns == 7


def test_frames_without_numbers_are_numbered_and_bad_ones_counted() -> None:
    codec = NativeCodec(0)
    r = Resender(codec)
    seqs = [codec.decode(r.datagrams(SpikeFrame.of([1], seq=NO_SEQ), 1)[0]).seq
            for _ in range(3)]
    assert seqs == [0, 1, 2]
    small = Resender(LegacyCodec(10))
    assert small.datagrams(SpikeFrame.of([50]), 1) == []
    assert small.encode_errors == 1


def test_progress_line_only_on_a_terminal_and_rate_limited() -> None:
    piped = io.StringIO()
    line = ProgressLine(piped)
    line.update(0, "hello")
    line.close("bye")
    assert piped.getvalue() == ""
    forced = io.StringIO()
    line = ProgressLine(forced, enabled=True, interval_ns=100)
    line.update(0, "a")
    line.update(50, "b")  # too soon: not drawn
    line.update(100, "c")
    line.close()
    text = forced.getvalue()
    assert text.startswith("\ra") and "\rc" in text and "\rb" not in text
    assert text.endswith("\n")


def test_human_rate() -> None:
    assert (human_rate(5, 2), human_rate(2500, 1), human_rate(3e6, 1), human_rate(1, 0)) == (
        "2.5/s", "2.5k/s", "3.0M/s", "-")
