"""The native codec: golden vectors, errors, auth, splitting, peek/reframe, fuzzing."""

from __future__ import annotations

import hmac
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.codecs import codec_class
from bridge.codecs.native import (
    FLAG_AUTH,
    FLAG_LAST,
    HEADER_SIZE,
    MIN_MTU,
    TAG_SIZE,
    NativeCodec,
    _HmacSha256,
    datagram_info,
)
from bridge.errors import DecodeError
from bridge.frame import SpikeFrame

T = 1_700_000_000_123_456_789
KEY = b"spikebridge-example-key-32-bytes"
OLD_KEY = b"previous-key-still-valid-for-now"

# The same vectors are printed in docs/wire-formats.md, section "native".
GOLDEN = [
    ("u16 list", NativeCodec(100), SpikeFrame.of([1, 7, 42], source=3, seq=5, t_sent_ns=T),
     ["53 42 01 01 03 00 00 00 05 00 00 00 03 00 00 00 15 cd 85 3d fe 9c 97 17"
      " 01 00 00 00 00 00 06 00 29 00"]),
    ("bitmap", NativeCodec(1000),
     SpikeFrame.of([*range(500, 513), 514, 516, 519], source=1, seq=0xFFFFFFFF, t_sent_ns=T),
     ["53 42 01 09 01 00 00 00 ff ff ff ff 10 00 00 00 15 cd 85 3d fe 9c 97 17"
      " f4 01 00 00 ff 5f 09"]),
    ("u32 list", NativeCodec(0), SpikeFrame.of([70000, 5], source=2, seq=6, t_sent_ns=T),
     ["53 42 01 05 02 00 00 00 06 00 00 00 02 00 00 00 15 cd 85 3d fe 9c 97 17"
      " 05 00 00 00 6b 11 01 00 00 00 00 00"]),
    ("tagged", NativeCodec(100, keys=(KEY,)),
     SpikeFrame.of([1, 7, 42], source=3, seq=5, t_sent_ns=T),
     ["53 42 01 03 03 00 00 00 05 00 00 00 03 00 00 00 15 cd 85 3d fe 9c 97 17"
      " 01 00 00 00 00 00 06 00 29 00"
      " 53 6c d8 54 b3 fe 9d e1 e4 b3 33 42 8a 8e 29 03"]),
    ("split at mtu=52", NativeCodec(0, mtu=52),
     SpikeFrame.of(range(0, 1400, 100), source=4, seq=9, t_sent_ns=T),
     ["53 42 01 00 04 00 00 00 09 00 00 00 0c 00 00 00 15 cd 85 3d fe 9c 97 17"
      " 00 00 00 00 00 00 64 00 c8 00 2c 01 90 01 f4 01 58 02 bc 02 20 03 84 03 e8 03 4c 04",
      "53 42 01 01 04 00 01 00 0a 00 00 00 02 00 00 00 15 cd 85 3d fe 9c 97 17"
      " b0 04 00 00 00 00 64 00"]),
    ("empty", NativeCodec(0), SpikeFrame.of([], source=0, seq=0, t_sent_ns=0),
     ["53 42 01 01 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00"
      " 00 00 00 00"]),
]


def outcome(codec: NativeCodec, data: bytes) -> tuple[str, object]:
    """('ok', (source, seq, t, ids)) or ('err', reason); any other exception fails the test."""
    try:
        f = codec.decode(data)
    except DecodeError as exc:
        return "err", exc.reason
    return "ok", (f.source, f.seq, f.t_sent_ns, f.ids.tolist())


def peek_outcome(codec: NativeCodec, data: bytes) -> tuple[str, object]:
    try:
        return "ok", codec.peek(data)
    except DecodeError as exc:
        return "err", exc.reason


def reassemble(codec: NativeCodec, datagrams: list[bytes]) -> np.ndarray:
    return np.concatenate([codec.decode(d).ids for d in datagrams])


# -- golden vectors ----------------------------------------------------------------------


