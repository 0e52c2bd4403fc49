"""The board stream codec: golden vectors, resync, counted errors, round trips and fuzz."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.codecs.board import (
    ACK_OK,
    CMD_START,
    FLAG_OVERFLOW,
    FLAG_RESET,
    MAX_ENCODED,
    MAX_SPIKES,
    BoardAck,
    BoardCodec,
    BoardCommand,
    BoardHeartbeat,
    cobs_decode,
    cobs_encode,
    crc16,
)
from bridge.errors import DecodeError
from bridge.frame import SpikeFrame

# Spike frame: seq 1, t0 0x01020304 µs, spikes (addr 1, dt 0) and (addr 7, dt 5).
GOLDEN_SPIKES = bytes.fromhex("00 02 10 02 01 06 04 03 02 01 01 01 01 02 07 02 05 03 ed 9b 00")
GOLDEN_START = bytes.fromhex("00 02 11 01 01 01 01 01 01 04 02 ed 80 00")  # command 0x02, seq 0


def reference_crc(data: bytes) -> int:
    """Bit-by-bit CRC-16/CCITT-FALSE, independent of binascii."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def drain(codec: BoardCodec) -> tuple[list[SpikeFrame], list[str]]:
    """All frames and the reasons of all errors currently decodable."""
    frames, errors = [], []
    while True:
        try:
            frame = codec.next_frame()
        except DecodeError as exc:
            errors.append(exc.reason)
            continue
        if frame is None:
            return frames, errors
        frames.append(frame)


def test_crc_is_ccitt_false() -> None:
    assert crc16(b"123456789") == 0x29B1 == reference_crc(b"123456789")


@pytest.mark.parametrize(
    ("raw", "encoded"),
    [
        ("00", "01 01"),
        ("00 00", "01 01 01"),
        ("11 22 00 33", "03 11 22 02 33"),
        ("11 22 33 44", "05 11 22 33 44"),
        ("11 00 00 00", "02 11 01 01 01"),
    ],
)
def test_cobs_reference_vectors(raw: str, encoded: str) -> None:
    assert cobs_encode(bytes.fromhex(raw)) == bytes.fromhex(encoded)
    assert cobs_decode(bytes.fromhex(encoded)) == bytes.fromhex(raw)


def test_cobs_full_blocks() -> None:
    data = bytes(range(1, 255))  # 254 non-zero bytes: one full block, nothing after it
    assert cobs_encode(data) == b"\xff" + data
    data2 = b"\x00" + data
    assert cobs_encode(data2) == b"\x01\xff" + data
    assert cobs_decode(cobs_encode(data2)) == data2


def test_golden_spike_frame_decodes() -> None:
    codec = BoardCodec()
    codec.feed(GOLDEN_SPIKES)
    frame = codec.next_frame()
    assert frame == SpikeFrame.of([1, 7], seq=1)
    assert codec.last_t0_us == 0x01020304
    assert codec.last_dt_us.tolist() == [0, 5]
    raw = cobs_decode(GOLDEN_SPIKES[1:-1])
    assert int.from_bytes(raw[-2:], "little") == reference_crc(raw[:-2])
    assert codec.next_frame() is None


def test_golden_vectors_encode() -> None:
    codec = BoardCodec()
    assert codec.encode_spikes(np.array([1, 7]), np.array([0, 5]), t0_us=0x01020304,
                               seq=1) == GOLDEN_SPIKES
    assert codec.tx_seq == 2
    assert BoardCodec().encode_command(CMD_START) == GOLDEN_START


def test_control_frames_are_demultiplexed() -> None:
    tx, rx = BoardCodec(), BoardCodec()
    rx.feed(tx.encode_command(CMD_START, b"\x01"))
    rx.feed(tx.encode_spikes(np.array([3])))
    rx.feed(tx.encode_ack(0, CMD_START, ACK_OK, t0_us=9))
    rx.feed(tx.encode_heartbeat(10, 2, 1, t0_us=77))
    frames, errors = drain(rx)
    assert errors == []
    assert [f.ids.tolist() for f in frames] == [[3]]
    assert rx.next_control() == BoardCommand(0, 0, 0, CMD_START, b"\x01")
    assert rx.next_control() == BoardAck(1, 0, 9, 0, CMD_START, ACK_OK)
    assert rx.next_control() == BoardHeartbeat(2, 0, 77, 10, 2, 1)
    assert rx.next_control() is None
    assert rx.control_lost == 0 and rx.controls == 3


def test_resync_after_noise_and_split_feeds() -> None:
    tx, rx = BoardCodec(), BoardCodec()
    stream = (b"\x13\x37garbage" + tx.encode_spikes(np.array([1, 2])) + b"\xff\xfe\x01"
              + tx.encode_spikes(np.array([5])))
    for i in range(len(stream)):  # one byte at a time
        rx.feed(stream[i:i + 1])
    frames, errors = drain(rx)
    assert [f.ids.tolist() for f in frames] == [[1, 2], [5]]
    # Each noise run is one counted drop; either reason is a correct verdict for noise.
    assert len(errors) == 2 and set(errors) <= {"bad_cobs", "bad_crc", "truncated"}
    assert rx.lost == 0


