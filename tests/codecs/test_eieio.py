"""The EIEIO codec: golden vectors, a cross-check against a spinnman-style reader, errors, fuzz."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.codecs import codec_class
from bridge.codecs.eieio import MAX_MESSAGE, SDP_WRAP, EieioCodec
from bridge.errors import DecodeError
from bridge.frame import NO_SEQ, SpikeFrame

T = 1_700_000_000_123_456_789

# The same vectors are printed in docs/wire-formats.md, section "eieio".
GOLDEN = [
    ("16-bit keys", EieioCodec(100, keybits=16), SpikeFrame.of([1, 7, 42]),
     "03 00 01 00 07 00 2a 00"),
    ("32-bit keys, timestamp", EieioCodec(1000, base=0x10000, timestamp=True),
     SpikeFrame.of([1, 7, 42], t_sent_ns=T),
     "03 38 7b 68 e5 cf 01 00 01 00 07 00 01 00 2a 00 01 00"),
    ("16-bit upper prefix, SDP", EieioCodec(300, keybits=16, base=0x20000, prefix=2,
                                            prefix_upper=True, sdp=(0, 0, 3)),
     SpikeFrame.of([0, 5, 299]),
     "00 00 07 00 23 00 00 00 00 00 03 c0 02 00 00 00 05 00 2b 01"),
    ("32-bit lower prefix", EieioCodec(0, base=0x800, prefix=0x800), SpikeFrame.of([1, 2]),
     "02 88 00 08 01 08 00 00 02 08 00 00"),
]

# Messages we only read: what a Live Packet Gatherer or another host may send.
READ_ONLY = [
    ("32-bit keys with timestamp payloads", EieioCodec(0, base=0x10000),
     "02 1c 01 00 01 00 05 00 00 00 02 00 01 00 05 00 00 00", [1, 2]),
    ("16-bit keys, lower prefix (spinnman: key | prefix)", EieioCodec(0, base=0x100),
     "02 80 00 01 05 00 06 00", [5, 6]),
    ("16-bit keys with payloads and a payload prefix", EieioCodec(0),
     "02 24 09 00 03 00 01 00 04 00 02 00", [3, 4]),
    ("empty message", EieioCodec(10), "00 00", []),
]


def spinnman_keys(data: bytes) -> list[int]:
    """Keys as spinnman's EIEIODataHeader.from_bytestring and next_element read them."""
    count, flags = data[0], data[1]
    p, f, d = flags >> 7 & 1, flags >> 6 & 1, flags >> 5 & 1
    etype = flags >> 2 & 3
    off, prefix = 2, None
    if d:
        if etype < 2:
            if p:
                prefix, _ = struct.unpack_from("<HH", data, off)
                off += 4
            else:
                off += 2
        elif p:
            prefix, _ = struct.unpack_from("<HI", data, off)
            off += 6
        else:
            off += 4
    elif p:
        (prefix,) = struct.unpack_from("<H", data, off)
        off += 2
    keys = []
    for _ in range(count):
        fmt = ("<H", "<HH", "<I", "<II")[etype]
        key = struct.unpack_from(fmt, data, off)[0]
        off += struct.calcsize(fmt)
        if prefix is not None:
            key = key | (prefix << 16) if f else key | prefix
        keys.append(key)
    return keys


def spinnman_message(etype: int, keys: list[int], *, prefix: int | None, upper: bool,
                     payload_base: int | None, is_time: bool, tag: int) -> bytes:
    """A message as spinnman's EIEIODataHeader.bytestring and add_key(_and_payload) write it."""
    flags = etype << 2 | tag
    if prefix is not None:
        flags |= 0x80 | (0x40 if upper else 0)
    if payload_base is not None:
        flags |= 0x20
    if is_time:
        flags |= 0x10
    out = struct.pack("<BB", len(keys), flags)
    if prefix is not None:
        out += struct.pack("<H", prefix)
    if payload_base is not None:
        out += struct.pack("<H" if etype < 2 else "<I", payload_base)
    for k in keys:
        out += struct.pack(("<H", "<HH", "<I", "<II")[etype], *((k,) if etype % 2 == 0 else (k, 7)))
    return out


def outcome(codec: EieioCodec, data: bytes) -> tuple[str, object]:
    try:
        f = codec.decode(data)
    except DecodeError as exc:
        return "err", exc.reason
    assert (f.source, f.seq, f.t_sent_ns) == (0, NO_SEQ, 0)
    return "ok", f.ids.tolist()


# -- golden vectors ----------------------------------------------------------------------


@pytest.mark.parametrize(("label", "codec", "frame", "hexes"), GOLDEN, ids=[g[0] for g in GOLDEN])
def test_golden_vectors(label, codec, frame, hexes):
    wire = bytes.fromhex(hexes)
    assert codec.encode(frame) == [wire]
    assert codec.decode(wire).ids.tolist() == frame.ids.tolist()
    eieio = wire[SDP_WRAP:] if codec.sdp else wire
    assert [k - codec.base for k in spinnman_keys(eieio)] == frame.ids.tolist()