@pytest.mark.parametrize(("label", "codec", "frame", "hexes"), GOLDEN, ids=[g[0] for g in GOLDEN])
def test_golden_vectors(label: str, codec: NativeCodec, frame: SpikeFrame, hexes: list[str]):
    wire = [bytes.fromhex(h) for h in hexes]
    assert codec.encode(frame) == wire
    decoded = [codec.decode(d) for d in wire]
    assert np.array_equal(np.concatenate([f.ids for f in decoded]), frame.ids)
    assert [f.seq for f in decoded] == [(frame.seq + k) & 0xFFFFFFFF for k in range(len(wire))]
    assert all(f.source == frame.source and f.t_sent_ns == frame.t_sent_ns for f in decoded)


def test_golden_header_fields_by_hand():
    data = bytes.fromhex(GOLDEN[0][3][0])
    assert data[:2] == b"SB" and data[2] == 1
    assert data[3] == FLAG_LAST  # encoding 0 (u16), not tagged
    assert struct.unpack_from("<HHIIQI", data, 4) == (3, 0, 5, 3, T, 1)
    assert struct.unpack_from("<3H", data, HEADER_SIZE) == (0, 6, 41)  # ids minus base 1
    info = datagram_info(data)
    assert info["encoding"] == "u16" and info["last"] and not info["auth"] and info["base"] == 1


def test_tag_is_truncated_hmac_sha256_over_everything_before_it():
    data = bytes.fromhex(GOLDEN[3][3][0])
    assert data[3] & FLAG_AUTH
    assert data[-TAG_SIZE:] == hmac.digest(KEY, data[:-TAG_SIZE], "sha256")[:TAG_SIZE]


@pytest.mark.parametrize("key", [b"k", KEY, b"x" * 64, b"y" * 65, bytes(range(256))])
def test_precomputed_hmac_matches_stdlib(key: bytes):
    for msg in (b"", b"abc", bytes(1000)):
        assert _HmacSha256(key).tag(msg) == hmac.digest(key, msg, "sha256")[:TAG_SIZE]


# -- malformed input ---------------------------------------------------------------------


def _good() -> bytearray:
    return bytearray.fromhex(GOLDEN[0][3][0])


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda b: b.__setitem__(0, ord("X")), "bad_magic"),
        (lambda b: b.__setitem__(2, 2), "bad_version"),
        (lambda b: b.__setitem__(3, 0x11), "malformed"),  # reserved flag bit
        (lambda b: b.__setitem__(3, 0x0D), "malformed"),  # encoding 3
        (lambda b: b.__setitem__(12, 4), "truncated"),  # count 4: payload too short
        (lambda b: b.__setitem__(12, 2), "malformed"),  # count 2: trailing bytes
        (lambda b: b.__setitem__(24, 60), "id_out_of_range"),  # base 60: id 101 >= 100
        (lambda b: b.__setitem__(27, 0xFF), "id_out_of_range"),  # base beyond 2**32
        (lambda b: b.extend(b"\0\0"), "malformed"),
        (lambda b: b.__setitem__(3, FLAG_LAST | FLAG_AUTH), "truncated"),  # tag eats payload
    ],
)
def test_malformed_datagrams(mutate, reason):
    data = _good()
    mutate(data)
    assert outcome(NativeCodec(100), bytes(data)) == ("err", reason)
    assert peek_outcome(NativeCodec(100), bytes(data)) == ("err", reason)


def test_bitmap_popcount_mismatch():
    data = bytearray.fromhex(GOLDEN[1][3][0])
    data[12] = 17  # header claims one more spike than the bitmap holds
    assert outcome(NativeCodec(1000), bytes(data)) == ("err", "truncated")
    data[12] = 15
    assert outcome(NativeCodec(1000), bytes(data)) == ("err", "malformed")


def test_every_truncation_is_a_truncated_drop():
    codec = NativeCodec(0, mtu=200)
    for frame in (GOLDEN[0][2], GOLDEN[1][2], GOLDEN[2][2]):
        for data in codec.encode(frame):
            for cut in range(len(data)):
                assert outcome(codec, data[:cut]) == ("err", "truncated"), cut


