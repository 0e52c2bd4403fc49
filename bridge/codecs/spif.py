"""SPIF / AEStream / spiffer UDP events: 32-bit little-endian words holding (x, y, polarity).

Sans-IO: no socket, serial or time import. The format has no source node, no sequence number
and no wall-clock time: decoded frames have ``source=0``, ``seq=NO_SEQ`` and ``t_sent_ns=0``.
How a pixel becomes a neuron id is set by ``width``, ``height`` and ``layout``; the formulas
and golden vectors are in docs/wire-formats.md (section "spif").
"""

from __future__ import annotations

import struct
from itertools import permutations
from typing import ClassVar

import numpy as np

from bridge.codecs.base import Codec, Option, parse_bool
from bridge.errors import DecodeError
from bridge.frame import NO_SEQ, SpikeFrame

NO_TIMESTAMP = 0x80000000  # b31: 1 = no timestamp word follows, 0 = one follows
X_SHIFT = 16
P_SHIFT = 15
COORD_MASK = 0x7FFF  # x and y are 15 bits each
MAX_SIDE = COORD_MASK + 1
DEFAULT_MTU = 1024  # spiffer reads 256 words per recv(); a longer datagram would be cut
UDP_MAX_PAYLOAD = 65507

LAYOUTS: tuple[str, ...] = tuple(
    ["".join(p) for p in permutations("xyp")] + ["".join(p) for p in permutations("xy")]
)
"""Id layouts: the axes of a mixed-radix number, most significant first (x: width, y: height,
p: 2). ``pyx`` is id = (p*height + y)*width + x; a layout without ``p`` ignores polarity."""

_SMALL = 16  # below this many words, plain Python beats numpy's per-call overhead
_lists: dict[int, struct.Struct] = {}


def _words(n: int) -> struct.Struct:
    s = _lists.get(n)
    if s is None:
        s = _lists[n] = struct.Struct(f"<{n}I")
    return s


def _parse_side(text: str) -> int:
    value = int(text, 0)
    if not 1 <= value <= MAX_SIDE:
        raise ValueError(f"must be 1..{MAX_SIDE} (15-bit coordinates)")
    return value


def _parse_layout(text: str) -> str:
    if text not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}")
    return text


def _parse_polarity(text: str) -> int:
    value = int(text)
    if value not in (0, 1):
        raise ValueError("polarity must be 0 or 1")
    return value


def _parse_mtu(text: str) -> int:
    value = int(text, 0)
    if not 8 <= value <= UDP_MAX_PAYLOAD:
        raise ValueError(f"mtu must be 8..{UDP_MAX_PAYLOAD} bytes")
    return value


