"""Faery's UDP layouts against Faery itself: its sender's bytes, its receiver, and fuzzing.

Every golden datagram here is sent by Faery's own UDP output (``EventsStream.to_udp``) to a
socket the test binds on 127.0.0.1; every datagram spikebridge sends is read back by Faery's
own UDP input (``events_stream_from_udp``).
"""

from __future__ import annotations

import errno
import socket
import struct
import threading
import time
from typing import Any

import faery
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.bench import fuzz
from bridge.codecs import codec_class
from bridge.codecs.faery_udp import T32X16Y15On1Codec, T64X16Y16On8Codec
from bridge.codecs.geometry import GEOMETRY_OPTIONS, LAYOUTS
from bridge.codecs.spif import SpifCodec
from bridge.errors import REASON_INDEX, DecodeError
from bridge.frame import NO_SEQ, SpikeFrame
from bridge.testing import free_udp_port, wait_for

FORMATS = ["t64_x16_y16_on8", "t32_x16_y15_on1"]
W, H = 640, 480


def camera_events(n: int, seed: int, width: int = W, height: int = H,
                  t0: int = 0) -> np.ndarray:
    """``n`` time-ordered events in Faery's own dtype."""
    rng = np.random.default_rng(seed)
    ev = np.zeros(n, dtype=faery.EVENTS_DTYPE)
    ev["t"] = t0 + np.cumsum(rng.integers(0, 3000, n)).astype(np.uint64)
    ev["x"] = rng.integers(0, width, n)
    ev["y"] = rng.integers(0, height, n)
    ev["on"] = rng.integers(0, 2, n).astype(bool)
    return ev


def faery_send(ev: np.ndarray, port: int, fmt: str, per: int = 100,
               dims: tuple[int, int] = (W, H)) -> None:
    """Faery's UDP output sends ``ev`` to 127.0.0.1:``port``."""
    faery.events_stream_from_array(ev, dims).to_udp(("127.0.0.1", port), format=fmt,
                                                     events_per_packet=per)


def faery_datagrams(ev: np.ndarray, fmt: str, per: int = 100,
                    dims: tuple[int, int] = (W, H)) -> list[bytes]:
    """The datagrams Faery sends for ``ev``, caught on a socket this test binds."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        s.bind(("127.0.0.1", 0))
        s.settimeout(2)
        faery_send(ev, s.getsockname()[1], fmt, per, dims)
        want = -(-len(ev) // per)
        return [s.recv(65536) for _ in range(want)]


def pixel_ids(ev: np.ndarray, layout: str = "pyx", width: int = W, height: int = H) -> list[int]:
    """The ids docs/wire-formats.md gives these events (the formulas written out)."""
    x, y, p = (ev["x"].astype(np.int64), ev["y"].astype(np.int64),
               ev["on"].astype(np.int64))
    formula = {"pyx": (p * height + y) * width + x, "xyp": (x * height + y) * 2 + p,
               "yx": y * width + x}[layout]
    return formula.tolist()


class FaeryReceiver:
    """Faery's own UDP input on 127.0.0.1:port, collecting events on a daemon thread."""

    def __init__(self, fmt: str, want: int, dims: tuple[int, int] = (W, H)) -> None:
        self.port = free_udp_port()
        self.want = want
        self.chunks: list[np.ndarray] = []
        self.count = 0
        stream = faery.events_stream_from_udp(dimensions=dims, address=("127.0.0.1", self.port),
                                              format=fmt)
        self.thread = threading.Thread(target=self._run, args=(stream,), daemon=True)
        self.thread.start()
        assert wait_for(self._bound, 5), "Faery's receiver did not bind"

    def _run(self, stream: Any) -> None:
        for events in stream:
            self.chunks.append(events.copy())
            self.count += len(events)
            if self.count >= self.want:
                return

    def _bound(self) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind(("127.0.0.1", self.port))
            except OSError as exc:
                return exc.errno == errno.EADDRINUSE
        return False

    def events(self, timeout: float = 10) -> np.ndarray:
        self.thread.join(timeout)
        return np.concatenate(self.chunks) if self.chunks else np.zeros(0, faery.EVENTS_DTYPE)