def test_neurons_zero_means_no_bound_but_32_bits():
    codec = NativeCodec(0)
    [data] = codec.encode(SpikeFrame.of([0xFFFFFFFF, 0], seq=0))
    assert codec.decode(data).ids.tolist() == [0xFFFFFFFF, 0]


# -- auth --------------------------------------------------------------------------------


def test_auth_wrong_key_untagged_and_rotation():
    frame = SpikeFrame.of([1, 2, 3], source=7, seq=1, t_sent_ns=T)
    [tagged] = NativeCodec(10, keys=(KEY,)).encode(frame)
    [plain] = NativeCodec(10).encode(frame)
    assert outcome(NativeCodec(10, keys=(b"some-other-key",)), tagged) == ("err", "bad_auth")
    assert outcome(NativeCodec(10, keys=(KEY,)), plain) == ("err", "bad_auth")
    # Rotation: the receiver holds the new and the old key; senders on either are accepted.
    receiver = NativeCodec(10, keys=(KEY, OLD_KEY))
    [old_sender] = NativeCodec(10, keys=(OLD_KEY,)).encode(frame)
    assert outcome(receiver, tagged)[0] == "ok"
    assert outcome(receiver, old_sender)[0] == "ok"
    # Without keys a tagged datagram decodes (tag unverified).
    assert outcome(NativeCodec(10), tagged) == outcome(receiver, tagged)


def test_every_tampered_byte_is_rejected():
    codec = NativeCodec(100, keys=(KEY,))
    data = bytes.fromhex(GOLDEN[3][3][0])
    for i in range(len(data)):
        for flip in (0x01, 0x80):
            bad = bytearray(data)
            bad[i] ^= flip
            kind, reason = outcome(codec, bytes(bad))
            assert kind == "err", i
            if i >= 4:  # past magic, version and flags, only the tag can notice
                assert reason == "bad_auth", (i, reason)


def test_keys_must_be_nonempty_bytes():
    with pytest.raises(ValueError):
        NativeCodec(10, keys=(b"",))


# -- splitting ---------------------------------------------------------------------------


@pytest.mark.parametrize("keys", [(), (KEY,)])
def test_100k_all_firing_frame_splits_and_reassembles(keys):
    codec = NativeCodec(100_000, keys=keys)
    ids = np.arange(100_000, dtype=np.uint32)
    out = codec.encode(SpikeFrame(9, 0xFFFFFFFE, T, ids))
    assert 1 < len(out) < 12  # bitmaps: about 11.5k spikes per 1472-byte datagram
    assert all(len(d) <= codec.mtu for d in out)
    infos = [datagram_info(d) for d in out]
    assert [i["part"] for i in infos] == list(range(len(out)))
    assert [i["seq"] for i in infos] == [(0xFFFFFFFE + k) & 0xFFFFFFFF for k in range(len(out))]
    assert [i["last"] for i in infos] == [False] * (len(out) - 1) + [True]
    assert {i["encoding"] for i in infos} == {"bitmap"}
    assert np.array_equal(reassemble(codec, out), ids)


def test_sparse_unsorted_large_frame_keeps_order_and_duplicates():
    rng = np.random.default_rng(7)
    ids = rng.integers(0, 100_000, 20_000).astype(np.uint32)  # duplicates, any order
    codec = NativeCodec(100_000, mtu=512)
    out = codec.encode(SpikeFrame(0, 0, 0, ids))
    assert all(len(d) <= 512 for d in out)
    assert np.array_equal(reassemble(codec, out), ids)