@pytest.mark.parametrize(("label", "codec", "hexes", "ids"), READ_ONLY,
                         ids=[r[0] for r in READ_ONLY])
def test_reads_other_variants(label, codec, hexes, ids):
    data = bytes.fromhex(hexes)
    assert outcome(codec, data) == ("ok", ids)
    assert [k - codec.base for k in spinnman_keys(data)] == ids


def test_sdp_header_matches_live_event_connection():
    data = bytes.fromhex(GOLDEN[2][3])
    # two pad bytes, then flags REPLY_NOT_EXPECTED, tag 0, dest port 1 / core 3, source 0,
    # dest chip (y, x) = (0, 0), source chip (0, 0)
    assert data[:SDP_WRAP] == bytes([0, 0, 0x07, 0, 1 << 5 | 3, 0, 0, 0, 0, 0])


# -- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("codec", "hexes", "reason"),
    [
        (EieioCodec(0), "01 40 00 00", "malformed"),  # P=0, F=1: a command message
        (EieioCodec(0), "02 00 01 00", "truncated"),
        (EieioCodec(0), "01 00 01 00 00", "oversized"),
        (EieioCodec(0), "01 80 00", "truncated"),  # prefix announced, missing
        (EieioCodec(0, base=10), "01 00 05 00", "id_out_of_range"),  # key below base
        (EieioCodec(5), "01 00 05 00", "id_out_of_range"),
        (EieioCodec(5), "02 08 00 00 00 00 ff ff ff ff", "id_out_of_range"),
        (EieioCodec(5, sdp=(0, 0, 1)), "00 01 07 00 21 00 00 00 00 00 00 00", "bad_magic"),
        (EieioCodec(5, sdp=(0, 0, 1)), "00 00 07 00 21", "truncated"),
    ],
)
def test_bad_messages(codec, hexes, reason):
    assert outcome(codec, bytes.fromhex(hexes)) == ("err", reason)


def test_every_truncation_is_a_truncated_drop():
    for _label, codec, _frame, hexes in GOLDEN:
        data = bytes.fromhex(hexes)
        for cut in range(len(data)):
            assert outcome(codec, data[:cut]) == ("err", "truncated"), (_label, cut)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"keybits": 16, "prefix": 1},  # lower prefix on 16-bit keys: ambiguous
        {"keybits": 16, "base": 0xFFF0},  # 100 neurons pass key 0xFFFF
        {"keybits": 16, "base": 0x10000, "prefix": 2, "prefix_upper": True},
        {"keybits": 24},
        {"base": 0xFFFFFFF0},
        {"tag": 4},
    ],
)
def test_bad_configuration_is_value_error(kwargs):
    with pytest.raises(ValueError):
        EieioCodec(100, **kwargs)


def test_encode_misuse_is_value_error():
    with pytest.raises(ValueError):
        EieioCodec(10).encode(SpikeFrame.of([10]))
    with pytest.raises(ValueError):  # numpy path
        EieioCodec(10).encode(SpikeFrame(0, 0, 0, np.arange(20, dtype=np.uint32)))
    with pytest.raises(ValueError):  # key 0x800 + 0x800 = 0x1000 lacks prefix bit 0x800
        EieioCodec(0, base=0x800, prefix=0x800).encode(SpikeFrame.of([0x800]))


def test_options_from_url():
    cls = codec_class("eieio")
    codec = cls.from_options(100, {
        "keybits": "16", "base": "0x10000", "prefix": "1", "prefix_upper": "yes",
        "timestamp": "1", "tick_us": "100", "tag": "2", "sdp": "1,2,3",
    })
    assert isinstance(codec, EieioCodec)
    assert (codec.keybits, codec.base, codec.prefix, codec.prefix_upper) == (16, 0x10000, 1, True)
    assert (codec.timestamp, codec.tick_us, codec.tag, codec.sdp) == (True, 100, 2, (1, 2, 3))
    for bad in ({"keybits": "8"}, {"sdp": "1,2"}, {"sdp": "1,2,40"}, {"prefix": "0x10000"}):
        with pytest.raises(ValueError):
            cls.from_options(100, bad)


# -- splitting ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "per_message"),
    [
        ({"keybits": 16}, 127),  # what SpynnakerLiveSpikesConnection packs: 2 + 127*2 = 256
        ({"keybits": 32}, 63),  # 2 + 63*4 = 254
        ({"keybits": 16, "base": 0x30000, "prefix": 3, "prefix_upper": True}, 126),
        ({"keybits": 32, "timestamp": True}, 62),
        ({"keybits": 16, "timestamp": True, "sdp": (0, 0, 1)}, 126),
    ],
)
def test_splitting_under_256_bytes(kwargs, per_message):
    codec = EieioCodec(1000, **kwargs)
    ids = np.arange(1000, dtype=np.uint32)[::-1].copy()
    out = codec.encode(SpikeFrame(0, NO_SEQ, 0, ids))
    wrap = SDP_WRAP if codec.sdp else 0
    assert all(len(m) - wrap <= MAX_MESSAGE for m in out)
    assert [m[wrap] for m in out[:-1]] == [per_message] * (len(out) - 1)
    assert np.array_equal(np.concatenate([codec.decode(m).ids for m in out]), ids)


