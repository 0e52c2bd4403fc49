"""The eDVS stream codec: golden bytes, lock and resync, reply demux, unwrap, layout, fuzz."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.codecs.edvs import CHECK_BYTES, EdvsCodec, event_bytes
from bridge.errors import DecodeError
from bridge.frame import SpikeFrame


def drain(codec: EdvsCodec) -> tuple[list[int], list[str], list[int]]:
    """(all ids, error reasons, all timestamps) currently decodable."""
    ids: list[int] = []
    ts: list[int] = []
    errors: list[str] = []
    while True:
        try:
            frame = codec.next_frame()
        except DecodeError as exc:
            errors.append(exc.reason)
            continue
        if frame is None:
            return ids, errors, ts
        ids += frame.ids.tolist()
        ts += codec.timestamps_us.tolist()


def replies(codec: EdvsCodec) -> list[str]:
    out = []
    while (line := codec.next_control()) is not None:
        out.append(line)
    return out


def test_golden_two_byte_events() -> None:
    # (x=1, y=2, on) and (x=127, y=0, off): 1yyyyyyy pxxxxxxx
    data = bytes.fromhex("82 81 80 7f") * 4
    assert event_bytes([1, 127] * 4, [2, 0] * 4, [1, 0] * 4) == data
    codec = EdvsCodec(lock=4)
    codec.feed(data)
    frame = codec.next_frame()
    assert frame is not None and frame.seq == -1 and frame.t_sent_ns == 0
    # id = 2 * (y * 128 + x) + p
    assert frame.ids.tolist() == [2 * (2 * 128 + 1) + 1, 2 * 127] * 4
    assert codec.next_frame() is None and codec.locked


def test_golden_timestamped_events() -> None:
    # 6-byte events: y=5 x=9 p=1 at t=0x01020304 µs
    data = bytes.fromhex("85 89 01 02 03 04")
    assert event_bytes([9], [5], [1], [0x01020304], evsize=6) == data
    codec = EdvsCodec(evsize=6, lock=1)
    codec.feed(data)
    assert codec.next_frame() == SpikeFrame.of([2 * (5 * 128 + 9) + 1])
    assert codec.timestamps_us.tolist() == [0x01020304]


def test_lock_needs_consecutive_aligned_events() -> None:
    codec = EdvsCodec(lock=8)
    codec.feed(event_bytes(range(7), range(7), [0] * 7))
    assert codec.next_frame() is None and not codec.locked  # 7 aligned events: not yet
    codec.feed(event_bytes([7], [7], [0]))
    ids, errors, _ = drain(codec)
    assert len(ids) == 8 and errors == [] and codec.locked


def test_partial_event_at_start_is_one_counted_drop() -> None:
    codec = EdvsCodec(lock=4)
    codec.feed(b"\x05" + event_bytes(range(10), [3] * 10, [1] * 10))  # tail of an event
    ids, errors, _ = drain(codec)
    assert len(ids) == 10 and errors == ["truncated"]


def test_resync_after_noise() -> None:
    codec = EdvsCodec(lock=4)
    good = event_bytes(range(20), [9] * 20, [1] * 20)
    codec.feed(good + b"\x13\x01\x02\x03\x7f\x00\x11" + good)
    ids, errors, _ = drain(codec)
    assert len(ids) == 40
    assert errors == ["malformed"] and codec.resyncs == 1


def test_deleted_byte_loses_then_regains_lock() -> None:
    codec = EdvsCodec(lock=4)
    data = bytearray(event_bytes(range(100), [1] * 100, [0] * 100))
    del data[61]  # an x byte: from here the stream is shifted by one
    codec.feed(bytes(data))
    ids, errors, _ = drain(codec)
    assert codec.resyncs == 1 and errors
    assert 90 <= len(ids) <= 99  # the damaged event and a few neighbours at most


def test_replies_are_demultiplexed_from_events() -> None:
    codec = EdvsCodec(lock=4)
    events = event_bytes(range(8), [4] * 8, [1] * 8)
    codec.feed(b"EDVS4337 banner\r\n" + events + b"E+\n" + events + b"-B0=1067\n")
    ids, errors, _ = drain(codec)
    assert errors == [] and len(ids) == 16
    assert replies(codec) == ["EDVS4337 banner", "E+", "-B0=1067"]


def test_reply_split_across_feeds() -> None:
    codec = EdvsCodec(lock=2)
    codec.feed(event_bytes([1, 2], [1, 1], [0, 0]) + b"ab")
    ids, _, _ = drain(codec)
    assert len(ids) == 2 and replies(codec) == []
    codec.feed(b"c\n" + event_bytes([3], [1], [0]))
    ids, errors, _ = drain(codec)
    assert replies(codec) == ["abc"] and len(ids) == 1 and errors == []


def test_sync_zero_firmware() -> None:
    codec = EdvsCodec(sync=0, evsize=4, lock=4)
    codec.feed(event_bytes(range(10), [2] * 10, [1] * 10, range(100, 110), evsize=4, sync=0))
    ids, errors, ts = drain(codec)
    assert len(ids) == 10 and errors == [] and ts == list(range(100, 110))


def test_timestamps_unwrap_within_stream() -> None:
    codec = EdvsCodec(evsize=4, lock=2)
    raw = [65530, 65535, 3, 10, 65000, 20]  # two wraps
    codec.feed(event_bytes([1] * 6, [1] * 6, [0] * 6, raw, evsize=4))
    _, _, ts = drain(codec)
    assert ts == [65530, 65535, 65536 + 3, 65536 + 10, 65536 + 65000, 131072 + 20]
    codec.feed(event_bytes([1], [1], [0], [5], evsize=4))  # wrap across two feeds
    assert drain(codec)[2] == [131072 + 65536 + 5]
    assert codec.ts_wraps == 3


def test_timestamp_wrap_after_idle_gap_uses_arrival_time() -> None:
    period = 1 << 16
    codec = EdvsCodec(evsize=4, lock=2)
    codec.feed(event_bytes([1, 1], [1, 1], [0, 0], [1000, 1100], evsize=4), now_ns=0)
    drain(codec)
    # 300 ms idle: the 16-bit µs clock wrapped four times, invisible in the bytes alone.
    t_dev = 1100 + 300_000
    codec.feed(event_bytes([1], [1], [0], [t_dev % period], evsize=4), now_ns=300_000_000)
    assert drain(codec)[2] == [t_dev]
    # Without arrival times only the visible wrap can be counted.
    blind = EdvsCodec(evsize=4, lock=2)
    blind.feed(event_bytes([1, 1], [1, 1], [0, 0], [1000, 1100], evsize=4))
    blind.feed(event_bytes([1], [1], [0], [t_dev % period], evsize=4))
    assert t_dev % period == 38956  # > 1100: no step back is visible
    assert drain(blind)[2][-1] == 38956


def test_layout_scale_and_polarity() -> None:
    merge = EdvsCodec(scale=4, polarity="merge", lock=1)
    merge.feed(event_bytes([5, 127], [9, 127], [1, 0]))
    assert drain(merge)[0] == [(9 // 4) * 32 + 5 // 4, 31 * 32 + 31]
    assert merge.population == 32 * 32
    on = EdvsCodec(polarity="on", lock=1)
    on.feed(event_bytes([1, 2, 3], [0, 0, 0], [1, 0, 1]))
    assert drain(on)[0] == [1, 3] and on.filtered == 1


def test_out_of_range_events_are_counted() -> None:
    codec = EdvsCodec(width=64, height=64, lock=1)
    codec.feed(event_bytes([1, 100, 2], [1, 1, 1], [0, 0, 0]))
    ids, errors, _ = drain(codec)
    assert ids == [2 * (64 + 1), 2 * (64 + 2)] and errors == ["id_out_of_range"]
    assert codec.out_of_range == 1
    small = EdvsCodec(neurons=10, lock=1)
    small.feed(event_bytes([1, 20], [0, 0], [0, 0]))
    assert drain(small)[:2] == ([2], ["id_out_of_range"])


def test_wrong_event_size_is_detected() -> None:
    # The device sends 2-byte events, the config says 4: the "timestamps" are event bytes.
    rng = np.random.default_rng(1)
    n = 2000
    data = event_bytes(rng.integers(0, 128, n), rng.integers(0, 128, n), rng.integers(0, 2, n))
    codec = EdvsCodec(evsize=4)
    codec.feed(data)
    _, errors, _ = drain(codec)
    assert codec.mismatch and "malformed" in errors


def test_wrong_sync_polarity_is_detected() -> None:
    rng = np.random.default_rng(2)
    n = 4 * CHECK_BYTES
    data = event_bytes(rng.integers(0, 128, n), rng.integers(0, 128, n), rng.integers(0, 2, n),
                       rng.integers(0, 1 << 16, n), evsize=4, sync=1)
    codec = EdvsCodec(evsize=4, sync=0)
    codec.feed(data)
    drain(codec)
    assert codec.mismatch


def test_greeting_and_commands_out() -> None:
    codec = EdvsCodec.from_options(0, {
        "evsize": "4", "biases": "1:200,0:1067", "init": "!M+", "commands": "0:!MV0=40;1:!MV0=0",
    })
    assert isinstance(codec, EdvsCodec)
    assert codec.greeting("in") == b"!U0\n!E2\n!B0=1067\n!B1=200\n!BF\n!M+\nE+\n"
    assert codec.greeting("out") == b"!U0\n!M+\n"
    compact = EdvsCodec(evsize=4, variant="compact")
    assert compact.command_lines("in")[1] == "!E1"
    assert codec.encode(SpikeFrame.of([1, 0, 1, 7])) == b"!MV0=40\n!MV0=0\n"
    assert codec.unmapped == 1
    with pytest.raises(ValueError):
        EdvsCodec().encode(SpikeFrame.of([0]))


@pytest.mark.parametrize(
    ("key", "value"),
    [("evsize", "3"), ("sync", "2"), ("variant", "x"), ("polarity", "up"), ("scale", "0"),
     ("biases", "1=3"), ("commands", "0:bad\x01"), ("width", "200")],
)
def test_bad_options(key: str, value: str) -> None:
    with pytest.raises(ValueError):
        EdvsCodec.from_options(0, {key: value})


@settings(max_examples=150, deadline=None)
@given(
    events=st.lists(st.tuples(st.integers(0, 127), st.integers(0, 127), st.integers(0, 1)),
                    min_size=8, max_size=300),
    evsize=st.sampled_from([2, 4, 5, 6]),
    sync=st.sampled_from([0, 1]),
    cuts=st.lists(st.integers(1, 50), min_size=1, max_size=10),
)
def test_round_trip_any_chunking(
    events: list[tuple[int, int, int]], evsize: int, sync: int, cuts: list[int]
) -> None:
    x, y, p = (list(c) for c in zip(*events, strict=True))
    ts = list(range(0, 7 * len(x), 7))
    data = event_bytes(x, y, p, ts if evsize > 2 else None, evsize=evsize, sync=sync)
    codec = EdvsCodec(evsize=evsize, sync=sync)
    got: list[int] = []
    got_ts: list[int] = []
    pos = k = 0
    while pos < len(data):
        step = cuts[k % len(cuts)]
        codec.feed(data[pos:pos + step])
        pos, k = pos + step, k + 1
        ids, errors, t = drain(codec)
        assert errors == []
        got += ids
        got_ts += t
    assert got == [2 * (yy * 128 + xx) + pp for xx, yy, pp in events]
    if evsize > 2:
        assert got_ts == ts


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=5000), st.sampled_from([2, 4, 5, 6]), st.sampled_from([0, 1]))
def test_fuzz_only_decode_errors(data: bytes, evsize: int, sync: int) -> None:
    codec = EdvsCodec(neurons=1000, evsize=evsize, sync=sync, polarity="on")
    for i in range(0, len(data), 700):
        codec.feed(data[i:i + 700], now_ns=i * 1000)
        drain(codec)  # anything but DecodeError propagates and fails the test
    assert codec.buffered() < 700 + 8 * evsize + 200


@pytest.mark.slow
@pytest.mark.timeout(900)  # 20,000 examples: about 60 s alone, far more on a busy machine
@settings(max_examples=20_000, deadline=None)
@given(st.binary(max_size=6000), st.sampled_from([2, 4, 5, 6]), st.sampled_from([0, 1]),
       st.integers(1, 900), st.sampled_from(["both", "merge", "on"]), st.integers(1, 8))
def test_fuzz_long(data: bytes, evsize: int, sync: int, chunk: int, polarity: str,
                   scale: int) -> None:
    codec = EdvsCodec(neurons=5000, evsize=evsize, sync=sync, polarity=polarity, scale=scale)
    for i in range(0, len(data), chunk):
        codec.feed(data[i:i + chunk], now_ns=i * 10_000)
        drain(codec)
    assert codec.buffered() < chunk + 8 * evsize + 200


def test_idle_gap_wraps_survive_a_late_read_before_the_gap() -> None:
    # A loaded host reads the burst before the gap 45 ms late and the one after it on time:
    # the arrival times understate the gap by more than half a wrap period (32.8 ms). Bytes
    # never arrive before they are stamped, so the wraps still come out right.
    period = 1 << 16
    codec = EdvsCodec(evsize=4, lock=2)
    codec.feed(event_bytes([1, 1], [1, 1], [0, 0], [1000, 1100], evsize=4), now_ns=1_200_000)
    drain(codec)
    codec.feed(event_bytes([1], [1], [0], [2000], evsize=4), now_ns=2_000_000 + 45_000_000)
    assert drain(codec)[2] == [2000]
    t_dev = 2000 + 300_000  # 300 ms idle, then a burst read at once
    codec.feed(event_bytes([1], [1], [0], [t_dev % period], evsize=4),
               now_ns=(t_dev + 200) * 1000)
    assert drain(codec)[2] == [t_dev]
    # ... and a burst read 50 ms late after the next gap.
    t_dev2 = t_dev + 250_000
    codec.feed(event_bytes([1], [1], [0], [t_dev2 % period], evsize=4),
               now_ns=(t_dev2 + 50_000) * 1000)
    assert drain(codec)[2] == [t_dev2]
