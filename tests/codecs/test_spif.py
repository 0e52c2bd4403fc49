"""The spif codec: golden vectors, AEStream's byte layout, id layouts, errors, fuzz."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.codecs import codec_class
from bridge.codecs.spif import LAYOUTS, SpifCodec
from bridge.errors import DecodeError
from bridge.frame import NO_SEQ, SpikeFrame

# The same vectors are printed in docs/wire-formats.md, section "spif".
GOLDEN = [
    ("pyx 640x480", SpifCodec(0, width=640, height=480),
     SpikeFrame.of([2 * 640 + 1, 640 * 480 + 479 * 640 + 639]), "02 00 01 80 df 81 7f 82"),
    ("pyx with timestamp", SpifCodec(0, width=640, height=480, timestamp=True),
     SpikeFrame.of([2 * 640 + 1], t_sent_ns=1_234_567_000), "02 00 01 00 87 d6 12 00"),
    ("xy 128x128", SpifCodec(0, width=128, height=128, layout="xy"),
     SpikeFrame.of([3 * 128 + 5]), "05 80 03 80"),
]


def aestream_word(x: int, y: int, p: int, with_time: bool) -> int:
    """One event as AEStream's DVSToUDP::stream writes it (host order, little-endian here)."""
    word = ((x & 0x7FFF) if with_time else (x | 0x8000)) << 16
    return word | (y | 0x8000 if p else y & 0x7FFF)


def outcome(codec: SpifCodec, data: bytes) -> tuple[str, object]:
    try:
        f = codec.decode(data)
    except DecodeError as exc:
        return "err", exc.reason
    assert (f.source, f.seq, f.t_sent_ns) == (0, NO_SEQ, 0)
    return "ok", f.ids.tolist()


@pytest.mark.parametrize(("label", "codec", "frame", "hexes"), GOLDEN, ids=[g[0] for g in GOLDEN])
def test_golden_vectors(label, codec, frame, hexes):
    wire = bytes.fromhex(hexes)
    assert codec.encode(frame) == [wire]
    assert codec.decode(wire).ids.tolist() == frame.ids.tolist()


@pytest.mark.parametrize("with_time", [False, True])
@pytest.mark.parametrize("n", [3, 100])  # plain-Python and numpy paths
def test_reads_aestream_datagrams(with_time, n):
    rng = np.random.default_rng(n)
    xs, ys, ps = rng.integers(0, 346, n), rng.integers(0, 260, n), rng.integers(0, 2, n)
    words = []
    for x, y, p in zip(xs.tolist(), ys.tolist(), ps.tolist(), strict=True):
        words.append(aestream_word(x, y, p, with_time))
        if with_time:
            words.append(rng.integers(0, 2**32).item())  # the event's timestamp word
    data = struct.pack(f"<{len(words)}I", *words)
    codec = SpifCodec(0, width=346, height=260, layout="pyx")
    assert outcome(codec, data) == ("ok", ((ps * 260 + ys) * 346 + xs).tolist())


@pytest.mark.parametrize("n", [5, 40])
def test_mixed_stream_with_and_without_timestamps(n):
    codec = SpifCodec(0, width=16, height=16, layout="yx")
    words, expect = [], []
    for i in range(n):
        x, y = i % 16, (3 * i) % 16
        words.append(aestream_word(x, y, 0, with_time=i % 3 == 0))
        if i % 3 == 0:
            words.append(0xFFFFFFFF)  # a timestamp word with b31 set must not be read as event
        expect.append(y * 16 + x)
    data = struct.pack(f"<{len(words)}I", *words)
    assert outcome(codec, data) == ("ok", expect)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_layout_formulas(layout):
    w, h = 7, 5
    formula = {
        "xyp": lambda x, y, p: (x * h + y) * 2 + p, "xpy": lambda x, y, p: (x * 2 + p) * h + y,
        "yxp": lambda x, y, p: (y * w + x) * 2 + p, "ypx": lambda x, y, p: (y * 2 + p) * w + x,
        "pxy": lambda x, y, p: (p * w + x) * h + y, "pyx": lambda x, y, p: (p * h + y) * w + x,
        "xy": lambda x, y, p: x * h + y, "yx": lambda x, y, p: y * w + x,
    }[layout]
    codec = SpifCodec(0, width=w, height=h, layout=layout)
    assert codec.size == w * h * (2 if "p" in layout else 1)
    for x in range(w):
        for y in range(h):
            for p in (0, 1):
                data = struct.pack("<I", aestream_word(x, y, p, with_time=False))
                assert outcome(codec, data) == ("ok", [formula(x, y, p)])


