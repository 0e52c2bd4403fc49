"""The legacy BrianConnectUDP codec: the DESIGN.md golden vector, errors, round trips, fuzz."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.codecs import codec_class
from bridge.codecs.legacy import LegacyCodec, address_bytes
from bridge.errors import DecodeError
from bridge.frame import NO_SEQ, SpikeFrame

# DESIGN.md: address 3 with neurons 1 and 7 firing (10 neurons); also in docs/wire-formats.md.
DESIGN_EXAMPLE = "00 00 00 00 00 00 01 01 00 01 00 00 00 00 00 01 00 00"
GOLDEN = [
    (10, SpikeFrame.of([1, 7], source=3), DESIGN_EXAMPLE),
    (4, SpikeFrame.of([], source=255), "01 01 01 01 01 01 01 01 00 00 00 00"),
    (3, SpikeFrame.of([0, 1, 2], source=128), "01 00 00 00 00 00 00 00 01 01 01"),
]


def outcome(codec: LegacyCodec, data: bytes) -> tuple[str, object]:
    try:
        f = codec.decode(data)
    except DecodeError as exc:
        return "err", exc.reason
    assert (f.seq, f.t_sent_ns) == (NO_SEQ, 0)
    return "ok", (f.source, f.ids.tolist())


@pytest.mark.parametrize(("neurons", "frame", "hexes"), GOLDEN)
def test_golden_vectors(neurons, frame, hexes):
    codec = LegacyCodec(neurons)
    wire = bytes.fromhex(hexes)
    assert codec.encode(frame) == [wire]
    assert outcome(codec, wire) == ("ok", (frame.source, frame.ids.tolist()))
    assert codec.peek(wire) == (frame.source, NO_SEQ, 0, len(frame.ids))


def test_address_bytes_are_bits_msb_first():
    assert address_bytes(3) == bytes([0, 0, 0, 0, 0, 0, 1, 1])
    assert address_bytes(0xA5) == bytes([1, 0, 1, 0, 0, 1, 0, 1])
    with pytest.raises(ValueError):
        address_bytes(256)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (bytes.fromhex(DESIGN_EXAMPLE)[:-1], "truncated"),
        (bytes.fromhex(DESIGN_EXAMPLE) + b"\0", "oversized"),
        (bytes.fromhex(DESIGN_EXAMPLE.replace("01 01 00 01", "01 02 00 01", 1)), "malformed"),
        (bytes.fromhex(DESIGN_EXAMPLE[:-2] + "07"), "malformed"),
        (b"", "truncated"),
    ],
)
def test_bad_frames(data, reason):
    assert outcome(LegacyCodec(10), data) == ("err", reason)


def test_every_truncation_is_a_truncated_drop():
    data = bytes.fromhex(DESIGN_EXAMPLE)
    for cut in range(len(data)):
        assert outcome(LegacyCodec(10), data[:cut]) == ("err", "truncated")


def test_misuse():
    with pytest.raises(ValueError):
        LegacyCodec(0)
    with pytest.raises(ValueError):
        LegacyCodec(10).encode(SpikeFrame.of([10]))
    with pytest.raises(ValueError):  # numpy path
        LegacyCodec(10).encode(SpikeFrame(0, 0, 0, np.arange(40, dtype=np.uint32)))
    with pytest.raises(ValueError):
        LegacyCodec(10).encode(SpikeFrame.of([1], source=256))
    with pytest.raises(KeyError):
        codec_class("legacy").from_options(10, {"mtu": "100"})


def test_reframe_rewrites_only_the_address():
    codec = LegacyCodec(10)
    [data] = codec.reframe(bytes.fromhex(DESIGN_EXAMPLE), source=200, seq=5, t_sent_ns=9)
    assert outcome(codec, data) == ("ok", (200, [1, 7]))
    assert codec.same_wire(LegacyCodec(10)) and not codec.same_wire(LegacyCodec(11))


def test_golden_vectors_are_printed_in_the_docs():
    doc = " ".join((Path(__file__).parents[2] / "docs" / "wire-formats.md").read_text().split())
    for hexes in [g[2] for g in GOLDEN]:
        assert hexes in doc, hexes


_settings = settings(max_examples=150, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow])


@_settings
@given(st.integers(1, 3000), st.integers(0, 255), st.data())
def test_round_trip(neurons, source, data):
    ids = sorted(data.draw(st.sets(st.integers(0, neurons - 1), max_size=200)))
    codec = LegacyCodec(neurons)
    [wire] = codec.encode(SpikeFrame.of(ids, source=source))
    assert len(wire) == 8 + neurons
    assert outcome(codec, wire) == ("ok", (source, ids))
    assert codec.peek(wire) == (source, NO_SEQ, 0, len(ids))


@_settings
@given(st.integers(1, 64), st.binary(max_size=80))
def test_random_bytes_raise_only_decode_error_and_peek_agrees(neurons, data):
    codec = LegacyCodec(neurons)
    result = outcome(codec, data)
    try:
        peeked: tuple[str, object] = ("ok", codec.peek(data))
    except DecodeError as exc:
        peeked = ("err", exc.reason)
    if result[0] == "ok":
        source, ids = result[1]  # type: ignore[misc]
        assert peeked == ("ok", (source, NO_SEQ, 0, len(ids)))
    else:
        assert peeked == result


@_settings
@given(st.integers(1, 64), st.data())
def test_mutated_frames_raise_only_decode_error(neurons, data):
    codec = LegacyCodec(neurons)
    ids = sorted(data.draw(st.sets(st.integers(0, neurons - 1))))
    wire = bytearray(codec.encode(SpikeFrame.of(ids))[0])
    pos = data.draw(st.integers(0, len(wire) - 1))
    wire[pos] = data.draw(st.integers(2, 255))
    assert outcome(codec, bytes(wire)) == ("err", "malformed")
