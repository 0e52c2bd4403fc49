"""The .sbr recording format, sans-IO: a header and records to bytes, and bytes back.

No file, socket or clock here: callers pass bytes and times in. A damaged or cut-off byte stream
never raises out of the record decoder; it skips to the next valid record, counts what it
skipped and reports a cut-off tail. Layout (all little-endian; docs/wire-formats.md):

    header := MAGIC(8) version:u16 flags:u16 meta_len:u32 meta:JSON(meta_len) crc32:u32
    record := 0xA5 kind:u8 endpoint:u16 body_len:u32 body(body_len) crc32:u32
    spikes body := t_ns:i64 source:u32 flags:u8 [seq:u64] [t_sent_ns:i64] ids:(u16|u32)*
    gap body    := t_ns:i64 reason:u8 frames:u64 spikes:u64
    end body    := t_ns:i64 frames:u64 spikes:u64 dropped_frames:u64 dropped_spikes:u64

Each record's CRC-32 covers its bytes from the sync byte to the end of the body.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from bridge.frame import NO_SEQ, IdArray, SpikeFrame

MAGIC = b"\x89SBR\r\n\x1a\n"  # PNG-style: catches text-mode mangling and 7-bit transfers
VERSION = 1
SYNC = 0xA5
KIND_SPIKES = 1
KIND_GAP = 2
KIND_END = 3
NO_ENDPOINT = 0xFFFF  # endpoint field of records that concern no single endpoint
MAX_META = 1 << 20
MAX_BODY = 1 << 26  # 16 Mi u32 ids: larger lengths are taken as damage, not data

FLAG_U32 = 0x01  # ids are u32 (else u16)
FLAG_SEQ = 0x02  # a u64 sequence number follows
FLAG_SENT = 0x04  # the sender's i64 send time follows
_KNOWN_FLAGS = FLAG_U32 | FLAG_SEQ | FLAG_SENT

GAP_REASONS: tuple[str, ...] = ("overflow", "disk_full", "write_error")

_HEAD = struct.Struct("<8sHHI")
_PREFIX = struct.Struct("<BBHI")
_CRC = struct.Struct("<I")
_SPIKES = struct.Struct("<qIB")
_U64 = struct.Struct("<Q")
_I64 = struct.Struct("<q")
_GAP = struct.Struct("<qBQQ")
_END = struct.Struct("<qQQQQ")
_SYNC_BYTE = bytes([SYNC])
_U16_IDS = np.dtype("<u2")
_U32_IDS = np.dtype("<u4")


class RecordingError(Exception):
    """Bytes that are not a readable recording: wrong magic, damaged or unsupported header."""


@dataclass(frozen=True)
class EndpointInfo:
    """One recorded endpoint as the header describes it; records refer to it by index."""

    name: str
    url: str
    direction: str  # "in" or "out"
    format: str
    neurons: int
    offset: int = 0

    def __post_init__(self) -> None:
        if self.direction not in ("in", "out"):
            raise ValueError(f"direction must be 'in' or 'out', got {self.direction!r}")
        if self.neurons < 0 or self.offset < 0:
            raise ValueError("neurons and offset must be >= 0")


@dataclass(frozen=True)
class Header:
    """What a recording file says about itself: endpoints, node, start times, segment."""

    endpoints: tuple[EndpointInfo, ...]
    start_wall_ns: int
    start_mono_ns: int
    node: int | None = None
    segment: int = 0
    run: str = ""  # shared by the segments of one recording run (rotation)
    software: str = ""
    extra: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    version: int = VERSION

    def endpoint_index(self, name: str) -> int:
        """The index of the endpoint called ``name``; KeyError when there is none."""
        for i, ep in enumerate(self.endpoints):
            if ep.name == name:
                return i
        raise KeyError(name)


class SpikeRecord:
    """One recorded frame: receive time (ns since the header's start_mono_ns) and endpoint."""

    __slots__ = ("endpoint", "frame", "t_ns")

    kind = KIND_SPIKES

    def __init__(self, t_ns: int, endpoint: int, frame: SpikeFrame) -> None:
        self.t_ns = t_ns
        self.endpoint = endpoint
        self.frame = frame

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SpikeRecord):
            return NotImplemented
        return (self.t_ns, self.endpoint) == (other.t_ns, other.endpoint) and (
            self.frame == other.frame
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"SpikeRecord(t_ns={self.t_ns}, endpoint={self.endpoint}, frame={self.frame!r})"


@dataclass(frozen=True)
class GapRecord:
    """Frames the recorder saw but could not write, noted where they were lost."""

    t_ns: int
    reason: str  # one of GAP_REASONS
    frames: int
    spikes: int

    kind = KIND_GAP


@dataclass(frozen=True)
class EndRecord:
    """The last record of a cleanly closed file: its totals and the recorder's drops."""

    t_ns: int
    frames: int
    spikes: int
    dropped_frames: int
    dropped_spikes: int

    kind = KIND_END


Record = SpikeRecord | GapRecord | EndRecord


# --- header -------------------------------------------------------------------------------


def header_meta(header: Header) -> dict[str, Any]:
    """The header as the JSON object stored in the file."""
    return {
        "format": "spikebridge-recording",
        "version": header.version,
        "node": header.node,
        "start_wall_ns": header.start_wall_ns,
        "start_mono_ns": header.start_mono_ns,
        "segment": header.segment,
        "run": header.run,
        "software": header.software,
        "endpoints": [
            {"name": e.name, "url": e.url, "direction": e.direction, "format": e.format,
             "neurons": e.neurons, "offset": e.offset}
            for e in header.endpoints
        ],
        "extra": dict(header.extra),
    }


def header_from_meta(meta: Mapping[str, Any], version: int = VERSION) -> Header:
    """The Header described by a stored JSON object; RecordingError when it is malformed."""
    try:
        endpoints = tuple(
            EndpointInfo(
                name=str(e["name"]), url=str(e["url"]), direction=str(e["direction"]),
                format=str(e["format"]), neurons=int(e["neurons"]), offset=int(e["offset"]),
            )
            for e in meta["endpoints"]
        )
        return Header(
            endpoints=endpoints,
            start_wall_ns=int(meta["start_wall_ns"]),
            start_mono_ns=int(meta["start_mono_ns"]),
            node=None if meta.get("node") is None else int(meta["node"]),
            segment=int(meta.get("segment", 0)),
            run=str(meta.get("run", "")),
            software=str(meta.get("software", "")),
            extra=MappingProxyType(dict(meta.get("extra", {}))),
            version=version,
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise RecordingError(f"header metadata is malformed: {exc!r}") from None


def encode_header(header: Header) -> bytes:
    """The header bytes for ``header``; ValueError when it cannot be stored."""
    meta = header_meta(header)
    if len(header.endpoints) >= NO_ENDPOINT:
        raise ValueError(f"at most {NO_ENDPOINT - 1} endpoints fit in a recording")
    blob = json.dumps(meta, separators=(",", ":"), sort_keys=True).encode()
    if len(blob) > MAX_META:
        raise ValueError(f"header metadata is {len(blob)} bytes, at most {MAX_META} fit")
    head = _HEAD.pack(MAGIC, header.version, 0, len(blob)) + blob
    return head + _CRC.pack(zlib.crc32(head))


def decode_header(data: bytes | bytearray | memoryview) -> tuple[Header, int] | None:
    """Parse a header at the start of ``data``: (header, its size), or None if more is needed.

    RecordingError when the bytes are not a recording this build can read.
    """
    if len(data) < _HEAD.size:
        if bytes(data[: len(MAGIC)]) != MAGIC[: min(len(data), len(MAGIC))]:
            raise RecordingError("not a spikebridge recording (bad magic)")
        return None
    magic, version, _flags, meta_len = _HEAD.unpack_from(data)
    if magic != MAGIC:
        raise RecordingError("not a spikebridge recording (bad magic)")
    if version != VERSION:
        raise RecordingError(f"recording version {version}; this build reads version {VERSION}")
    if meta_len > MAX_META:
        raise RecordingError(f"header metadata length {meta_len} is implausible (damaged)")
    size = _HEAD.size + meta_len + _CRC.size
    if len(data) < size:
        return None
    (crc,) = _CRC.unpack_from(data, size - _CRC.size)
    if zlib.crc32(data[: size - _CRC.size]) != crc:
        raise RecordingError("header checksum mismatch (damaged header)")
    try:
        meta = json.loads(bytes(data[_HEAD.size : size - _CRC.size]))
    except ValueError as exc:
        raise RecordingError(f"header metadata is not JSON: {exc}") from None
    except RecursionError:
        raise RecordingError("header metadata is nested too deeply (damaged or hostile)") from None
    if not isinstance(meta, dict):
        raise RecordingError("header metadata is not a JSON object")
    return header_from_meta(meta, version), size


# --- records ------------------------------------------------------------------------------


def _seal(kind: int, endpoint: int, body: bytes) -> bytes:
    prefix = _PREFIX.pack(SYNC, kind, endpoint, len(body))
    return b"".join((prefix, body, _CRC.pack(zlib.crc32(body, zlib.crc32(prefix)))))


def encode_spikes(
    t_ns: int, endpoint: int, source: int, seq: int, t_sent_ns: int, ids: IdArray
) -> bytes:
    """One spikes record; ids go as u16 when they all fit, else u32. ValueError when unstorable."""
    if not 0 <= endpoint < NO_ENDPOINT:
        raise ValueError(f"endpoint index must be 0..{NO_ENDPOINT - 1}, got {endpoint}")
    flags = 0
    n = len(ids)
    if n and int(ids.max()) > 0xFFFF:
        flags |= FLAG_U32
        raw = ids.astype(_U32_IDS, copy=False).tobytes()
    else:
        raw = ids.astype(_U16_IDS).tobytes()
    parts = [b"", b"", b"", raw]
    if seq != NO_SEQ:
        if seq < 0:
            raise ValueError(f"sequence number must be >= 0 or NO_SEQ, got {seq}")
        flags |= FLAG_SEQ
        parts[1] = _U64.pack(seq)
    if t_sent_ns:
        flags |= FLAG_SENT
        parts[2] = _I64.pack(t_sent_ns)
    parts[0] = _SPIKES.pack(t_ns, source, flags)
    body = b"".join(parts)
    if len(body) > MAX_BODY:
        raise ValueError(f"a frame of {n} ids is too large for one record")
    return _seal(KIND_SPIKES, endpoint, body)


def encode_record(record: Record) -> bytes:
    """The bytes of any record object."""
    if isinstance(record, SpikeRecord):
        f = record.frame
        return encode_spikes(record.t_ns, record.endpoint, f.source, f.seq, f.t_sent_ns, f.ids)
    if isinstance(record, GapRecord):
        return encode_gap(record.t_ns, record.reason, record.frames, record.spikes)
    return encode_end(
        record.t_ns, record.frames, record.spikes, record.dropped_frames, record.dropped_spikes
    )


def encode_gap(t_ns: int, reason: str, frames: int, spikes: int) -> bytes:
    """A gap record: ``frames`` frames (``spikes`` spikes) seen but not written, for ``reason``."""
    code = GAP_REASONS.index(reason)
    return _seal(KIND_GAP, NO_ENDPOINT, _GAP.pack(t_ns, code, frames, spikes))


def encode_end(
    t_ns: int, frames: int, spikes: int, dropped_frames: int, dropped_spikes: int
) -> bytes:
    """The end record that marks a cleanly closed file."""
    body = _END.pack(t_ns, frames, spikes, dropped_frames, dropped_spikes)
    return _seal(KIND_END, NO_ENDPOINT, body)


def _parse_body(kind: int, endpoint: int, body: memoryview) -> Record | None:
    """Parse a checksummed body; None when it is inconsistent (treated as damage)."""
    if kind == KIND_SPIKES:
        if len(body) < _SPIKES.size:
            return None
        t_ns, source, flags = _SPIKES.unpack_from(body)
        if flags & ~_KNOWN_FLAGS:
            return None
        pos = _SPIKES.size
        seq = NO_SEQ
        t_sent = 0
        if flags & FLAG_SEQ:
            if len(body) < pos + 8:
                return None
            (seq,) = _U64.unpack_from(body, pos)
            pos += 8
        if flags & FLAG_SENT:
            if len(body) < pos + 8:
                return None
            (t_sent,) = _I64.unpack_from(body, pos)
            pos += 8
        dtype = _U32_IDS if flags & FLAG_U32 else _U16_IDS
        if (len(body) - pos) % dtype.itemsize:
            return None
        ids = np.frombuffer(body, dtype=dtype, offset=pos).astype(np.uint32)
        return SpikeRecord(t_ns, endpoint, SpikeFrame(source, seq, t_sent, ids))
    if kind == KIND_GAP:
        if len(body) != _GAP.size:
            return None
        t_ns, code, frames, spikes = _GAP.unpack_from(body)
        if code >= len(GAP_REASONS):
            return None
        return GapRecord(t_ns, GAP_REASONS[code], frames, spikes)
    if kind == KIND_END:
        if len(body) != _END.size:
            return None
        return EndRecord(*_END.unpack_from(body))
    return None


class RecordDecoder:
    """Feed bytes, take records: ``feed`` then ``next_record`` until it returns None.

    Damage is skipped up to the next record whose checksum holds (``skipped_bytes``,
    ``damaged``); after ``close`` an incomplete last record is reported in ``truncated_bytes``.
    Records of kinds this build does not know are skipped and counted in ``unknown``.
    """

    __slots__ = (
        "_buf", "_eof", "_pos", "_skipping", "damaged", "records", "skipped_bytes",
        "truncated_bytes", "unknown",
    )

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0
        self._eof = False
        self._skipping = False
        self.records = 0
        self.skipped_bytes = 0
        self.damaged = 0  # stretches of damaged bytes skipped (each counted once)
        self.truncated_bytes = 0
        self.unknown = 0

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append bytes read from the file; ValueError after ``close``."""
        if self._eof:
            raise ValueError("feed after close")
        if self._pos > 1 << 16 and self._pos * 2 > len(self._buf):
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def close(self) -> None:
        """No more bytes will come: an incomplete tail is now a truncation, not a wait."""
        self._eof = True

    @property
    def pending(self) -> int:
        """Bytes fed but not yet consumed."""
        return len(self._buf) - self._pos

    def _skip(self, n: int) -> None:
        if not self._skipping:
            self._skipping = True
            self.damaged += 1
        self.skipped_bytes += n
        self._pos += n

    def _complete_record_at(self, pos: int) -> int:
        """Size of a whole, checksummed record at ``pos``, or 0."""
        buf = self._buf
        if len(buf) - pos < _PREFIX.size + _CRC.size:
            return 0
        sync, _kind, _endpoint, blen = _PREFIX.unpack_from(buf, pos)
        end = pos + _PREFIX.size + blen
        if sync != SYNC or blen > MAX_BODY or end + _CRC.size > len(buf):
            return 0
        if zlib.crc32(memoryview(buf)[pos:end]) != _CRC.unpack_from(buf, end)[0]:
            return 0
        return end + _CRC.size - pos

    def next_record(self) -> Record | None:
        """The next whole record, or None when more bytes are needed (or the input is done)."""
        buf = self._buf
        while True:
            avail = len(buf) - self._pos
            if avail <= 0:
                return None
            pos = self._pos
            if buf[pos] != SYNC:
                nxt = buf.find(_SYNC_BYTE, pos)
                self._skip((nxt if nxt >= 0 else len(buf)) - pos)
                continue
            if avail < _PREFIX.size + _CRC.size:
                if self._eof:
                    self._truncate(avail)
                return None
            _, kind, endpoint, blen = _PREFIX.unpack_from(buf, pos)
            if blen > MAX_BODY:
                self._skip(1)
                continue
            total = _PREFIX.size + blen + _CRC.size
            if avail < total:
                if not self._eof:
                    return None
                # At the end a short record is either the cut-off tail or a damaged length;
                # it is damage only if a valid record starts somewhere after it.
                if self._valid_after(pos + 1):
                    self._skip(1)
                    continue
                self._truncate(avail)
                return None
            end = pos + _PREFIX.size + blen
            if zlib.crc32(memoryview(buf)[pos:end]) != _CRC.unpack_from(buf, end)[0]:
                self._skip(1)
                continue
            body = memoryview(buf)[pos + _PREFIX.size : end]
            try:
                record = _parse_body(kind, endpoint, body)
                known = kind in (KIND_SPIKES, KIND_GAP, KIND_END)
            finally:
                body.release()
            self._skipping = False
            self._pos = pos + total
            if record is not None:
                self.records += 1
                return record
            if known:  # checksum held but the body is inconsistent: a writer bug, count it
                self.damaged += 1
                self.skipped_bytes += total
            else:
                self.unknown += 1

    def _valid_after(self, start: int) -> bool:
        buf = self._buf
        pos = buf.find(_SYNC_BYTE, start)
        while pos >= 0:
            if self._complete_record_at(pos):
                return True
            pos = buf.find(_SYNC_BYTE, pos + 1)
        return False

    def _truncate(self, n: int) -> None:
        self.truncated_bytes += n
        self._pos += n