def test_bad_crc_is_counted_and_next_frame_survives() -> None:
    tx, rx = BoardCodec(), BoardCodec()
    first = tx.encode_spikes(np.array([1]))
    bad = bytearray(tx.encode_spikes(np.array([8, 9])))
    assert bad[10] == 8
    bad[10] ^= 0x40  # the address byte 0x08: data, not a COBS code byte
    good = tx.encode_spikes(np.array([4, 5, 6]))
    rx.feed(first + bytes(bad) + good)
    frames, errors = drain(rx)
    assert errors == ["bad_crc"] and rx.crc_errors == 1
    assert [f.ids.tolist() for f in frames] == [[1], [4, 5, 6]]
    # The dropped frame leaves a gap in the sequence that is seen and counted as well.
    assert [f.seq for f in frames] == [0, 2] and rx.lost == 1


def test_bad_cobs_is_counted() -> None:
    rx = BoardCodec()
    rx.feed(b"\x00\x09\x01\x02\x00")  # block claims 8 bytes, 2 follow
    _, errors = drain(rx)
    assert errors == ["bad_cobs"] and rx.cobs_errors == 1


def test_oversized_run_is_one_drop() -> None:
    tx, rx = BoardCodec(), BoardCodec()
    rx.feed(b"\x00" + b"\x01" * (MAX_ENCODED + 10))
    _, errors = drain(rx)
    assert errors == ["oversized"]
    rx.feed(b"\x01" * 5000)  # still the same unterminated frame: not counted again
    assert drain(rx) == ([], [])
    rx.feed(tx.encode_spikes(np.array([42])))
    frames, errors = drain(rx)
    assert [f.ids.tolist() for f in frames] == [[42]] and errors == []
    assert rx.oversized == 1
    assert rx.buffered() < 16


def test_sequence_gaps_wrap_and_restart() -> None:
    tx, rx = BoardCodec(), BoardCodec()
    for seq in (65533, 65534, 1, 2):  # 65535 and 0 are lost across the wrap
        rx.feed(tx.encode_spikes(np.array([1]), seq=seq))
    frames, _ = drain(rx)
    assert [f.seq for f in frames] == [65533, 65534, 65537, 65538]
    assert rx.lost == 2
    tx.tx_flags = FLAG_RESET
    rx.feed(tx.encode_spikes(np.array([1]), seq=0))  # the board restarted
    rx.feed(tx.encode_spikes(np.array([1]), seq=1))
    frames, _ = drain(rx)
    assert [f.seq for f in frames] == [65539, 65540]
    assert rx.restarts == 1 and rx.lost == 2


def test_restart_without_flag_is_not_counted_as_loss() -> None:
    tx, rx = BoardCodec(), BoardCodec()
    for seq in (5000, 5001, 0, 1):  # FLAG_RESET frame lost: seq steps back
        rx.feed(tx.encode_spikes(np.array([1]), seq=seq))
    frames, _ = drain(rx)
    assert [f.seq for f in frames] == [5000, 5001, 5002, 5003]
    assert rx.lost == 0 and rx.restarts == 1


def test_overflow_flag_is_counted() -> None:
    tx, rx = BoardCodec(), BoardCodec()
    tx.tx_flags = FLAG_OVERFLOW
    rx.feed(tx.encode_spikes(np.array([1])))
    drain(rx)
    assert rx.overflow_flags == 1


def test_ids_out_of_range() -> None:
    tx, rx = BoardCodec(), BoardCodec(neurons=10)
    rx.feed(tx.encode_spikes(np.array([3, 10])) + tx.encode_spikes(np.array([9])))
    frames, errors = drain(rx)
    assert errors == ["id_out_of_range"]
    assert [f.ids.tolist() for f in frames] == [[9]]
    with pytest.raises(ValueError):
        BoardCodec(neurons=10).encode(SpikeFrame.of([10]))
    with pytest.raises(ValueError):
        BoardCodec().encode(SpikeFrame.of([70000]))


def test_encode_splits_long_frames_and_advances_seq() -> None:
    tx, rx = BoardCodec(), BoardCodec()
    ids = np.arange(MAX_SPIKES * 2 + 3, dtype=np.uint32)
    tx.tx_seq = 10
    rx.feed(tx.encode(SpikeFrame.of(ids, seq=999)))  # the caller's seq is not used
    frames, errors = drain(rx)
    assert errors == [] and [f.seq for f in frames] == [10, 11, 12]
    assert np.array_equal(np.concatenate([f.ids for f in frames]), ids)
    assert tx.tx_seq == 13


