"""Reading and writing .sbr files: the file I/O around the sans-IO codec in record.format.

The writer only appends whole records and never rewrites what it wrote, so a file cut off at any
byte reads back up to its last complete record. The reader never raises on damage after the
header: it skips and reports (``ReadReport``). Nothing here may run on the real-time loop thread.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import numpy.typing as npt

from bridge.record.format import (
    EndRecord,
    GapRecord,
    Header,
    Record,
    RecordDecoder,
    RecordingError,
    SpikeRecord,
    decode_header,
    encode_header,
)

CHUNK = 1 << 20


class SbrWriter:
    """One .sbr file: the header is written and flushed at open, records are appended."""

    def __init__(
        self, path: str | os.PathLike[str], header: Header, *, exclusive: bool = True
    ) -> None:
        self.path = Path(path)
        self.header = header
        # "xb" refuses to overwrite: a recording is evidence and is never silently replaced.
        self._fh: BinaryIO | None = open(self.path, "xb" if exclusive else "wb")  # noqa: SIM115
        try:
            self._fh.write(encode_header(header))
            self._fh.flush()
        except BaseException:
            self._fh.close()
            raise
        self.bytes_written = self._fh.tell()

    def write(self, data: bytes | bytearray) -> None:
        """Append encoded records (whole records only)."""
        if self._fh is None:
            raise ValueError(f"{self.path} is closed")
        self._fh.write(data)
        self.bytes_written += len(data)

    def flush(self, sync: bool = False) -> None:
        """Hand buffered bytes to the kernel; with ``sync`` also wait for the disk (fsync)."""
        if self._fh is None:
            return
        self._fh.flush()
        if sync:
            os.fsync(self._fh.fileno())

    def close(self) -> None:
        """Flush, fsync and close; idempotent."""
        if self._fh is None:
            return
        fh, self._fh = self._fh, None
        try:
            fh.flush()
            os.fsync(fh.fileno())
        finally:
            fh.close()

    @property
    def closed(self) -> bool:
        """True once ``close`` has run."""
        return self._fh is None


@dataclass
class ReadReport:
    """How a file read went: what was found, what was damaged, whether it was closed cleanly."""

    records: int = 0
    skipped_bytes: int = 0
    damaged: int = 0
    truncated_bytes: int = 0
    unknown: int = 0
    complete: bool = False  # an end record was read: the writer closed the file

    def problems(self) -> str:
        """One human line about damage or truncation; empty when the file is sound."""
        parts = []
        if self.truncated_bytes:
            parts.append(
                f"cut off: the last {self.truncated_bytes} bytes hold an incomplete record"
            )
        if self.damaged:
            parts.append(f"{self.damaged} damaged stretch(es), {self.skipped_bytes} bytes skipped")
        if self.unknown:
            parts.append(f"{self.unknown} record(s) of unknown kind skipped")
        if not self.complete and not self.truncated_bytes:
            parts.append("no end record (the writer did not close the file)")
        return "; ".join(parts)


class SbrReader:
    """Iterate the records of one .sbr file; RecordingError only when the header is unusable."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.report = ReadReport()
        self._decoder = RecordDecoder()
        with open(self.path, "rb") as fh:
            data = fh.read(CHUNK)
            while True:
                parsed = decode_header(data)
                if parsed is not None:
                    break
                more = fh.read(CHUNK)
                if not more:
                    raise RecordingError(
                        f"{self.path}: the header is incomplete ({len(data)} bytes): the file "
                        "was cut off before its first record"
                    )
                data += more
        self.header, self._data_start = parsed

    def __iter__(self) -> Iterator[Record]:
        dec = self._decoder = RecordDecoder()
        self.report = ReadReport()
        with open(self.path, "rb") as fh:
            fh.seek(self._data_start)
            while True:
                chunk = fh.read(CHUNK)
                if chunk:
                    dec.feed(chunk)
                else:
                    dec.close()
                while True:
                    rec = dec.next_record()
                    if rec is None:
                        break
                    if isinstance(rec, EndRecord):
                        self.report.complete = True
                    yield rec
                if not chunk:
                    break
        self.report.records = dec.records
        self.report.skipped_bytes = dec.skipped_bytes
        self.report.damaged = dec.damaged
        self.report.truncated_bytes = dec.truncated_bytes
        self.report.unknown = dec.unknown

    def spikes(self) -> Iterator[SpikeRecord]:
        """Only the spike records."""
        for rec in self:
            if isinstance(rec, SpikeRecord):
                yield rec