# -- Faery's bytes -------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("layout", ["pyx", "xyp", "yx"])
def test_decodes_what_faery_sends_event_for_event(fmt: str, layout: str) -> None:
    ev = camera_events(250, seed=len(layout), t0=(1 << 32) - 300_000)  # t32 wraps mid-stream
    datagrams = faery_datagrams(ev, fmt, per=100)
    assert [len(d) for d in datagrams] == [100 * (13 if fmt[1] == "6" else 8)] * 2 + [
        50 * (13 if fmt[1] == "6" else 8)]
    codec = codec_class(fmt).from_options(0, {"width": str(W), "height": str(H),
                                              "layout": layout})
    ids, times = [], []
    for d in datagrams:
        frame, t = codec.decode_times(d)
        assert (frame.source, frame.seq, frame.t_sent_ns) == (0, NO_SEQ, 0)
        assert frame == codec.decode(d)
        ids += frame.ids.tolist()
        times += t.tolist()
    assert ids == pixel_ids(ev, layout)
    mask = 0xFFFFFFFF if fmt == "t32_x16_y15_on1" else (1 << 64) - 1
    assert times == (ev["t"] & np.uint64(mask)).tolist()


@pytest.mark.parametrize("fmt", FORMATS)
def test_encodes_the_bytes_faery_sends(fmt: str) -> None:
    ev = camera_events(130, seed=3, t0=(1 << 32) - 100_000)
    theirs = faery_datagrams(ev, fmt, per=40)
    codec = codec_class(fmt)(0, width=W, height=H, events=40)
    ours = codec.encode_events(ev["t"], ev["x"], ev["y"], ev["on"].astype(np.uint8))
    assert ours == theirs
    # From ids alone every event takes the frame's time, as Faery would send them.
    same_t = ev.copy()
    same_t["t"] = 123_456_789
    frame = SpikeFrame.of(pixel_ids(ev), t_sent_ns=123_456_789_000)
    assert codec.encode(frame) == faery_datagrams(same_t, fmt, per=40)


def test_t32_y_limit_is_faerys_encoder_mask() -> None:
    # Faery writes ((y << 1) & 0x7FFF) | on: y above 16383 would wrap, so the geometry stops there.
    T32X16Y15On1Codec(0, width=8, height=1 << 14)
    with pytest.raises(ValueError, match=r"height 1\.\.16384"):
        T32X16Y15On1Codec(0, width=8, height=(1 << 14) + 1)
    T64X16Y16On8Codec(0, width=1 << 16, height=1 << 16)


# -- counted drops, never a misdecode ---------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_partial_events_and_events_outside_are_drops(fmt: str) -> None:
    [good] = faery_datagrams(camera_events(10, seed=1, width=64, height=48), fmt,
                             dims=(64, 48))
    size = len(good) // 10
    codec = codec_class(fmt)(0, width=64, height=48)
    for cut in range(1, len(good)):
        reason = None if cut % size == 0 else "truncated"
        try:
            got = codec.decode(good[:cut])
        except DecodeError as exc:
            assert exc.reason == reason, cut
        else:
            assert reason is None and len(got.ids) == cut // size
    narrow = codec_class(fmt)(0, width=63, height=48)
    [wide] = faery_datagrams(_x(63), fmt, dims=(64, 48))
    with pytest.raises(DecodeError) as err:
        narrow.decode(wide)
    assert err.value.reason == "id_out_of_range"
    with pytest.raises(DecodeError) as err:
        codec_class(fmt)(10, width=64, height=48).decode(wide)  # id 63 >= neurons 10
    assert err.value.reason == "id_out_of_range"


def _x(x: int) -> np.ndarray:
    ev = np.zeros(1, dtype=faery.EVENTS_DTYPE)
    ev["x"] = x
    return ev


def test_t64_on_byte_other_than_0_or_1_is_malformed() -> None:
    data = struct.pack("<QHHB", 5, 1, 1, 2)
    with pytest.raises(DecodeError) as err:
        T64X16Y16On8Codec(0, width=4, height=4).decode(data)
    assert err.value.reason == "malformed"