def test_encoding_is_the_smallest_for_each_datagram():
    codec = NativeCodec(0)
    dense = codec.encode(SpikeFrame.of(range(100, 200), seq=0))[0]
    sparse = codec.encode(SpikeFrame.of(range(0, 60000, 1000), seq=0))[0]
    wide = codec.encode(SpikeFrame.of(range(0, 2**31, 2**27), seq=0))[0]
    assert datagram_info(dense)["encoding"] == "bitmap" and len(dense) == HEADER_SIZE + 13
    assert datagram_info(sparse)["encoding"] == "u16" and len(sparse) == HEADER_SIZE + 120
    assert datagram_info(wide)["encoding"] == "u32" and len(wide) == HEADER_SIZE + 64


# -- misuse ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "frame",
    [
        SpikeFrame.of([1], source=70000, seq=0),
        SpikeFrame.of([1], source=0, seq=-1),
        SpikeFrame.of([1], source=0, seq=0, t_sent_ns=-5),
        SpikeFrame.of([10], seq=0),  # neurons is 10
        SpikeFrame(0, 0, 0, np.arange(5, 105, dtype=np.uint32)),  # numpy path, id >= 10
    ],
)
def test_encode_misuse_is_value_error(frame):
    with pytest.raises(ValueError):
        NativeCodec(10).encode(frame)


def test_options_from_url():
    cls = codec_class("native")
    codec = cls.from_options(10, {"mtu": "512"}, keys=(KEY,))
    assert isinstance(codec, NativeCodec) and codec.mtu == 512 and codec.keys == (KEY,)
    with pytest.raises(ValueError, match="mtu"):
        cls.from_options(10, {"mtu": str(MIN_MTU - 1)})
    with pytest.raises(KeyError):
        cls.from_options(10, {"bogus": "1"})


# -- peek, reframe, same_wire -------------------------------------------------------------


def test_reframe_rewrites_header_and_resigns():
    [data] = NativeCodec(100, keys=(OLD_KEY,)).encode(GOLDEN[0][2])
    out_codec = NativeCodec(100, keys=(KEY,))
    [new] = out_codec.reframe(data, source=9, seq=77, t_sent_ns=123)
    f = out_codec.decode(new)
    assert (f.source, f.seq, f.t_sent_ns, f.ids.tolist()) == (9, 77, 123, [1, 7, 42])
    assert outcome(NativeCodec(100, keys=(OLD_KEY,)), new) == ("err", "bad_auth")
    [unsigned] = NativeCodec(100).reframe(new, source=1, seq=2, t_sent_ns=3)
    assert not datagram_info(unsigned)["auth"] and len(unsigned) == len(new) - TAG_SIZE
    assert NativeCodec(100).decode(unsigned).ids.tolist() == [1, 7, 42]


def test_reframe_resplits_when_the_tag_would_overflow_the_mtu():
    ids = np.arange(0, 20_000, 3, dtype=np.uint32)
    src = NativeCodec(0, mtu=600)
    dst = NativeCodec(0, mtu=600, keys=(KEY,))
    assert not src.same_wire(dst)
    for data in src.encode(SpikeFrame(0, 0, 0, ids)):
        out = dst.reframe(data, 1, 100, 5)
        assert all(len(d) <= 600 for d in out)
        assert np.array_equal(reassemble(dst, out), src.decode(data).ids)
        assert [dst.decode(d).seq for d in out] == list(range(100, 100 + len(out)))


def test_same_wire():
    assert NativeCodec(10).same_wire(NativeCodec(10, keys=(KEY,), mtu=1500))
    assert not NativeCodec(10).same_wire(NativeCodec(11))
    assert not NativeCodec(10, mtu=1000).same_wire(NativeCodec(10, mtu=999))


def test_golden_vectors_are_printed_in_the_docs():
    doc = " ".join((Path(__file__).parents[2] / "docs" / "wire-formats.md").read_text().split())
    for hexes in [h for g in GOLDEN for h in g[3]]:
        assert hexes in doc, hexes


# -- properties --------------------------------------------------------------------------

_settings = settings(max_examples=150, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow])


