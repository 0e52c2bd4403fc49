"""The bytes a DV / dv-processing network stream carries: an AEDAT4 IOHeader, then event packets.

What dv-processing's ``NetworkWriter`` sends and its ``NetworkReader`` (and DV's GUI) read, for
one uncompressed event stream:

- the IOHeader, a size-prefixed FlatBuffer (identifier ``IOHE``): compression (0 = none), data
  table position (-1 on a network) and the info node, an XML description of the stream
  (``typeIdentifier`` EVTS, ``sizeX``/``sizeY``, ``source``);
- then per packet: stream id (i32 LE), size (i32 LE), and a size-prefixed FlatBuffer
  (identifier ``EVTS``) holding a vector of 16-byte events: timestamp µs (i64), x (i16),
  y (i16), polarity (u8), 3 bytes of padding.

The layouts are fixed here (one table, one field each) and were read off dv-processing 2.0's own
output; the tests check them against dv-processing's NetworkReader. Sans-IO: no socket, no
clock. Why spikebridge speaks it itself rather than through dv-processing's classes is in
docs/event-cameras.md (they hold the GIL while they connect, and the writer spins a core).
Only uncompressed streams are read; a compressed one is refused with a message saying so.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any
from xml.etree import ElementTree
from xml.sax.saxutils import escape

import numpy as np
import numpy.typing as npt

from bridge.errors import DecodeError

EVENT_DTYPE = np.dtype([("t", "<i8"), ("x", "<i2"), ("y", "<i2"), ("p", "u1"), ("pad", "V3")])
"""One AEDAT4 event as it lies in an EVTS packet (16 bytes)."""

_INFO = """\
<dv version="2.0">
    <node name="outInfo" path="/outInfo/">
        <node name="0" path="/outInfo/0/">
            <attr key="compression" type="string">NONE</attr>
            <attr key="originalModuleName" type="string">spikebridge</attr>
            <attr key="originalOutputName" type="string">events</attr>
            <attr key="typeIdentifier" type="string">EVTS</attr>
            <node name="info" path="/outInfo/0/info/">
                <attr key="sizeX" type="int">{width}</attr>
                <attr key="sizeY" type="int">{height}</attr>
                <attr key="source" type="string">{source}</attr>
            </node>
        </node>
    </node>