def test_unknown_version_and_type() -> None:
    rx = BoardCodec()
    for head in (b"\x20\x00", b"\x1f\x00"):
        raw = head + b"\x00\x00" + b"\x00" * 4
        raw += crc16(raw).to_bytes(2, "little")
        rx.feed(b"\x00" + cobs_encode(raw) + b"\x00")
    assert drain(rx)[1] == ["bad_version", "malformed"]


def test_greeting_starts_inputs_only() -> None:
    assert BoardCodec().greeting("in") == GOLDEN_START
    assert BoardCodec().greeting("out") == b""
    assert BoardCodec.from_options(0, {"start": "0"}).greeting("in") == b""
    with pytest.raises(KeyError):
        BoardCodec.from_options(0, {"nope": "1"})
    with pytest.raises(ValueError, match="no auth"):
        BoardCodec.from_options(0, {}, keys=(b"k" * 16,))


def test_control_queue_is_bounded() -> None:
    tx, rx = BoardCodec(), BoardCodec()
    rx.feed(b"".join(tx.encode_heartbeat(i, 0, 0) for i in range(300)))
    drain(rx)
    assert rx.controls == 300 and rx.controls_dropped == 300 - 256
    assert rx.next_control() == BoardHeartbeat(44, 0, 0, 44, 0, 0)


@settings(max_examples=200, deadline=None)
@given(
    frames=st.lists(st.lists(st.integers(0, 0xFFFF), max_size=600), min_size=1, max_size=6),
    cuts=st.lists(st.integers(1, 64), min_size=1, max_size=20),
)
def test_round_trip_any_chunking(frames: list[list[int]], cuts: list[int]) -> None:
    tx, rx = BoardCodec(), BoardCodec()
    stream = b"".join(tx.encode(SpikeFrame.of(ids)) for ids in frames)
    pos, k, got = 0, 0, []
    while pos < len(stream):
        step = cuts[k % len(cuts)]
        rx.feed(stream[pos:pos + step])
        pos, k = pos + step, k + 1
        batch, errors = drain(rx)
        assert errors == []
        got += batch
    flat = [i for ids in frames for i in ids]
    assert np.concatenate([f.ids for f in got]).tolist() == flat
    assert rx.lost == 0


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000))
def test_fuzz_only_decode_errors(data: bytes) -> None:
    rx = BoardCodec(neurons=100)
    rx.feed(data)
    drain(rx)  # anything but DecodeError propagates and fails the test
    assert rx.buffered() <= MAX_ENCODED + 1


@settings(max_examples=150, deadline=None, derandomize=True)
@given(
    ids=st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=50),
    flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 7)), max_size=4),
)
def test_corruption_never_yields_a_wrong_frame_silently(
    ids: list[int], flips: list[tuple[int, int]]
) -> None:
    tx, rx = BoardCodec(), BoardCodec()
    data = bytearray(tx.encode(SpikeFrame.of(ids)))
    good = tx.encode(SpikeFrame.of(ids))
    data += good
    first_len = len(data) - len(good)
    for pos, bit in flips:
        data[pos % first_len] ^= 1 << bit
    rx.feed(bytes(data))
    frames, errors = drain(rx)
    # The trailing good frame always survives; the corrupted one is either intact or counted.
    assert frames[-1].ids.tolist() == ids and frames[-1].seq == 1
    assert all(f.ids.tolist() == ids for f in frames)
    assert len(frames) - 1 + len(errors) >= 1


@settings(max_examples=100, deadline=None, derandomize=True)
@given(
    frames=st.lists(st.lists(st.integers(0, 0xFFFF), max_size=40), min_size=1, max_size=8),
    noise=st.lists(st.binary(max_size=60), min_size=9, max_size=9),
)
def test_noise_between_frames_never_costs_a_frame(
    frames: list[list[int]], noise: list[bytes]
) -> None:
    tx, rx = BoardCodec(), BoardCodec()
    stream = b"".join(noise[i] + tx.encode(SpikeFrame.of(ids)) for i, ids in enumerate(frames))
    rx.feed(stream + noise[-1])
    got, errors = drain(rx)
    # Every frame starts with its own delimiter, so noise before it ends there: all frames
    # arrive, in order; the noise is counted, never delivered (a CRC collision would show).
    assert [f.ids.tolist() for f in got] == frames
    assert len(errors) <= sum(n.count(0) + 1 for n in noise)


@pytest.mark.slow
@pytest.mark.timeout(900)  # 20,000 examples: about 60 s alone, far more on a busy machine
@settings(max_examples=20_000, deadline=None)
@given(st.binary(max_size=5000), st.integers(1, 600))
def test_fuzz_long(data: bytes, chunk: int) -> None:
    rx = BoardCodec(neurons=1000)
    for i in range(0, len(data), chunk):
        rx.feed(data[i:i + chunk])
        drain(rx)
    assert rx.buffered() <= MAX_ENCODED + 1