@pytest.mark.parametrize(
    ("codec", "words", "reason"),
    [
        (SpifCodec(0, width=4, height=4), [aestream_word(4, 0, 0, False)], "id_out_of_range"),
        (SpifCodec(0, width=4, height=4), [aestream_word(0, 4, 0, False)], "id_out_of_range"),
        (SpifCodec(10, width=4, height=4), [aestream_word(3, 3, 0, False)], "id_out_of_range"),
        (SpifCodec(0, width=4, height=4), [aestream_word(1, 1, 0, True)], "truncated"),
        (SpifCodec(0, width=4, height=4), [aestream_word(4, 0, 0, False)] * 30,
         "id_out_of_range"),
    ],
)
def test_bad_events(codec, words, reason):
    assert outcome(codec, struct.pack(f"<{len(words)}I", *words)) == ("err", reason)


def test_every_truncation_is_caught_unless_it_falls_between_events():
    # The format has no length field: a cut between two whole events leaves a valid, shorter
    # datagram. Every other cut (mid-word, or between an event and its timestamp) is caught.
    for _label, codec, frame, hexes in GOLDEN:
        data = bytes.fromhex(hexes)
        event = 8 if codec.timestamp else 4
        for cut in range(1, len(data)):
            if cut % event:
                assert outcome(codec, data[:cut]) == ("err", "truncated"), (_label, cut)
            else:
                assert outcome(codec, data[:cut]) == ("ok", frame.ids.tolist()[:cut // event])
    assert outcome(GOLDEN[0][1], b"") == ("ok", [])


def test_configuration_and_options():
    with pytest.raises(ValueError, match="width"):
        SpifCodec(0)
    with pytest.raises(ValueError):
        SpifCodec(0, width=40000, height=1)
    with pytest.raises(ValueError):
        SpifCodec(0, width=4, height=4, layout="xx")
    cls = codec_class("spif")
    codec = cls.from_options(0, {"width": "346", "height": "260", "layout": "xyp",
                                 "timestamp": "on", "mtu": "512", "polarity": "0"})
    assert isinstance(codec, SpifCodec)
    assert (codec.width, codec.height, codec.layout, codec.timestamp, codec.mtu) == (
        346, 260, "xyp", True, 512)
    for bad in ({"width": "0"}, {"layout": "zz"}, {"polarity": "2"}, {"mtu": "4"}):
        with pytest.raises(ValueError):
            cls.from_options(0, {"width": "4", "height": "4", **bad})


def test_encode_misuse_and_polarity_option():
    with pytest.raises(ValueError):
        SpifCodec(0, width=4, height=4).encode(SpikeFrame.of([32]))
    with pytest.raises(ValueError):
        SpifCodec(20, width=4, height=4).encode(SpikeFrame(0, 0, 0, np.arange(30, dtype=np.uint32)))
    [data] = SpifCodec(0, width=4, height=4, layout="yx", polarity=0).encode(SpikeFrame.of([5]))
    assert struct.unpack("<I", data)[0] == aestream_word(1, 1, 0, with_time=False)


def test_splitting_respects_mtu():
    codec = SpifCodec(0, width=640, height=480, timestamp=True, mtu=1024)
    ids = np.arange(0, 2 * 640 * 480, 97, dtype=np.uint32)
    out = codec.encode(SpikeFrame(0, NO_SEQ, 0, ids))
    assert all(len(d) <= 1024 and len(d) % 8 == 0 for d in out)
    assert np.array_equal(np.concatenate([codec.decode(d).ids for d in out]), ids)


def test_reframe_is_identity_and_same_wire_needs_identical_options():
    a = SpifCodec(0, width=4, height=4)
    data = a.encode(SpikeFrame.of([1, 2, 3]))[0]
    assert a.reframe(data, 1, 2, 3) == [data]
    assert a.same_wire(SpifCodec(0, width=4, height=4))
    assert not a.same_wire(SpifCodec(0, width=4, height=4, layout="xyp"))


def test_golden_vectors_are_printed_in_the_docs():
    doc = " ".join((Path(__file__).parents[2] / "docs" / "wire-formats.md").read_text().split())
    for hexes in [g[3] for g in GOLDEN]:
        assert hexes in doc, hexes


_settings = settings(max_examples=150, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow])


@st.composite
def spif_codecs(draw):
    w, h = draw(st.integers(1, 400)), draw(st.integers(1, 400))
    layout = draw(st.sampled_from(LAYOUTS))
    size = w * h * (2 if "p" in layout else 1)
    neurons = draw(st.sampled_from([0, size, max(1, size // 2)]))
    return SpifCodec(neurons, width=w, height=h, layout=layout, timestamp=draw(st.booleans()),
                     mtu=draw(st.integers(8, 3000)), polarity=draw(st.integers(0, 1)))


@_settings
@given(spif_codecs(), st.data())
def test_round_trip(codec, data):
    limit = codec.neurons or codec.size
    ids = data.draw(st.lists(st.integers(0, limit - 1), max_size=500))
    out = codec.encode(SpikeFrame.of(ids, t_sent_ns=data.draw(st.integers(0, 2**63))))
    assert all(len(d) <= codec.mtu for d in out)
    assert np.concatenate([codec.decode(d).ids for d in out]).tolist() == ids


def check_agree(codec: SpifCodec, data: bytes) -> None:
    result = outcome(codec, data)
    try:
        peeked: tuple[str, object] = ("ok", codec.peek(data)[3])
    except DecodeError as exc:
        peeked = ("err", exc.reason)
    assert peeked == (("ok", len(result[1])) if result[0] == "ok" else result)  # type: ignore[arg-type]


@st.composite
def mutated(draw):
    codec = draw(spif_codecs())
    limit = codec.neurons or codec.size
    ids = draw(st.lists(st.integers(0, limit - 1), min_size=1, max_size=100))
    data = bytearray(draw(st.sampled_from(codec.encode(SpikeFrame.of(ids)))))
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        op = draw(st.sampled_from(["flip", "cut", "insert"]))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "cut":
            del data[pos:pos + draw(st.integers(1, 6))]
        else:
            data[pos:pos] = draw(st.binary(min_size=1, max_size=6))
    return codec, bytes(data)


@_settings
@given(mutated())
def test_mutations_raise_only_decode_error(case):
    check_agree(*case)


@_settings
@given(st.binary(max_size=300))
def test_random_bytes_raise_only_decode_error(data):
    check_agree(SpifCodec(0, width=32768, height=32768), data)
    check_agree(SpifCodec(1000, width=64, height=64, layout="xy"), data)


@pytest.mark.slow
@settings(max_examples=3000, deadline=None, suppress_health_check=list(HealthCheck))
@given(mutated())
def test_mutation_fuzz_long(case):
    check_agree(*case)


@pytest.mark.parametrize("n", [3, 100])
def test_decoded_ids_do_not_alias_a_reused_receive_buffer(n):
    codec = SpifCodec(0, width=32, height=32)
    [data] = codec.encode(SpikeFrame.of(range(n)))
    buf = bytearray(data)
    frame = codec.decode(memoryview(buf))
    buf[:] = bytes(len(buf))
    assert frame.ids.tolist() == list(range(n))