</dv>
"""

# IOHeader FlatBuffer, after its 4-byte size prefix: root offset, "IOHE", 2 bytes of padding,
# the vtable (10 bytes: 3 fields), the table (soffset, compression, infoNode offset,
# dataTablePosition, padding), then the info string. The i64 lands 8-aligned from the prefix.
_IOHEADER_FRONT = struct.Struct("<I4s6xHHHHHiiIqI")
_EVTS_FRONT = struct.Struct("<II4s2xHHHiII")  # prefix, root, "EVTS", vtable, table, vector len


def io_header(width: int, height: int, source: str = "spikebridge") -> bytes:
    """The IOHeader a client reads first: one uncompressed event stream of width x height."""
    info = _INFO.format(width=int(width), height=int(height), source=escape(source)).encode()
    body_front = _IOHEADER_FRONT.size
    total = body_front + 4 + len(info) + 1  # the string's length, bytes, NUL
    pad = -(4 + total) % 8
    front = _IOHEADER_FRONT.pack(
        0x18, b"IOHE",                 # root table at 0x18
        10, 24, 4, 12, 8,              # vtable: size, table size, field offsets
        10, 0, 0x10, -1, 0,            # table: soffset, compression, infoNode, data table, pad
    )
    return b"".join((struct.pack("<I", total + pad), front, struct.pack("<I", len(info)),
                     info, b"\0" * (1 + pad)))


def event_packet(events: npt.NDArray[Any], stream_id: int = 0) -> bytes:
    """One packet of ``events`` (an EVENT_DTYPE array), with its stream id and size header."""
    n = len(events)
    fb = 0x1C + 16 * n
    front = _EVTS_FRONT.pack(fb, 0x10, b"EVTS", 6, 8, 4, 6, 4, n)
    raw = np.ascontiguousarray(events, dtype=EVENT_DTYPE).tobytes()
    return b"".join((struct.pack("<ii", stream_id, 4 + fb), front, raw))


def events_array(t_us: Any, x: Any, y: Any, p: Any) -> npt.NDArray[Any]:
    """An EVENT_DTYPE array from columns (timestamps in µs)."""
    ev = np.zeros(len(x), dtype=EVENT_DTYPE)
    ev["t"], ev["x"], ev["y"], ev["p"] = t_us, x, y, p
    return ev


COMPRESSION = {0: "NONE", 1: "LZ4", 2: "LZ4_HIGH", 3: "ZSTD", 4: "ZSTD_HIGH"}
MAX_HEADER = 1 << 20
MAX_PACKET = 1 << 28


@dataclass
class StreamInfo:
    """What a stream's IOHeader says: compression, the event stream's id, size and source."""

    compression: int
    stream_id: int
    width: int
    height: int
    source: str


def _table_field(buf: bytes | memoryview, table: int, field_no: int) -> int | None:
    """Absolute position of field ``field_no`` of the table at ``table``, or None if absent."""
    (soff,) = struct.unpack_from("<i", buf, table)
    vt = table - soff
    vsize, _ = struct.unpack_from("<HH", buf, vt)
    at = 4 + 2 * field_no
    if at + 2 > vsize:
        return None
    (off,) = struct.unpack_from("<H", buf, vt + at)
    return table + off if off else None


def parse_io_header(body: bytes) -> StreamInfo:
    """The IOHeader FlatBuffer (after its size prefix); DecodeError when it is not one."""
    try:
        (root,) = struct.unpack_from("<I", body, 0)
        if body[4:8] != b"IOHE":
            raise DecodeError("bad_magic", f"not an AEDAT4 stream header ({body[4:8]!r})")
        pos = _table_field(body, root, 0)
        compression = struct.unpack_from("<i", body, pos)[0] if pos is not None else 0
        pos = _table_field(body, root, 2)
        if pos is None:
            raise DecodeError("malformed", "the stream header has no info node")
        start = pos + struct.unpack_from("<I", body, pos)[0]
        (n,) = struct.unpack_from("<I", body, start)
        text = bytes(body[start + 4:start + 4 + n]).decode("utf-8", "replace")
    except (struct.error, IndexError):
        raise DecodeError("malformed", "the stream header is cut short") from None
    try:
        root_node = ElementTree.fromstring(text)
    except ElementTree.ParseError as exc:
        raise DecodeError("malformed", f"the stream header's XML is bad: {exc}") from None
    for node in root_node.iter("node"):
        attrs = {a.get("key"): (a.text or "") for a in node.findall("attr")}
        if attrs.get("typeIdentifier") != "EVTS":
            continue
        info = {a.get("key"): (a.text or "") for a in node.findall("node/attr")}
        try:
            return StreamInfo(compression, int(node.get("name", "0")), int(info["sizeX"]),
                              int(info["sizeY"]), info.get("source", ""))
        except (KeyError, ValueError):
            raise DecodeError("malformed", "the event stream has no sizeX/sizeY") from None
    raise DecodeError("malformed", "the stream carries no events (no EVTS stream)")


def parse_event_packet(data: bytes | memoryview) -> npt.NDArray[Any]:
    """Events of one EVTS packet body (the size-prefixed FlatBuffer); DecodeError if bad."""
    try:
        (size,) = struct.unpack_from("<I", data, 0)
        fb = memoryview(data)[4:4 + size]
        if len(fb) < size or bytes(fb[4:8]) != b"EVTS":
            raise DecodeError("malformed", "not an event packet")
        (root,) = struct.unpack_from("<I", fb, 0)
        pos = _table_field(fb, root, 0)
        if pos is None:
            return np.empty(0, dtype=EVENT_DTYPE)
        vec = pos + struct.unpack_from("<I", fb, pos)[0]
        (n,) = struct.unpack_from("<I", fb, vec)
    except struct.error:
        raise DecodeError("truncated", "the event packet is cut short") from None
    if vec + 4 + 16 * n > len(fb):
        raise DecodeError("truncated", f"the packet claims {n} events it does not hold")
    return np.frombuffer(fb, dtype=EVENT_DTYPE, count=n, offset=vec + 4)


class DvStreamDecoder:
    """Sans-IO reader of a DV network stream: feed bytes, take event arrays.

    Raises DecodeError for a stream it cannot follow (a bad header, a compressed stream, an
    absurd packet size): the caller drops the connection. Packets of other streams (frames,
    IMU) are skipped and counted.
    """

    __slots__ = ("_buf", "info", "packets", "skipped")

    def __init__(self) -> None:
        self._buf = bytearray()
        self.info: StreamInfo | None = None
        self.packets = 0
        self.skipped = 0

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append received bytes."""
        self._buf += data

    def next_events(self) -> npt.NDArray[Any] | None:
        """The next packet's events (EVENT_DTYPE), or None until more bytes arrive."""
        buf = self._buf
        while True:
            if self.info is None:
                if len(buf) < 4:
                    return None
                (n,) = struct.unpack_from("<I", buf, 0)
                if not 0 < n <= MAX_HEADER:
                    raise DecodeError("malformed", f"a stream header of {n} bytes")
                if len(buf) < 4 + n:
                    return None
                self.info = parse_io_header(bytes(buf[4:4 + n]))
                del buf[:4 + n]
                if self.info.compression != 0:
                    name = COMPRESSION.get(self.info.compression, str(self.info.compression))
                    raise DecodeError("malformed", f"the stream is {name}-compressed; set the "
                                                   "DV output's compression to NONE")
                continue
            if len(buf) < 8:
                return None
            sid, size = struct.unpack_from("<ii", buf, 0)
            if not 0 < size <= MAX_PACKET:
                raise DecodeError("malformed", f"a packet of {size} bytes")
            if len(buf) < 8 + size:
                return None
            body = bytes(buf[8:8 + size])
            del buf[:8 + size]
            if sid != self.info.stream_id:
                self.skipped += 1
                continue
            self.packets += 1
            return parse_event_packet(body)