def test_faery_t32_into_a_spif_input_is_caught_only_by_the_geometry() -> None:
    # A t32 event (t u32, x u16, y<<1|on u16) read as SPIF is an event word (b31 clear: "a
    # timestamp follows") x = t >> 16, y = t & 0x7FFF, and its "timestamp" word. Nothing in
    # the bytes tells the two apart; only the geometry can: y = t & 0x7FFF lands outside a
    # 480-row sensor for 98.5% of timestamps, so almost every 100-event datagram is dropped.
    spif = SpifCodec(0, width=W, height=H)
    ev = camera_events(2000, seed=11)
    drops = 0
    for d in faery_datagrams(ev, "t32_x16_y15_on1"):
        try:
            spif.decode(d)
        except DecodeError as exc:
            assert exc.reason == "id_out_of_range"
            drops += 1
    assert drops == 20
    # The blind spot: timestamps below the sensor's height (the first ms of a recording)
    # are valid SPIF and decode into wrong events at x = 0, y = t.
    early = camera_events(5, seed=1)
    early["t"] = [0, 10, 20, 30, 40]
    [d] = faery_datagrams(early, "t32_x16_y15_on1")
    assert spif.decode(d).ids.tolist() == [0, 10 * W, 20 * W, 30 * W, 40 * W]


# -- Faery -> spikebridge -> Faery -----------------------------------------------------------


def relay(run_bridge: Any, fmt_in: str, out_url: str, neurons: int = 2 * W * H) -> Any:
    return run_bridge({"input": [f"udp://127.0.0.1:0?format={fmt_in}&width={W}&height={H}"
                                 f"&neurons={neurons}"],
                       "output": [out_url]})


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_faery_spikebridge_faery_same_layout(run_bridge: Any, fmt: str) -> None:
    ev = camera_events(2000, seed=5)
    rx = FaeryReceiver(fmt, len(ev))
    rb = relay(run_bridge, fmt, f"udp://127.0.0.1:{rx.port}?format={fmt}&width={W}&height={H}"
                                f"&neurons={2 * W * H}")
    assert rb.bridge.inputs[0].passthrough  # datagrams go out unchanged
    faery_send(ev, rb.in_port(), fmt)
    got = rx.events()
    assert len(got) == len(ev)
    for field in ("t", "x", "y", "on"):
        assert np.array_equal(got[field], ev[field]), field
    st = rb.bridge.stats.inputs[0]
    assert (st.frames, st.accepted, st.spikes, sum(st.drops)) == (20, 20, 2000, 0)


def test_t64_into_t32_keeps_every_event_and_its_time(run_bridge: Any) -> None:
    ev = camera_events(1000, seed=6, t0=(1 << 32) - 1_000_000)  # wraps in t32
    rx = FaeryReceiver("t32_x16_y15_on1", len(ev))
    rb = relay(run_bridge, "t64_x16_y16_on8",
               f"udp://127.0.0.1:{rx.port}?format=t32_x16_y15_on1&width={W}&height={H}"
               f"&neurons={2 * W * H}&events=64")
    assert rb.bridge.inputs[0].passthrough  # re-laid event for event, no id array
    faery_send(ev, rb.in_port(), "t64_x16_y16_on8")
    got = rx.events()
    assert len(got) == len(ev)
    for field in ("x", "y", "on"):
        assert np.array_equal(got[field], ev[field]), field
    # t32 carries the time modulo 2**32 (Faery's receiver unwraps only between datagrams).
    mask = np.uint64(0xFFFFFFFF)
    assert np.array_equal(got["t"] & mask, ev["t"] & mask)