def read_header(path: str | os.PathLike[str]) -> Header:
    """The header of ``path``; RecordingError when it is not a readable recording."""
    return SbrReader(path).header


def segment_offsets_ns(headers: Sequence[Header]) -> list[int]:
    """Per-file time offsets that put the records of several files on the first one's time base.

    Segments of one run share a monotonic clock; files of different runs are aligned by wall time.
    """
    if not headers:
        return []
    first = headers[0]
    same_run = bool(first.run) and all(h.run == first.run for h in headers)
    if same_run:
        return [h.start_mono_ns - first.start_mono_ns for h in headers]
    return [h.start_wall_ns - first.start_wall_ns for h in headers]


def order_segments(readers: list[SbrReader]) -> list[SbrReader]:
    """Segments of one run sorted by segment number; files of different runs as given."""
    runs = {r.header.run for r in readers}
    if len(runs) == 1 and "" not in runs:
        return sorted(readers, key=lambda r: r.header.segment)
    return readers


@dataclass
class SpikeTable:
    """A recording flattened to arrays, one row per spike (for plots and conversion)."""

    header: Header
    t_ns: npt.NDArray[np.int64]        # receive time on the first file's time base
    endpoint: npt.NDArray[np.uint16]
    source: npt.NDArray[np.uint32]
    seq: npt.NDArray[np.int64]         # -1 where the frame had none
    ids: npt.NDArray[np.uint32]
    frame: npt.NDArray[np.int64]       # index of the frame each spike came in
    frames: int
    gaps: list[GapRecord]
    reports: list[ReadReport]
    paths: list[Path]  # the files read, in time order (as ``reports``)

    @property
    def duration_ns(self) -> int:
        """From time 0 (the recording start) to the last spike."""
        return int(self.t_ns.max()) if len(self.t_ns) else 0


def load_table(paths: Sequence[str | os.PathLike[str]]) -> SpikeTable:
    """Read one recording (or the rotated segments of one, in order) into a SpikeTable."""
    if not paths:
        raise ValueError("no files given")
    readers = order_segments([SbrReader(p) for p in paths])
    headers = [r.header for r in readers]
    names = [ep.name for ep in headers[0].endpoints]
    for r in readers[1:]:
        if [ep.name for ep in r.header.endpoints] != names:
            raise RecordingError(f"{r.path} records other endpoints than {readers[0].path}")
    offsets = segment_offsets_ns(headers)
    t_parts: list[npt.NDArray[np.int64]] = []
    ep_parts, src_parts, seq_parts, id_parts, frame_parts = [], [], [], [], []
    frame_no = 0
    gaps: list[GapRecord] = []
    for reader, off in zip(readers, offsets, strict=True):
        for rec in reader:
            if isinstance(rec, GapRecord):
                gaps.append(GapRecord(rec.t_ns + off, rec.reason, rec.frames, rec.spikes))
                continue
            if not isinstance(rec, SpikeRecord):
                continue
            n = len(rec.frame.ids)
            if n:
                t_parts.append(np.full(n, rec.t_ns + off, dtype=np.int64))
                ep_parts.append(np.full(n, rec.endpoint, dtype=np.uint16))
                src_parts.append(np.full(n, rec.frame.source, dtype=np.uint32))
                seq_parts.append(np.full(n, rec.frame.seq, dtype=np.int64))
                id_parts.append(rec.frame.ids)
                frame_parts.append(np.full(n, frame_no, dtype=np.int64))
            frame_no += 1

    def cat(parts: list[np.ndarray], dtype: type) -> np.ndarray:
        return np.concatenate(parts).astype(dtype, copy=False) if parts else np.empty(0, dtype)

    return SpikeTable(
        header=headers[0],
        t_ns=cat(t_parts, np.int64),
        endpoint=cat(ep_parts, np.uint16),
        source=cat(src_parts, np.uint32),
        seq=cat(seq_parts, np.int64),
        ids=cat(id_parts, np.uint32),
        frame=cat(frame_parts, np.int64),
        frames=frame_no,
        gaps=gaps,
        reports=[r.report for r in readers],
        paths=[r.path for r in readers],
    )
