"""The .sbr codec: header and record round trips, damage, truncation at every byte."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.frame import NO_SEQ, SpikeFrame
from bridge.record.format import (
    KIND_SPIKES,
    MAGIC,
    EndpointInfo,
    EndRecord,
    GapRecord,
    Header,
    RecordDecoder,
    RecordingError,
    SpikeRecord,
    _seal,
    decode_header,
    encode_end,
    encode_gap,
    encode_header,
    encode_record,
    encode_spikes,
)

HEADER = Header(
    endpoints=(
        EndpointInfo("in0", "udp://127.0.0.1:5000?format=native", "in", "native", 100),
        EndpointInfo("out0", "udp://127.0.0.1:5001", "out", "legacy", 64, offset=10),
    ),
    start_wall_ns=1_700_000_000_123_456_789,
    start_mono_ns=42_000_000,
    node=7,
    segment=3,
    run="abc",
    software="spikebridge test",
    extra={"note": "räsonnieren"},
)


def spikes(t: int, ep: int, ids: list[int], source: int = 1, seq: int = NO_SEQ,
           t_sent: int = 0) -> SpikeRecord:
    return SpikeRecord(t, ep, SpikeFrame(source, seq, t_sent, np.array(ids, dtype=np.uint32)))


def decode_all(data: bytes, chunk: int = 0) -> tuple[list[object], RecordDecoder]:
    dec = RecordDecoder()
    out: list[object] = []
    step = chunk or max(len(data), 1)
    for i in range(0, len(data), step):
        dec.feed(data[i : i + step])
        while (rec := dec.next_record()) is not None:
            out.append(rec)
    dec.close()
    while (rec := dec.next_record()) is not None:
        out.append(rec)
    return out, dec


SAMPLE = [
    spikes(0, 0, []),
    spikes(1_000, 0, [1, 2, 3], source=3, seq=0),
    spikes(2_000, 1, [70_000, 5], source=65535, seq=2**40, t_sent=1_700_000_000_000_000_000),
    spikes(-5, 1, [0xFFFFFFFF], source=2**32 - 1),
    GapRecord(3_000, "overflow", 4, 17),
    EndRecord(4_000, 4, 8, 4, 17),
]
SAMPLE_BYTES = b"".join(encode_record(r) for r in SAMPLE)


def test_header_round_trip() -> None:
    data = encode_header(HEADER)
    assert data.startswith(MAGIC)
    parsed = decode_header(data + b"tail")
    assert parsed is not None
    header, size = parsed
    assert size == len(data)
    assert header == HEADER
    assert header.endpoint_index("out0") == 1


def test_header_needs_more_data_until_complete() -> None:
    data = encode_header(HEADER)
    for cut in range(len(data)):
        assert decode_header(data[:cut]) is None


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda d: b"GIF89a.." + d[8:], "bad magic"),
        (lambda d: d[:8] + b"\x02\x00" + d[10:], "version 2"),
        (lambda d: d[:-6] + bytes([d[-6] ^ 1]) + d[-5:], "checksum"),
    ],
)
def test_bad_headers_are_named(mangle: object, message: str) -> None:
    data = mangle(encode_header(HEADER))  # type: ignore[operator]
    with pytest.raises(RecordingError, match=message):
        decode_header(data)


def test_text_file_is_refused_early() -> None:
    with pytest.raises(RecordingError, match="bad magic"):
        decode_header(b"t_ns,")


def test_records_round_trip() -> None:
    got, dec = decode_all(SAMPLE_BYTES)
    assert got == SAMPLE
    assert (dec.records, dec.skipped_bytes, dec.truncated_bytes, dec.damaged) == (6, 0, 0, 0)


def test_ids_use_u16_when_they_fit() -> None:
    small = encode_spikes(0, 0, 1, NO_SEQ, 0, np.arange(100, dtype=np.uint32))
    large = encode_spikes(0, 0, 1, NO_SEQ, 0, np.arange(100, dtype=np.uint32) + 65_500)
    assert len(large) - len(small) == 200
    assert len(small) == 8 + 13 + 200 + 4  # prefix, t/source/flags, ids, crc


def test_byte_at_a_time_gives_the_same_records() -> None:
    got, dec = decode_all(SAMPLE_BYTES, chunk=1)
    assert got == SAMPLE
    assert dec.truncated_bytes == 0


def test_truncation_at_every_byte_reads_every_complete_record() -> None:
    ends = np.cumsum([len(encode_record(r)) for r in SAMPLE]).tolist()
    for cut in range(len(SAMPLE_BYTES) + 1):
        got, dec = decode_all(SAMPLE_BYTES[:cut])
        whole = sum(1 for e in ends if e <= cut)
        assert got == SAMPLE[:whole], cut
        assert dec.truncated_bytes == cut - (ends[whole - 1] if whole else 0), cut
        assert dec.skipped_bytes == 0, cut


def test_damaged_record_is_skipped_and_the_rest_recovered() -> None:
    first = len(encode_record(SAMPLE[0]))
    data = bytearray(SAMPLE_BYTES)
    data[first + 12] ^= 0x40  # inside the second record's body
    got, dec = decode_all(bytes(data))
    assert got == [SAMPLE[0], *SAMPLE[2:]]
    assert dec.damaged == 1
    assert dec.skipped_bytes == len(encode_record(SAMPLE[1]))


def test_damaged_length_field_near_the_end_is_damage_not_truncation() -> None:
    # The length of record 4 says "more than the file holds"; a valid record follows it.
    offsets = np.cumsum([0] + [len(encode_record(r)) for r in SAMPLE]).tolist()
    data = bytearray(SAMPLE_BYTES)
    data[offsets[4] + 4 : offsets[4] + 8] = (10_000).to_bytes(4, "little")
    got, dec = decode_all(bytes(data))
    assert got == [*SAMPLE[:4], SAMPLE[5]]
    assert dec.truncated_bytes == 0
    assert dec.damaged == 1


def test_zero_filled_tail_after_power_loss_is_reported() -> None:
    got, dec = decode_all(SAMPLE_BYTES + bytes(4096))
    assert got == SAMPLE
    assert dec.skipped_bytes == 4096
    assert dec.damaged == 1


def test_garbage_between_records_is_skipped() -> None:
    junk = bytes([0xA5, 0x01, 0, 0, 8, 0, 0, 0, 1, 2, 3]) * 3 + b"\xa5"
    first = len(encode_record(SAMPLE[0]))
    got, dec = decode_all(SAMPLE_BYTES[:first] + junk + SAMPLE_BYTES[first:])
    assert got == SAMPLE
    assert dec.skipped_bytes == len(junk)


def test_unknown_record_kind_is_skipped_and_counted() -> None:
    data = encode_record(SAMPLE[0]) + _seal(99, 0, b"future") + encode_record(SAMPLE[1])
    got, dec = decode_all(data)
    assert got == SAMPLE[:2]
    assert dec.unknown == 1
    assert dec.damaged == 0


def test_checksummed_but_inconsistent_body_is_counted_as_damage() -> None:
    bad = _seal(KIND_SPIKES, 0, b"\x00" * 13 + b"\x01")  # odd number of id bytes for u16
    got, dec = decode_all(bad + encode_record(SAMPLE[1]))
    assert got == [SAMPLE[1]]
    assert dec.damaged == 1


def test_feed_after_close_is_misuse() -> None:
    dec = RecordDecoder()
    dec.close()
    with pytest.raises(ValueError):
        dec.feed(b"x")


@pytest.mark.parametrize(
    "call",
    [
        lambda: encode_spikes(0, 0xFFFF, 0, NO_SEQ, 0, np.zeros(1, np.uint32)),
        lambda: encode_spikes(0, 0, 0, -7, 0, np.zeros(1, np.uint32)),
        lambda: encode_gap(0, "nonsense", 1, 1),
    ],
)
def test_unstorable_values_are_refused(call: object) -> None:
    with pytest.raises(ValueError):
        call()  # type: ignore[operator]


def test_end_and_gap_encoders_match_record_objects() -> None:
    assert encode_end(1, 2, 3, 4, 5) == encode_record(EndRecord(1, 2, 3, 4, 5))
    assert encode_gap(1, "disk_full", 2, 3) == encode_record(GapRecord(1, "disk_full", 2, 3))


record_strategy = st.builds(
    spikes,
    t=st.integers(-(2**63), 2**63 - 1),
    ep=st.integers(0, 0xFFFE),
    ids=st.lists(st.integers(0, 2**32 - 1), max_size=40),
    source=st.integers(0, 2**32 - 1),
    seq=st.one_of(st.just(NO_SEQ), st.integers(0, 2**64 - 1)),
    t_sent=st.integers(-(2**63), 2**63 - 1),
)


@settings(max_examples=200, deadline=None)
@given(records=st.lists(record_strategy, max_size=8), chunk=st.integers(1, 64))
def test_any_records_round_trip_in_any_chunking(records: list[SpikeRecord], chunk: int) -> None:
    data = b"".join(encode_record(r) for r in records)
    got, dec = decode_all(data, chunk)
    assert got == records
    assert dec.skipped_bytes == dec.truncated_bytes == 0


@settings(max_examples=200, deadline=None)
@given(noise=st.binary(max_size=300), cut=st.integers(0, 400))
def test_arbitrary_bytes_never_raise(noise: bytes, cut: int) -> None:
    data = (SAMPLE_BYTES + noise + SAMPLE_BYTES)[: len(SAMPLE_BYTES) + cut]
    got, dec = decode_all(data, chunk=17)
    assert got[: len(SAMPLE)] == SAMPLE
    consumed = sum(len(encode_record(r)) for r in got)  # type: ignore[arg-type]
    assert consumed + dec.skipped_bytes + dec.truncated_bytes == len(data)


def test_golden_vectors_printed_in_the_wire_format_doc() -> None:
    from pathlib import Path

    doc_path = Path(__file__).parents[2] / "docs" / "wire-formats.md"
    doc = " ".join(doc_path.read_text(encoding="utf-8").split())
    vectors = [
        encode_spikes(1_000_000, 0, 3, 7, 0, np.array([1, 7], dtype=np.uint32)),
        encode_spikes(2_000_000, 1, 3, NO_SEQ, 1_700_000_000_000_000_000,
                      np.array([70000], dtype=np.uint32)),
        encode_gap(2_500_000, "overflow", 4, 12),
        encode_end(3_000_000, 2, 3, 4, 12),
    ]
    for v in vectors:
        assert v.hex(" ") in doc
    header = encode_header(Header(
        (EndpointInfo("in0", "udp://0.0.0.0:5000?format=native&neurons=100", "in", "native",
                      100),),
        start_wall_ns=1_700_000_000_000_000_000, start_mono_ns=5_000_000_000, node=1, run="r1",
        software="spikebridge 0.1.0",
    ))
    assert header[:16].hex(" ") in doc
    assert header[16:-4].decode() in doc
    assert header[-4:].hex(" ") in doc
