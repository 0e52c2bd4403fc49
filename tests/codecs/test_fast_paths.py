"""The codecs' fast paths (big-int lane checks, the spif word table, native's one-datagram
shortcut) give exactly what the plain numpy paths give, on arbitrary input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.codecs.base import Codec
from bridge.codecs.faery_udp import T32X16Y15On1Codec, T64X16Y16On8Codec
from bridge.codecs.native import NativeCodec
from bridge.codecs.spif import SpifCodec
from bridge.errors import DecodeError
from bridge.frame import NO_SEQ, SpikeFrame

GEOMETRIES = [(346, 260, "pyx", 1, 0), (346, 260, "pyx", 0, 0), (346, 260, "xyp", 0, 0),
              (100, 50, "pyx", 1, 3000), (1, 1, "pyx", 0, 0), (640, 480, "xpy", 0, 0)]


def verdict(fn, data):  # type: ignore[no-untyped-def]
    try:
        return ("ok", fn(data))
    except DecodeError as exc:
        return ("drop", exc.reason)


def near_valid_words(draw, w: int, h: int) -> bytes:  # type: ignore[no-untyped-def]
    """Untimed event words inside the sensor, at most one of them pushed just outside."""
    n = draw(st.integers(17, 200))
    x = draw(st.lists(st.integers(0, w - 1), min_size=n, max_size=n))
    y = draw(st.lists(st.integers(0, h - 1), min_size=n, max_size=n))
    p = draw(st.lists(st.integers(0, 1), min_size=n, max_size=n))
    words = [1 << 31 | xx << 16 | yy | pp << 15 for xx, yy, pp in zip(x, y, p, strict=True)]
    k = draw(st.integers(0, n - 1))
    bad = draw(st.sampled_from(["none", "x", "y", "x+", "y+", "timed"]))
    if bad == "x":
        words[k] = words[k] & ~(0x7FFF << 16) | w << 16
    elif bad == "y":
        words[k] = words[k] & ~0x7FFF | h
    elif bad == "x+":
        words[k] |= 0x7FFF << 16
    elif bad == "y+":
        words[k] |= 0x7FFF
    elif bad == "timed":
        words[k] &= 0x7FFFFFFF
    return np.array(words, dtype="<u4").tobytes()


@pytest.mark.parametrize("geo", GEOMETRIES)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_spif_peek_matches_full_decode(geo: tuple[int, int, str, int, int],
                                       data: st.DataObject) -> None:
    w, h, layout, polarity, neurons = geo
    codec = SpifCodec(neurons, width=w, height=h, layout=layout, polarity=polarity)
    raw = data.draw(st.one_of(st.binary(min_size=0, max_size=600),
                              st.composite(lambda d: near_valid_words(d, w, h))()))
    assert verdict(codec.peek, raw) == verdict(lambda d: Codec.peek(codec, d), raw)


@pytest.mark.parametrize("geo", GEOMETRIES)
@pytest.mark.parametrize("timestamp", [False, True])
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_spif_encode_table_matches_arithmetic(geo: tuple[int, int, str, int, int],
                                              timestamp: bool, data: st.DataObject) -> None:
    w, h, layout, polarity, neurons = geo
    fast = SpifCodec(neurons, width=w, height=h, layout=layout, polarity=polarity,
                     timestamp=timestamp)
    slow = SpifCodec(neurons, width=w, height=h, layout=layout, polarity=polarity,
                     timestamp=timestamp)
    slow._table = None  # the arithmetic path
    n = data.draw(st.integers(17, 700))
    ids = np.array(data.draw(st.lists(st.integers(0, fast._limit - 1), min_size=n,
                                      max_size=n)), dtype=np.uint32)
    frame = SpikeFrame(0, NO_SEQ, 123_456_789_000, ids)
    assert fast.encode(frame) == slow.encode(frame)
    over = SpikeFrame(0, NO_SEQ, 0, np.append(ids, np.uint32(fast._limit)))
    with pytest.raises(ValueError, match="out of range"):
        fast.encode(over)


def reference_ids(codec: T64X16Y16On8Codec | T32X16Y15On1Codec, raw: bytes
                  ) -> tuple[str, object]:
    """The verdict computed field by field with numpy, no lane tricks."""
    size = codec.DTYPE.itemsize
    if len(raw) % size:
        return ("drop", "truncated")
    rec = np.frombuffer(raw, dtype=codec.DTYPE)
    if isinstance(codec, T64X16Y16On8Codec):
        x, y, on = rec["x"].astype(np.int64), rec["y"].astype(np.int64), rec["on"].astype(np.int64)
        if len(on) and on.max() > 1:
            return ("drop", "malformed")
    else:
        x, y, on = (rec["x"].astype(np.int64), rec["yon"].astype(np.int64) >> 1,
                    rec["yon"].astype(np.int64) & 1)
    g = codec.geometry
    if len(x) and (x.max() >= g.width or y.max() >= g.height):
        return ("drop", "id_out_of_range")
    ids = x * g.mx + y * g.my + (on * g.mp if g.mp else 0)
    if len(ids) and ids.max() >= g.limit:
        return ("drop", "id_out_of_range")
    return ("ok", ids.astype(np.uint32).tolist())


@pytest.mark.parametrize("cls", [T64X16Y16On8Codec, T32X16Y15On1Codec])
@pytest.mark.parametrize("geo", GEOMETRIES)
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_faery_decode_matches_field_by_field(cls: type, geo: tuple[int, int, str, int, int],
                                             data: st.DataObject) -> None:
    w, h, layout, polarity, neurons = geo
    codec = cls(neurons, width=w, height=h, layout=layout, polarity=polarity)
    n = data.draw(st.integers(0, 150))
    rec = np.zeros(n, dtype=codec.DTYPE)
    rec["t"] = data.draw(st.lists(st.integers(0, 2**31), min_size=n, max_size=n))
    rec["x"] = data.draw(st.lists(st.integers(0, w + 1), min_size=n, max_size=n))
    ys = data.draw(st.lists(st.integers(0, h + 1), min_size=n, max_size=n))
    ons = data.draw(st.lists(st.sampled_from([0, 1, 1, 0, 2, 255]), min_size=n, max_size=n))
    if cls is T64X16Y16On8Codec:
        rec["y"], rec["on"] = ys, ons
    else:
        rec["yon"] = [(y << 1) & 0xFFFF | (o & 1) for y, o in zip(ys, ons, strict=True)]
    raw = rec.tobytes() + data.draw(st.sampled_from([b"", b"", b"\x01"]))
    got = verdict(lambda d: codec.decode(d).ids.tolist(), raw)
    assert got == reference_ids(codec, raw)


@settings(max_examples=80, deadline=None)
@given(n=st.integers(1, 400), top=st.sampled_from([300, 70_000, 179_920, 2**32 - 1]),
       sort=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_native_one_datagram_shortcut_matches_split(n: int, top: int, sort: bool,
                                                    seed: int) -> None:
    codec = NativeCodec(0)
    n = min(n, codec._budget // 4)  # frames that fit one datagram: the shortcut's domain
    ids = np.random.default_rng(seed).integers(0, top, n).astype(np.uint32)
    if sort:
        ids = np.unique(ids)
    got = codec._split(ids)
    # The general path: sorted runs as _split plans them, else the unordered runs.
    ordered = len(ids) < 2 or bool(np.all(ids[1:] > ids[:-1]))
    assert len(got) == 1
    assert got[0] == codec._payload(ids, ordered)