@st.composite
def native_cases(draw):
    neurons = draw(st.sampled_from([0, 1, 100, 70_000, 2**32]))
    hi = (neurons or 2**32) - 1
    ids = draw(st.one_of(
        st.lists(st.integers(0, hi), max_size=40),
        st.lists(st.integers(0, hi), min_size=1, max_size=3000),
        st.builds(lambda a, n: sorted(set(range(a, min(hi, a + n) + 1))),
                  st.integers(0, hi), st.integers(0, 5000)),
    ))
    keys = draw(st.sampled_from([(), (KEY,), (KEY, OLD_KEY)]))
    mtu = draw(st.sampled_from([MIN_MTU, 100, 1472, 9000]))
    seq = draw(st.integers(0, 2**32 - 1))
    frame = SpikeFrame.of(ids, source=draw(st.integers(0, 0xFFFF)), seq=seq,
                          t_sent_ns=draw(st.integers(0, 2**64 - 1)))
    return NativeCodec(neurons, mtu=mtu, keys=keys), frame


@_settings
@given(native_cases())
def test_round_trip(case):
    codec, frame = case
    out = codec.encode(frame)
    assert all(len(d) <= codec.mtu for d in out)
    frames = [codec.decode(d) for d in out]
    assert np.array_equal(np.concatenate([f.ids for f in frames]), frame.ids)
    assert [f.seq for f in frames] == [(frame.seq + k) & 0xFFFFFFFF for k in range(len(out))]
    assert {(f.source, f.t_sent_ns) for f in frames} == {(frame.source, frame.t_sent_ns)}
    for d, f in zip(out, frames, strict=True):
        assert codec.peek(d) == (f.source, f.seq, f.t_sent_ns, len(f.ids))
        [re] = NativeCodec(codec.neurons, mtu=codec.mtu, keys=codec.keys).reframe(d, 5, 6, 7)
        g = codec.decode(re)
        assert (g.source, g.seq, g.t_sent_ns) == (5, 6, 7) and np.array_equal(g.ids, f.ids)


@st.composite
def mutated(draw):
    codec, frame = draw(native_cases())
    data = bytearray(draw(st.sampled_from(codec.encode(frame))))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "set"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "cut":
            del data[pos:pos + draw(st.integers(1, 8))]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif data:
            data[pos] = draw(st.integers(0, 255))
    return codec, bytes(data)


def check_agree(codec: NativeCodec, data: bytes) -> None:
    """decode raises only DecodeError, and peek gives the same verdict and count."""
    result = outcome(codec, data)
    peeked = peek_outcome(codec, data)
    if result[0] == "ok":
        source, seq, t, ids = result[1]  # type: ignore[misc]
        assert peeked == ("ok", (source, seq, t, len(ids)))
    else:
        assert peeked == result


@_settings
@given(mutated())
def test_mutations_raise_only_decode_error_and_peek_agrees(case):
    check_agree(*case)


@_settings
@given(st.binary(max_size=200), st.sampled_from([(), (KEY,)]))
def test_random_bytes_raise_only_decode_error(data, keys):
    codec = NativeCodec(1000, keys=keys)
    check_agree(codec, data)
    check_agree(codec, b"SB\x01" + data)


@pytest.mark.slow
@settings(max_examples=3000, deadline=None, suppress_health_check=list(HealthCheck))
@given(mutated())
def test_mutation_fuzz_long(case):
    check_agree(*case)


@pytest.mark.parametrize("ids", [[1, 7, 42], list(range(0, 3000, 7)), list(range(2000)),
                                 [0, 2**31, 5] * 10])
def test_decoded_ids_do_not_alias_a_reused_receive_buffer(ids):
    codec = NativeCodec(0, mtu=9000, keys=(KEY,))
    [data] = codec.encode(SpikeFrame.of(ids, seq=1))
    buf = bytearray(data)
    frame = codec.decode(memoryview(buf))
    assert codec.peek(memoryview(buf)) == codec.peek(data)
    buf[:] = bytes(len(buf))  # the endpoint reuses its buffer for the next datagram
    assert frame.ids.tolist() == ids
