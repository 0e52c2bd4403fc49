"""The DV network stream bytes: layouts against dv-processing's own, and hostile input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.codecs import dvstream
from bridge.errors import DROP_REASONS, DecodeError

# The EVTS packet dv-processing 2.0.4's NetworkWriter sent for five events
# (t=1000+i, x=i, y=2i, polarity=i%2==0), captured from its socket.
DV_PACKET = bytes.fromhex(
    "00000000700000006c0000001000000045565453000006000800040006000000040000000500"
    "0000e8030000000000000000000001000000e9030000000000000100020000000000ea030000"
    "000000000200040001000000eb030000000000000300060000000000ec030000000000000400"
    "080001000000")


def five() -> np.ndarray:
    i = np.arange(5)
    return dvstream.events_array(1000 + i, i, 2 * i, i % 2 == 0)


def test_packet_bytes_match_dv_processing() -> None:
    assert dvstream.event_packet(five()) == DV_PACKET


def test_decoder_reads_header_and_packets_fed_byte_by_byte() -> None:
    data = dvstream.io_header(64, 48, "cam & co") + DV_PACKET + dvstream.event_packet(five()[:2])
    dec = dvstream.DvStreamDecoder()
    got = []
    for b in data:
        dec.feed(bytes([b]))
        while (ev := dec.next_events()) is not None:
            got.append(ev)
    assert dec.info == dvstream.StreamInfo(0, 0, 64, 48, "cam & co")
    assert [len(g) for g in got] == [5, 2]
    assert got[0]["t"].tolist() == [1000, 1001, 1002, 1003, 1004]
    assert got[0]["y"].tolist() == [0, 2, 4, 6, 8]


def test_compressed_and_other_streams() -> None:
    head = bytearray(dvstream.io_header(8, 8))
    head[4 + 0x1C] = 1  # compression = LZ4
    dec = dvstream.DvStreamDecoder()
    dec.feed(bytes(head))
    with pytest.raises(DecodeError, match="LZ4-compressed"):
        dec.next_events()
    dec = dvstream.DvStreamDecoder()
    other = bytearray(DV_PACKET)
    other[0] = 3  # stream id 3: not the event stream
    dec.feed(dvstream.io_header(8, 8) + bytes(other) + DV_PACKET)
    assert len(dec.next_events()) == 5 and dec.skipped == 1  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048), st.booleans())
def test_hostile_bytes_raise_only_decode_errors(junk: bytes, after_header: bool) -> None:
    dec = dvstream.DvStreamDecoder()
    if after_header:
        dec.feed(dvstream.io_header(8, 8))
    dec.feed(junk)
    try:
        while dec.next_events() is not None:
            pass
    except DecodeError as exc:
        assert exc.reason in DROP_REASONS


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_hostile_packet_bodies(junk: bytes) -> None:
    body = (len(junk) + 8).to_bytes(4, "little") + (16).to_bytes(4, "little") + b"EVTS" + junk
    try:
        ev = dvstream.parse_event_packet(body)
    except DecodeError:
        return
    assert ev.dtype == dvstream.EVENT_DTYPE