def test_t32_into_spif_with_timestamps_keeps_each_events_time(run_bridge: Any, peer: Any) -> None:
    ev = camera_events(300, seed=8)
    rb = relay(run_bridge, "t32_x16_y15_on1",
               f"udp://127.0.0.1:{peer.port}?format=spif&width={W}&height={H}"
               f"&neurons={2 * W * H}&timestamp=1")
    assert rb.bridge.inputs[0].passthrough
    faery_send(ev, rb.in_port(), "t32_x16_y15_on1")
    words = np.frombuffer(b"".join(peer.recv_all()), dtype="<u4")
    assert len(words) == 2 * len(ev)
    spif = SpifCodec(0, width=W, height=H, timestamp=True)
    assert spif.decode(words.tobytes()).ids.tolist() == pixel_ids(ev)
    assert np.array_equal(words[1::2], ev["t"] & np.uint64(0xFFFFFFFF))


def test_t64_into_native_keeps_the_events_and_the_frame_time(run_bridge: Any, peer: Any) -> None:
    from bridge.codecs.native import NativeCodec

    ev = camera_events(500, seed=9)
    rb = relay(run_bridge, "t64_x16_y16_on8",
               f"udp://127.0.0.1:{peer.port}?format=native&neurons={2 * W * H}")
    before = time.time_ns()
    faery_send(ev, rb.in_port(), "t64_x16_y16_on8")
    frames = [NativeCodec(2 * W * H).decode(d) for d in peer.recv_all()]
    assert np.concatenate([f.ids for f in frames]).tolist() == pixel_ids(ev)
    assert all(before <= f.t_sent_ns <= time.time_ns() for f in frames)  # the send time


@pytest.mark.parametrize("fmt", FORMATS)
def test_bad_datagrams_are_counted_at_the_input(run_bridge: Any, peer: Any, fmt: str) -> None:
    rb = relay(run_bridge, fmt, f"udp://127.0.0.1:{peer.port}?format={fmt}&width={W}&height={H}"
                                f"&neurons={2 * W * H}")
    [good] = faery_datagrams(camera_events(10, seed=2), fmt)
    outside = camera_events(1, seed=2)
    outside["x"] = W
    [bad] = faery_datagrams(outside, fmt, dims=(W + 1, H))
    for d in (good, good[:-1], bad, good):
        peer.send(rb.in_port(), d)
    assert wait_for(lambda: rb.bridge.stats.inputs[0].frames == 4)
    st = rb.bridge.stats.inputs[0]
    assert st.accepted == 2
    assert st.drops[REASON_INDEX["truncated"]] == 1
    assert st.drops[REASON_INDEX["id_out_of_range"]] == 1
    assert peer.recv_all() == [good, good]


# -- options -------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_geometry_keys_come_from_the_shared_table(fmt: str) -> None:
    cls = codec_class(fmt)
    for key, option in GEOMETRY_OPTIONS.items():
        assert cls.OPTIONS[key] is option is SpifCodec.OPTIONS[key]
    codec = cls.from_options(0, {"width": "346", "height": "260", "layout": "xy",
                                 "polarity": "0", "events": "7"})
    assert (codec.geometry.width, codec.geometry.layout, codec.events) == (346, "xy", 7)
    for bad in ({"width": "0"}, {"layout": "zz"}, {"polarity": "2"}, {"events": "0"},
                {"events": "100000"}):
        with pytest.raises(ValueError):
            cls.from_options(0, {"width": "4", "height": "4", **bad})
    with pytest.raises(ValueError, match="width= and height="):
        cls(0)
    with pytest.raises(KeyError):
        cls.from_options(0, {"width": "4", "height": "4", "mtu": "5"})


def test_same_wire_only_where_events_keep_their_pixels_and_times() -> None:
    a = T64X16Y16On8Codec(0, width=W, height=H)
    assert a.same_wire(T64X16Y16On8Codec(0, width=W, height=H))
    assert a.same_wire(T32X16Y15On1Codec(0, width=W, height=H))
    assert a.same_wire(SpifCodec(0, width=W, height=H, timestamp=True))
    assert not a.same_wire(SpifCodec(0, width=W, height=H))  # no time to carry: decode path
    assert not a.same_wire(T64X16Y16On8Codec(0, width=W, height=H, layout="xyp"))
    assert not a.same_wire(T64X16Y16On8Codec(0, width=W + 1, height=H))
    assert not a.same_wire(codec_class("native")(2 * W * H))