# -- pass-through ------------------------------------------------------------------------


def test_reframe_is_identity_and_same_wire_needs_identical_options():
    a, b = EieioCodec(100, keybits=16), EieioCodec(100, keybits=16)
    data = bytes.fromhex(GOLDEN[0][3])
    assert a.same_wire(b) and a.reframe(data, 1, 2, 3) == [data]
    assert not a.same_wire(EieioCodec(100, keybits=32))
    assert not a.same_wire(EieioCodec(100, keybits=16, base=1))


# -- properties --------------------------------------------------------------------------


def test_golden_vectors_are_printed_in_the_docs():
    doc = " ".join((Path(__file__).parents[2] / "docs" / "wire-formats.md").read_text().split())
    for hexes in [g[3] for g in GOLDEN] + [r[2] for r in READ_ONLY]:
        assert hexes in doc, hexes


_settings = settings(max_examples=150, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow])


@st.composite
def eieio_codecs(draw):
    keybits = draw(st.sampled_from([16, 32]))
    neurons = draw(st.integers(1, 3000))
    kwargs: dict = {"keybits": keybits, "timestamp": draw(st.booleans()),
                    "tag": draw(st.integers(0, 3)),
                    "sdp": draw(st.sampled_from([None, (1, 2, 3)]))}
    if keybits == 16:
        if draw(st.booleans()):
            prefix = draw(st.integers(0, 0xFFFF))
            kwargs.update(prefix=prefix, prefix_upper=True,
                          base=prefix << 16 | draw(st.integers(0, 0x10000 - neurons)))
        else:
            kwargs["base"] = draw(st.integers(0, 0x10000 - neurons))
    else:
        kwargs["base"] = draw(st.integers(0, 2**32 - neurons))
    return EieioCodec(neurons, **kwargs)


@_settings
@given(eieio_codecs(), st.data())
def test_round_trip(codec, data):
    ids = data.draw(st.lists(st.integers(0, codec.neurons - 1), max_size=600))
    frame = SpikeFrame.of(ids, t_sent_ns=data.draw(st.integers(0, 2**63)))
    out = codec.encode(frame)
    assert np.array_equal(np.concatenate([codec.decode(m).ids for m in out]), frame.ids)
    for m in out:
        assert codec.peek(m) == (0, NO_SEQ, 0, len(codec.decode(m).ids))


@_settings
@given(
    st.integers(0, 3), st.lists(st.integers(0, 2**32 - 1), max_size=80),
    st.one_of(st.none(), st.integers(0, 0xFFFF)), st.booleans(),
    st.one_of(st.none(), st.integers(0, 0xFFFF)), st.booleans(), st.integers(0, 3),
)
def test_agrees_with_spinnman_reader(etype, keys, prefix, upper, payload_base, is_time, tag):
    width = 0xFFFF if etype < 2 else 0xFFFFFFFF
    message = spinnman_message(etype, [k & width for k in keys], prefix=prefix, upper=upper,
                               payload_base=payload_base, is_time=is_time, tag=tag)
    assert outcome(EieioCodec(0), message) == ("ok", spinnman_keys(message))


@st.composite
def mutated(draw):
    codec = draw(eieio_codecs())
    ids = draw(st.lists(st.integers(0, codec.neurons - 1), max_size=200))
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


def check_agree(codec: EieioCodec, data: bytes) -> None:
    result = outcome(codec, data)
    try:
        peeked: tuple[str, object] = ("ok", codec.peek(data)[3])
    except DecodeError as exc:
        peeked = ("err", exc.reason)
    assert peeked == (("ok", len(result[1])) if result[0] == "ok" else result)  # type: ignore[arg-type]


@_settings
@given(mutated())
def test_mutations_raise_only_decode_error(case):
    check_agree(*case)


@_settings
@given(st.binary(max_size=300))
def test_random_bytes_raise_only_decode_error(data):
    check_agree(EieioCodec(500), data)
    check_agree(EieioCodec(500, sdp=(0, 0, 1)), data)


@pytest.mark.slow
@settings(max_examples=3000, deadline=None, suppress_health_check=list(HealthCheck))
@given(mutated())
def test_mutation_fuzz_long(case):
    check_agree(*case)


@pytest.mark.parametrize("n", [3, 100])
def test_decoded_ids_do_not_alias_a_reused_receive_buffer(n):
    codec = EieioCodec(1000, base=0x10000, timestamp=True)
    [data] = codec.encode(SpikeFrame.of(range(n)))[:1]
    buf = bytearray(data)
    frame = codec.decode(memoryview(buf))
    buf[:] = bytes(len(buf))
    assert frame.ids.tolist() == list(range(min(n, 62)))
