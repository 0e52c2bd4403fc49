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
clock. Only the encoder is here: spikebridge reads DV streams through dv-processing itself.
"""

from __future__ import annotations

import struct
from typing import Any
from xml.sax.saxutils import escape

import numpy as np
import numpy.typing as npt

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
