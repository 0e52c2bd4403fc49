"""Every decoder against its fuzz target: the kept corpus always, a million new inputs when slow.

The default run replays tests/corpus/<target>/ (inputs the fuzzer found interesting, and the
seeds) through the same contract checks the fuzzer applies. The slow run fuzzes each decoder
for 1,000,000 inputs times SPIKEBRIDGE_SLOW_BUDGET (CI sets 0.05), with atheris when it is
installed and the plain mutator otherwise.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import numpy as np
import pytest

from bridge.bench import fuzz
from bridge.codecs import CODECS, STREAM_CODECS
from bridge.frame import SpikeFrame


def budget() -> float:
    """The slow-test scale factor: 1.0 runs the full figures, CI sets 0.05."""
    return float(os.environ.get("SPIKEBRIDGE_SLOW_BUDGET", "1.0"))


def test_every_registered_decoder_has_a_target() -> None:
    assert set(CODECS) | set(STREAM_CODECS) | {"sbr"} <= set(fuzz.TARGETS)
    assert set(fuzz.TARGETS) == set(fuzz.BUILDERS) == set(fuzz.MAX_LEN)


@pytest.mark.parametrize("name", list(fuzz.TARGETS))
def test_the_kept_corpus_and_the_seeds_pass_the_checks(name: str) -> None:
    files = fuzz.corpus_files(name)
    assert files, f"tests/corpus/{name} is empty: run spikebridge bench fuzz --write-seeds"
    target = fuzz.build_target(name)
    for path in files:
        target(path.read_bytes())
    for data in fuzz.seed_inputs(name):
        target(data)


# -- the checks can fail -------------------------------------------------------------------------


def test_a_decoder_that_raises_something_else_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    from bridge.codecs.legacy import LegacyCodec

    target = fuzz.build_target("legacy")

    def broken(self: LegacyCodec, data: bytes) -> SpikeFrame:
        raise IndexError("oops")

    monkeypatch.setattr(LegacyCodec, "decode", broken)
    with pytest.raises(IndexError):
        target(bytes(9))


def test_an_id_outside_the_population_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    from bridge.codecs.native import NativeCodec

    target = fuzz.build_target("native")
    real = NativeCodec.decode

    def leaky(self: NativeCodec, data: bytes) -> SpikeFrame:
        frame = real(self, data)
        if self.neurons:
            frame.ids = np.append(frame.ids, np.uint32(self.neurons))
        return frame

    monkeypatch.setattr(NativeCodec, "decode", leaky)
    [data] = NativeCodec(0).encode(SpikeFrame.of([1, 2], seq=1))
    with pytest.raises(fuzz.ContractError, match=">= 1000"):
        target(data)


def test_peek_disagreeing_with_decode_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    from bridge.codecs.eieio import EieioCodec

    target = fuzz.build_target("eieio")

    def lax(self: EieioCodec, data: bytes) -> tuple[int, int, int, int]:
        return 0, -1, 0, 0

    monkeypatch.setattr(EieioCodec, "peek", lax)
    with pytest.raises(fuzz.ContractError, match="peek"):
        target(b"\x01\x00")  # too short for its one key: decode drops, the lax peek accepts


def test_a_stream_decoder_that_depends_on_chunking_is_caught(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from bridge.codecs.board import BoardCodec

    target = fuzz.build_target("board")
    real = BoardCodec.feed

    def forgetful(self: BoardCodec, data: bytes, now_ns: int | None = None) -> None:
        real(self, data[:-1] if len(data) > 1 and data[-1] == 0x01 else data)

    monkeypatch.setattr(BoardCodec, "feed", forgetful)
    stream = fuzz.seed_inputs("board")[0]
    data = bytes([1] * 8) + stream  # the first eight bytes set the chunk sizes: 2 bytes each
    with pytest.raises(fuzz.ContractError, match="chunking"):
        target(data)


def test_the_spif_reference_disagrees_with_a_wrong_layout(monkeypatch: pytest.MonkeyPatch) -> None:
    from bridge.codecs.spif import SpifCodec

    target = fuzz.build_target("spif")
    real = SpifCodec.decode

    def swapped(self: SpifCodec, data: bytes) -> SpikeFrame:
        frame = real(self, data)
        frame.ids = frame.ids[::-1].copy()
        return frame

    monkeypatch.setattr(SpifCodec, "decode", swapped)
    words = b"".join((0x80000000 | x << 16 | 1).to_bytes(4, "little") for x in (1, 2))
    with pytest.raises(fuzz.ContractError, match="spif"):
        target(words)


def test_the_mutate_engine_keeps_a_failing_input(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from bridge.codecs.legacy import LegacyCodec

    real = LegacyCodec.decode

    def broken(self: LegacyCodec, data: bytes) -> SpikeFrame:
        if len(data) > 20:
            raise RuntimeError("long input")
        return real(self, data)

    monkeypatch.setattr(LegacyCodec, "decode", broken)
    res = fuzz.run_mutate("legacy", 10_000, 0, tmp_path / "corpus" / "legacy",
                          tmp_path / "artifacts")
    assert not res.ok
    assert "long input" in res.detail
    [kept] = list((tmp_path / "artifacts").iterdir())
    assert len(kept.read_bytes()) > 20


def test_mutations_stay_within_the_length_limit() -> None:
    import random

    rng = random.Random(3)
    pool = [bytes(100), bytes(range(256))]
    lengths = {len(fuzz.mutate(rng.choice(pool), rng, pool, 64)) for _ in range(2000)}
    assert max(lengths) == 64
    assert min(lengths) < 10


# -- a finding -----------------------------------------------------------------------------------


def test_deeply_nested_header_metadata_is_a_recording_error() -> None:
    from bridge.record import format as sbr

    blob = b"[" * 5000 + b"]" * 5000
    head = sbr._HEAD.pack(sbr.MAGIC, sbr.VERSION, 0, len(blob)) + blob
    with pytest.raises(sbr.RecordingError):
        sbr.decode_header(head + sbr._CRC.pack(zlib.crc32(head)))


# -- the long runs -------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(0)
@pytest.mark.parametrize("name", list(fuzz.TARGETS))
def test_fuzz_a_million_inputs(name: str, tmp_path: Path) -> None:
    runs = max(1000, int(fuzz.FULL_RUNS * budget()))
    runner = fuzz.run_atheris if fuzz.have_atheris() else fuzz.run_mutate
    res = runner(name, runs, 0, fuzz.corpus_dir(name), tmp_path / "artifacts")
    print(f"{name}: {res.engine} {res.runs} inputs in {res.seconds:.1f} s {res.coverage}")
    assert res.ok, res.detail
    assert res.runs >= runs
