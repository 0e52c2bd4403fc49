"""The ``cobs`` package the board codec uses makes the same bytes as the hand-written COBS."""

from __future__ import annotations

import numpy as np
import pytest
from cobs import cobs
from hypothesis import given
from hypothesis import strategies as st

from bridge.bench.cobs_py import PyCobsBoardCodec
from bridge.bench.cobs_py import cobs_decode as py_decode
from bridge.bench.cobs_py import cobs_encode as py_encode
from bridge.bench.serial import cobs_ratios
from bridge.codecs.board import BoardCodec, cobs_decode, cobs_encode
from bridge.errors import DecodeError
from bridge.frame import SpikeFrame

# Runs of zeros and of non-zero bytes around the 254-byte block length are where COBS
# implementations differ, so the strategy builds data from such runs.
runs = st.lists(
    st.one_of(st.binary(max_size=600),
              st.integers(0, 600).map(lambda n: b"\x00" * n),
              st.integers(250, 520).map(lambda n: b"\x07" * n)),
    max_size=4,
).map(b"".join)


@given(runs)
def test_the_package_and_the_hand_written_cobs_agree(data: bytes) -> None:
    encoded = cobs.encode(data)
    assert py_encode(data) == encoded
    assert cobs_encode(data) == encoded
    assert py_decode(encoded) == data and cobs.decode(encoded) == data
    assert cobs_decode(bytearray(encoded)) == data
    assert cobs_decode(memoryview(encoded)) == data


@pytest.mark.parametrize("n", [253, 254, 255, 507, 508, 509])
def test_block_boundaries(n: int) -> None:
    for data in (b"\x01" * n, b"\x00" + b"\x01" * n, b"\x01" * n + b"\x00"):
        assert cobs.encode(data) == py_encode(data)
        assert cobs_decode(py_encode(data)) == data


@given(st.binary(max_size=300))
def test_bad_segments_are_bad_cobs_for_both(data: bytes) -> None:
    def outcome(fn):  # type: ignore[no-untyped-def]
        try:
            return fn(data)
        except DecodeError as exc:
            assert exc.reason == "bad_cobs"
            return "bad_cobs"

    assert outcome(cobs_decode) == outcome(py_decode)


def test_the_codec_frames_are_identical_and_cross_decode() -> None:
    rng = np.random.default_rng(3)
    ours, reference = BoardCodec(65536), PyCobsBoardCodec(65536)
    for size in (0, 1, 16, 63, 64, 200, 256, 600):
        frame = SpikeFrame.of(rng.integers(0, 65536, size))
        wire = ours.encode(frame)
        assert wire == reference.encode(frame)
        for rx in (BoardCodec(65536), PyCobsBoardCodec(65536)):
            rx.feed(wire)
            got = []
            while (f := rx.next_frame()) is not None:
                got.extend(f.ids.tolist())
            assert got == frame.ids.tolist()


def test_the_codec_uses_the_package() -> None:
    assert BoardCodec._stuff is cobs_encode and BoardCodec._unstuff is cobs_decode
    assert cobs_encode.__module__ == "bridge.codecs.board"


def test_bench_ratio_pairs_cases() -> None:
    rows = [{"case": "a", "cobs": "cobs", "events_per_s": 3.0},
            {"case": "a", "cobs": "python", "events_per_s": 1.5},
            {"case": "edvs", "events_per_s": 9.0}]
    assert cobs_ratios(rows) == [("a", 2.0)]