# -- fuzzing -------------------------------------------------------------------------------

_settings = settings(max_examples=150, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow])


@st.composite
def faery_codecs(draw: Any) -> Any:
    cls = draw(st.sampled_from([T64X16Y16On8Codec, T32X16Y15On1Codec]))
    w, h = draw(st.integers(1, 400)), draw(st.integers(1, 400))
    layout = draw(st.sampled_from(LAYOUTS))
    size = w * h * (2 if "p" in layout else 1)
    neurons = draw(st.sampled_from([0, size, max(1, size // 2)]))
    return cls(neurons, width=w, height=h, layout=layout, events=draw(st.integers(1, 300)),
               polarity=draw(st.integers(0, 1)))


@_settings
@given(faery_codecs(), st.data())
def test_round_trip(codec: Any, data: Any) -> None:
    limit = codec.geometry.limit
    ids = data.draw(st.lists(st.integers(0, limit - 1), max_size=500))
    out = codec.encode(SpikeFrame.of(ids, t_sent_ns=data.draw(st.integers(0, 2**63))))
    assert all(len(d) <= codec.events * codec.DTYPE.itemsize for d in out)
    assert np.concatenate([codec.decode(d).ids for d in out]).tolist() == ids


@_settings
@given(st.sampled_from(FORMATS), st.binary(max_size=400))
def test_random_bytes_meet_the_decoder_contract(fmt: str, data: bytes) -> None:
    fuzz.build_target(fmt)(data)  # only DecodeError; agrees with the reference reading


@_settings
@given(st.sampled_from(FORMATS), st.lists(st.tuples(st.integers(0, 2**64 - 1),
                                                    st.integers(0, 2**16 - 1),
                                                    st.integers(0, 2**16 - 1),
                                                    st.integers(0, 255)), max_size=40))
def test_structured_events_meet_the_decoder_contract(fmt: str, events: list[Any]) -> None:
    if fmt == "t64_x16_y16_on8":
        data = b"".join(struct.pack("<QHHB", *e) for e in events)
    else:
        data = b"".join(struct.pack("<IHH", t & 0xFFFFFFFF, x, y) for t, x, y, _ in events)
    fuzz.build_target(fmt)(data)


def test_golden_vectors_are_faerys_and_printed_in_the_docs() -> None:
    from pathlib import Path

    ev = np.zeros(5, dtype=faery.EVENTS_DTYPE)
    ev["t"] = [0, 1, 1000, 2**33 + 5, 2**40]
    ev["x"] = [0, 1, 639, 3, 100]
    ev["y"] = [0, 479, 2, 63, 7]
    ev["on"] = [0, 1, 1, 0, 1]
    doc = " ".join((Path(__file__).parents[2] / "docs" / "wire-formats.md").read_text().split())
    for fmt in FORMATS:
        [data] = faery_datagrams(ev, fmt)
        assert data.hex(" ") in doc, fmt
        assert codec_class(fmt)(0, width=W, height=H).decode(data).ids.tolist() == [
            0, 613761, 309119, 40323, 311780]


def test_spif_into_faery_keeps_times_and_gives_untimed_events_the_send_time() -> None:
    spif = SpifCodec(0, width=W, height=H, layout="yx")
    t64 = T64X16Y16On8Codec(0, width=W, height=H, layout="yx")
    assert spif.same_wire(t64)
    assert not spif.same_wire(T64X16Y16On8Codec(0, width=W, height=H))  # other layout
    words = [(3 << 16) | 0x8000 | 7, 5_000,          # x=3, y=7, p=1, its time 5000 µs
             0x80000000 | (9 << 16) | 2]             # x=9, y=2, p=0, no time
    data = struct.pack("<3I", *words)
    spif.peek(data)
    [out] = spif.relay_to(t64, data, 1, 0, 77_000_123)
    assert [struct.unpack_from("<QHHB", out, i) for i in (0, 13)] == [
        (5_000, 3, 7, 1), (77_000, 9, 2, 0)]