class SpifCodec(Codec):
    """32-bit event words; neuron id = x*mx + y*my + p*mp with strides set by ``layout``."""

    name: ClassVar[str] = "spif"
    summary: ClassVar[str] = "SPIF/AEStream 32-bit event words (x, y, polarity)"
    OPTIONS: ClassVar[dict[str, Option]] = {
        "width": Option(_parse_side, None, "sensor width: x runs 0..width-1 (required)"),
        "height": Option(_parse_side, None, "sensor height: y runs 0..height-1 (required)"),
        "layout": Option(_parse_layout, "pyx", "id layout, most significant axis first"),
        "polarity": Option(_parse_polarity, 1, "polarity sent by layouts without p"),
        "timestamp": Option(parse_bool, False, "send a microsecond timestamp word per event"),
        "mtu": Option(_parse_mtu, DEFAULT_MTU, "largest datagram sent, bytes"),
    }
    needs_neurons: ClassVar[bool] = False
    has_seq: ClassVar[bool] = False

    def __init__(
        self,
        neurons: int,
        *,
        width: int | None = None,
        height: int | None = None,
        layout: str = "pyx",
        polarity: int = 1,
        timestamp: bool = False,
        mtu: int = DEFAULT_MTU,
    ) -> None:
        super().__init__(neurons)
        if width is None or height is None:
            raise ValueError("the spif format needs width= and height= (the sensor size)")
        if not (1 <= width <= MAX_SIDE and 1 <= height <= MAX_SIDE):
            raise ValueError(f"width and height must be 1..{MAX_SIDE}, got {width}x{height}")
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
        if polarity not in (0, 1):
            raise ValueError(f"polarity must be 0 or 1, got {polarity}")
        if not 8 <= mtu <= UDP_MAX_PAYLOAD:
            raise ValueError(f"mtu must be 8..{UDP_MAX_PAYLOAD} bytes, got {mtu}")
        self.width, self.height, self.layout = width, height, layout
        self.polarity, self.timestamp, self.mtu = polarity, timestamp, mtu
        radix = {"x": width, "y": height, "p": 2}
        stride = {"x": 0, "y": 0, "p": 0}
        step = 1
        for axis in reversed(layout):
            stride[axis] = step
            step *= radix[axis]
        self.size = step  # ids the sensor can produce
        self.sensor_neurons = step  # the default neurons= (endpoint_spec)
        self._mx, self._my, self._mp = stride["x"], stride["y"], stride["p"]
        self._limit = min(neurons, step) if neurons else step
        self._per_datagram = mtu // 8 if timestamp else mtu // 4

    # -- decoding ------------------------------------------------------------------------

    def decode(self, data: bytes | bytearray | memoryview) -> SpikeFrame:
        """Decode a datagram of event words (each optionally followed by a timestamp word)."""
        n = len(data)
        if n % 4:
            raise DecodeError("truncated", f"{n} bytes is not a whole number of 32-bit words")
        nw = n // 4
        if nw == 0:
            return SpikeFrame(0, NO_SEQ, 0, np.empty(0, dtype=np.uint32))
        if nw <= _SMALL:
            events = self._walk(_words(nw).unpack(data))
            found = [self._id(w) for w in events]
            return SpikeFrame(0, NO_SEQ, 0, np.array(found, dtype=np.uint32))
        words = np.frombuffer(data, dtype="<u4")
        if np.all(words >= NO_TIMESTAMP):
            ev = words
        elif nw % 2 == 0 and np.all(words[0::2] < NO_TIMESTAMP):
            ev = words[0::2]  # every event carries a timestamp (AEStream's include_timestamp)
        else:
            ev = np.array(self._walk(words.tolist()), dtype=np.uint32)
        x = ((ev >> X_SHIFT) & COORD_MASK).astype(np.int64)
        y = (ev & COORD_MASK).astype(np.int64)
        if int(x.max()) >= self.width or int(y.max()) >= self.height:
            raise DecodeError(
                "id_out_of_range",
                f"event at x={int(x.max())} or y={int(y.max())} outside "
                f"{self.width}x{self.height}",
            )
        ids = x * self._mx + y * self._my
        if self._mp:
            ids += ((ev >> P_SHIFT) & 1).astype(np.int64) * self._mp
        if int(ids.max()) >= self._limit:
            raise DecodeError("id_out_of_range", f"id {int(ids.max())} not below {self._limit}")
        return SpikeFrame(0, NO_SEQ, 0, ids.astype(np.uint32))

    @staticmethod
    def _walk(words: tuple[int, ...] | list[int]) -> list[int]:
        """The event words of a mixed stream: a word with b31 clear is followed by its time."""
        events = []
        i = 0
        nw = len(words)
        while i < nw:
            w = words[i]
            events.append(w)
            i += 1 if w & NO_TIMESTAMP else 2
        if i > nw:
            raise DecodeError("truncated", "the last event lacks its timestamp word")
        return events

    def _id(self, w: int) -> int:
        x = (w >> X_SHIFT) & COORD_MASK
        y = w & COORD_MASK
        if x >= self.width or y >= self.height:
            raise DecodeError(
                "id_out_of_range", f"event at ({x}, {y}) outside {self.width}x{self.height}"
            )
        i = x * self._mx + y * self._my + ((w >> P_SHIFT) & 1) * self._mp
        if i >= self._limit:
            raise DecodeError("id_out_of_range", f"id {i} not below {self._limit}")
        return i

    # -- encoding ------------------------------------------------------------------------

    def encode(self, frame: SpikeFrame) -> list[bytes]:
        """Encode ids as event words, at most ``mtu`` bytes per datagram (one empty if no ids)."""
        ids = frame.ids
        n = len(ids)
        if n == 0:
            return [b""]
        per = self._per_datagram  # events per datagram
        fixed = (0 if self.timestamp else NO_TIMESTAMP) | (
            0 if self._mp else self.polarity << P_SHIFT
        )
        stamp = (frame.t_sent_ns // 1000) & 0xFFFFFFFF
        w, h, mx, my, mp = self.width, self.height, self._mx, self._my, self._mp
        if n <= _SMALL:
            values = ids.tolist()
            if max(values) >= self._limit:
                raise ValueError(f"id {max(values)} out of range for {self._limit} neurons")
            words = [
                fixed | (i // mx % w) << X_SHIFT | (i // my % h)
                | ((i // mp & 1) << P_SHIFT if mp else 0)
                for i in values
            ]
            if self.timestamp:
                words = [v for word in words for v in (word, stamp)]
                per *= 2
            return [_words(len(words[i:i + per])).pack(*words[i:i + per])
                    for i in range(0, len(words), per)]
        if int(ids.max()) >= self._limit:
            raise ValueError(f"id {int(ids.max())} out of range for {self._limit} neurons")
        i64 = ids.astype(np.int64)
        arr = ((i64 // mx % w) << X_SHIFT) | (i64 // my % h) | fixed
        if mp:
            arr |= (i64 // mp & 1) << P_SHIFT
        if self.timestamp:
            pairs = np.empty(2 * n, dtype=np.int64)
            pairs[0::2] = arr
            pairs[1::2] = stamp
            arr = pairs
        raw = arr.astype("<u4").tobytes()
        step = per * (8 if self.timestamp else 4)
        return [raw[i:i + step] for i in range(0, len(raw), step)]

    # -- pass-through --------------------------------------------------------------------

    def _signature(self) -> tuple[object, ...]:
        return (self.neurons, self.width, self.height, self.layout, self.polarity,
                self.timestamp, self.mtu)

    def reframe(
        self, data: bytes | bytearray | memoryview, source: int, seq: int, t_sent_ns: int
    ) -> list[bytes]:
        """SPIF has no source, seq or send time to rewrite: the datagram goes out unchanged."""
        return [bytes(data)]

    def same_wire(self, other: Codec) -> bool:
        """True only for a spif codec with identical options (the datagram passes unchanged)."""
        return isinstance(other, SpifCodec) and other._signature() == self._signature()
