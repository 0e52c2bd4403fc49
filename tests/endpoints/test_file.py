"""file: endpoints: replay into a pollable descriptor, record what is sent, URL keys."""

from __future__ import annotations

import selectors
from pathlib import Path

import numpy as np
import pytest

from bridge.codecs.native import NativeCodec
from bridge.endpoints import endpoint_spec, open_endpoint
from bridge.endpoints.file import FileEndpoint
from bridge.endpoints.url import parse_url
from bridge.engine.clock import FakeClock
from bridge.errors import ConfigError, EndpointError
from bridge.frame import NO_SEQ, SpikeFrame
from bridge.record.format import EndpointInfo, EndRecord, Header, encode_end, encode_spikes
from bridge.record.sbrfile import SbrReader, SbrWriter

MS = 1_000_000
EPS = (EndpointInfo("in0", "udp://h:1", "in", "native", 100),
       EndpointInfo("in1", "udp://h:2", "in", "native", 100))


def recording(path: Path, n: int = 10, seq: bool = True) -> Path:
    w = SbrWriter(path, Header(EPS, start_wall_ns=0, start_mono_ns=0, run="r"))
    for i in range(n):
        ids = np.arange(i % 5, dtype=np.uint32) * 7 + i
        w.write(encode_spikes(i * MS, i % 2, 4, i if seq else NO_SEQ, 0, ids))
    w.write(encode_end(n * MS, n, 0, 0, 0))
    w.close()
    return path


def endpoint(url: str, role: str = "in", clock: FakeClock | None = None) -> FileEndpoint:
    spec = endpoint_spec(url, role)
    ep = FileEndpoint(spec.url, role, spec.scheme_options, clock=clock or FakeClock())
    ep.open()
    return ep


def read_frames(ep: FileEndpoint, count: int, timeout: float = 10.0) -> list[SpikeFrame]:
    """Poll the endpoint's descriptor as the loop does until ``count`` frames arrived."""
    codec = NativeCodec(0)
    sel = selectors.DefaultSelector()
    sel.register(ep.fileno(), selectors.EVENT_READ)
    frames: list[SpikeFrame] = []
    while len(frames) < count:
        if not sel.select(timeout):
            break
        while (got := ep.recv()) is not None:
            frames.append(codec.decode(got[0]))
    sel.close()
    return frames


def test_input_replays_every_frame_in_order(tmp_path: Path) -> None:
    path = recording(tmp_path / "r.sbr")
    ep = endpoint(f"file:{path}")
    try:
        frames = read_frames(ep, 10)
        assert [f.seq for f in frames] == list(range(10))
        assert [f.source for f in frames] == [4] * 10
        assert [f.ids.tolist() for f in frames] == [
            (np.arange(i % 5) * 7 + i).tolist() for i in range(10)
        ]
        assert all(f.t_sent_ns > 0 for f in frames)  # re-stamped with the replay's send time
        ep._thread.join(10)  # type: ignore[union-attr]
        assert ep.finished
        assert ep.overflow_drops() == 0
        assert ep.recv() is None
    finally:
        ep.close()


def test_replay_waits_for_the_loop_to_ask_for_the_descriptor(tmp_path: Path) -> None:
    clock = FakeClock()
    ep = endpoint(f"file:{recording(tmp_path / 'r.sbr')}", clock=clock)
    try:
        assert ep.recv() is None
        assert clock.monotonic_ns() == 0  # the schedule has not started
        assert len(read_frames(ep, 10)) == 10
        assert clock.monotonic_ns() == 9 * MS  # fake time moved by the schedule only
    finally:
        ep.close()


def test_input_select_and_skip(tmp_path: Path) -> None:
    path = recording(tmp_path / "r.sbr")
    ep = endpoint(f"file:{path}?select=in1&skip=0.004")
    try:
        assert [f.seq for f in read_frames(ep, 3)] == [5, 7, 9]
    finally:
        ep.close()


def test_looped_replay_keeps_sequence_numbers_rising(tmp_path: Path) -> None:
    ep = endpoint(f"file:{recording(tmp_path / 'r.sbr', n=4)}?loop=1")
    try:
        seqs = [f.seq for f in read_frames(ep, 12)][:12]
        assert seqs[:4] == [0, 1, 2, 3]
        assert seqs == sorted(set(seqs))  # strictly rising across laps
    finally:
        ep.close()


def test_frames_without_sequence_numbers_are_numbered(tmp_path: Path) -> None:
    ep = endpoint(f"file:{recording(tmp_path / 'r.sbr', n=3, seq=False)}")
    try:
        assert [f.seq for f in read_frames(ep, 3)] == [0, 1, 2]
    finally:
        ep.close()


def test_output_records_frames_and_datagrams(tmp_path: Path) -> None:
    path = tmp_path / "out.sbr"
    clock = FakeClock(10 * MS)
    ep = endpoint(f"file:{path}?neurons=50&name=rec", "out", clock)
    assert ep.send_frame(SpikeFrame.of([1, 2, 3], source=2, seq=0, t_sent_ns=5), 11 * MS)
    datagram = NativeCodec(50).encode(SpikeFrame.of([4], source=2, seq=1, t_sent_ns=6))[0]
    clock.advance(2 * MS)
    assert ep.send(datagram)
    assert not ep.send(b"not a native datagram")
    ep.close()
    reader = SbrReader(path)
    assert reader.header.endpoints[0].name == "rec"
    assert reader.header.endpoints[0].neurons == 50
    got = list(reader)
    assert [(r.t_ns, r.frame.ids.tolist(), r.frame.seq) for r in got[:2]] == [  # type: ignore[union-attr]
        (1 * MS, [1, 2, 3], 0), (2 * MS, [4], 1)
    ]
    assert isinstance(got[-1], EndRecord)


def test_output_refuses_to_overwrite(tmp_path: Path) -> None:
    path = recording(tmp_path / "r.sbr")
    with pytest.raises(EndpointError, match="cannot record"):
        endpoint(f"file:{path}", "out")


def test_through_the_registry(tmp_path: Path) -> None:
    path = recording(tmp_path / "r.sbr", n=2)
    ep = open_endpoint(endpoint_spec(f"file:{path}", "in"))
    try:
        assert isinstance(ep, FileEndpoint)
        assert "replaying" in ep.describe()
    finally:
        ep.close()


@pytest.mark.parametrize(
    ("url", "role", "message"),
    [
        ("file:x.sbr?speed=0", "in", "speed"),
        ("file:x.sbr?loop=maybe", "in", "loop"),
        ("file:x.sbr?rotate_mb=5", "in", "rotate_mb"),
        ("file:x.sbr?speed=2", "out", "speed"),
        ("file:x.sbr?bogus=1", "in", "bogus"),
    ],
)
def test_bad_keys_are_config_errors(url: str, role: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        spec = endpoint_spec(url, role)
        FileEndpoint(parse_url(url), role, spec.scheme_options)


def test_missing_or_bad_files_are_endpoint_errors(tmp_path: Path) -> None:
    with pytest.raises(EndpointError, match="cannot read"):
        endpoint(f"file:{tmp_path}/none.sbr")
    (tmp_path / "t.txt").write_text("hello")
    with pytest.raises(EndpointError, match="not a spikebridge recording"):
        endpoint(f"file:{tmp_path}/t.txt")
    with pytest.raises(EndpointError, match="no file matches"):
        endpoint(f"file:{tmp_path}/*.none")
    with pytest.raises(ConfigError, match="no endpoint zz"):
        endpoint(f"file:{recording(tmp_path / 'r.sbr')}?select=zz")
