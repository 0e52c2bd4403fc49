"""SPIF / AEStream / spiffer UDP events: 32-bit little-endian words holding (x, y, polarity).

Sans-IO: no socket, serial or time import. The format has no source node, no sequence number
and no wall-clock time: decoded frames have ``source=0``, ``seq=NO_SEQ`` and ``t_sent_ns=0``.
How a pixel becomes a neuron id is set by ``width``, ``height`` and ``layout``; the formulas
and golden vectors are in docs/wire-formats.md (section "spif").
"""

from __future__ import annotations

import struct
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from bridge.codecs.base import Codec, Option, parse_bool
from bridge.codecs.geometry import GEOMETRY_OPTIONS, LAYOUTS, Geometry
from bridge.errors import DecodeError
from bridge.frame import NO_SEQ, SpikeFrame

NO_TIMESTAMP = 0x80000000  # b31: 1 = no timestamp word follows, 0 = one follows
X_SHIFT = 16
P_SHIFT = 15
COORD_MASK = 0x7FFF  # x and y are 15 bits each
MAX_SIDE = COORD_MASK + 1
DEFAULT_MTU = 512  # aestream's UDPInput reads 512 bytes a recv() (spiffer 1024): never longer
UDP_MAX_PAYLOAD = 65507

__all__ = ["LAYOUTS", "SpifCodec"]

_SMALL = 16  # below this many words, plain Python beats numpy's per-call overhead
_TABLE_MAX = 1 << 20  # encode looks event words up in a table of up to this many ids (4 MiB)
_lists: dict[int, struct.Struct] = {}


def _words(n: int) -> struct.Struct:
    s = _lists.get(n)
    if s is None:
        s = _lists[n] = struct.Struct(f"<{n}I")
    return s


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
        **GEOMETRY_OPTIONS,
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
        geo = self.geometry = Geometry("spif", neurons, width, height, layout, polarity,
                                       max_width=MAX_SIDE, max_height=MAX_SIDE)
        if not 8 <= mtu <= UDP_MAX_PAYLOAD:
            raise ValueError(f"mtu must be 8..{UDP_MAX_PAYLOAD} bytes, got {mtu}")
        self.width, self.height, self.layout = geo.width, geo.height, geo.layout
        self.polarity, self.timestamp, self.mtu = polarity, timestamp, mtu
        self.size = geo.size  # ids the sensor can produce
        self.sensor_neurons = geo.size  # the default neurons= (endpoint_spec)
        self._mx, self._my, self._mp = geo.mx, geo.my, geo.mp  # read per event: kept local
        self._limit = geo.limit
        self._per_datagram = mtu // 8 if timestamp else mtu // 4
        self._masks: dict[int, tuple[int, int, int, int]] = {}  # peek's lane masks by length
        # id -> untimed event word, built here (not on first use: never a stall in the loop).
        self._table: npt.NDArray[np.uint32] | None = None
        if not timestamp and self._limit <= _TABLE_MAX:
            self._build_table()

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

    def peek(self, data: bytes | bytearray | memoryview) -> tuple[int, int, int, int]:
        """Validate as ``decode`` does, without building ids when no event carries a time."""
        n = len(data)
        nw = n >> 2
        if n & 3 or nw <= _SMALL or self._limit < self.size:
            return super().peek(data)
        # The datagram as one integer, every word a 32-bit lane, checked in three big-int
        # operations (C loops over the bytes) instead of numpy calls at ~1-8 µs each.
        # Lane: b31 T (1: no time), b16-30 x, b15 p, b0-14 y. Adding (0x8000 - width) to x
        # and (0x8000 - height) to y sets b31 / b15 exactly when x >= width / y >= height;
        # neither sum carries out of its 16 bits, so the lanes stay apart.
        m = self._masks.get(nw)
        if m is None:
            m = self._lane_masks(nw)
        v = int.from_bytes(data, "little")
        if v & m[0] == m[0] and ((v & m[1]) + m[2]) & m[3] == 0:
            return 0, NO_SEQ, 0, nw
        return super().peek(data)  # decode gives the verdict and the drop reason

    def _lane_masks(self, nw: int) -> tuple[int, int, int, int]:
        """(b31, the x and y fields, the per-lane bias, b31 and b15) of ``nw`` lanes."""
        rep = int.from_bytes(b"\x01\x00\x00\x00" * nw, "little")
        m = (NO_TIMESTAMP * rep, 0x7FFF7FFF * rep,
             (((0x8000 - self.width) << X_SHIFT) | (0x8000 - self.height)) * rep,
             0x80008000 * rep)
        if len(self._masks) < 64:  # datagram lengths seen; bounded
            self._masks[nw] = m
        return m

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
        table = self._table
        if table is not None:
            try:  # one gather, bounds-checked in C, instead of a dozen divisions and shifts
                raw = np.take(table, ids).tobytes()
            except IndexError:
                raise ValueError(f"id {int(ids.max())} out of range for {self._limit} "
                                 "neurons") from None
            step = per * 4
            return [raw[i:i + step] for i in range(0, len(raw), step)]
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

    def _build_table(self) -> npt.NDArray[np.uint32]:
        """Every id's untimed event word (``encode``'s arithmetic, done once for all ids)."""
        i64 = np.arange(self._limit, dtype=np.int64)
        w, h, mx, my, mp = self.width, self.height, self._mx, self._my, self._mp
        arr = ((i64 // mx % w) << X_SHIFT) | (i64 // my % h) | NO_TIMESTAMP
        arr |= (i64 // mp & 1) << P_SHIFT if mp else self.polarity << P_SHIFT
        table: npt.NDArray[np.uint32] = arr.astype("<u4")
        self._table = table
        return table

    def encode_events(self, t_us: npt.NDArray[Any], x: npt.NDArray[Any], y: npt.NDArray[Any],
                      on: npt.NDArray[Any]) -> list[bytes]:
        """Encode pixel events (each with its own µs time when ``timestamp``) in ``mtu`` pieces.

        The caller has checked every event against this codec's geometry (``same_wire``).
        """
        words = ((x.astype(np.int64) << X_SHIFT) | y.astype(np.int64)
                 | (on.astype(np.int64) & 1) << P_SHIFT)
        if self.timestamp:
            pairs = np.empty(2 * len(words), dtype=np.int64)
            pairs[0::2] = words
            pairs[1::2] = t_us.astype(np.int64) & 0xFFFFFFFF
            raw = pairs.astype("<u4").tobytes()
            step = self._per_datagram * 8
        else:
            raw = (words | NO_TIMESTAMP).astype("<u4").tobytes()
            step = self._per_datagram * 4
        if not raw:
            return [b""]
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

    def fields(self, data: bytes | bytearray | memoryview, t_default_us: int) -> tuple[
            npt.NDArray[Any], npt.NDArray[Any], npt.NDArray[Any], npt.NDArray[Any]]:
        """(t µs, x, y, p) of a datagram ``peek`` accepted; ``t_default_us`` for untimed events."""
        words = np.frombuffer(data, dtype="<u4")
        nw = len(words)
        if nw and np.all(words >= NO_TIMESTAMP):
            ev = words
            t = np.full(nw, t_default_us, dtype=np.uint64)
        elif nw % 2 == 0 and np.all(words[0::2] < NO_TIMESTAMP):
            ev = words[0::2]
            t = words[1::2].astype(np.uint64)
        else:
            listed = words.tolist()
            evs, ts, i = [], [], 0
            while i < nw:
                w = listed[i]
                evs.append(w)
                if w & NO_TIMESTAMP:
                    ts.append(t_default_us)
                    i += 1
                else:
                    ts.append(listed[i + 1])
                    i += 2
            ev = np.array(evs, dtype=np.uint32)
            t = np.array(ts, dtype=np.uint64)
        return t, (ev >> X_SHIFT) & COORD_MASK, ev & COORD_MASK, (ev >> P_SHIFT) & 1

    def relay_to(self, other: Codec, data: bytes | bytearray | memoryview, source: int,
                 seq: int, t_sent_ns: int) -> list[bytes]:
        """To an identical spif output: unchanged; to a Faery layout: each event re-laid."""
        if isinstance(other, SpifCodec):
            return [bytes(data)]
        encode_events = getattr(other, "encode_events", None)
        if encode_events is None:  # not reached: same_wire admits only event formats
            return self.reframe(data, source, seq, t_sent_ns)
        result: list[bytes] = encode_events(*self.fields(data, t_sent_ns // 1000))
        return result

    def same_wire(self, other: Codec) -> bool:
        """True for a spif codec with identical options (the datagram passes unchanged) and
        for a Faery layout of the same geometry (events re-laid, each with its own time;
        an event without one gets the send time)."""
        if isinstance(other, SpifCodec):
            return other._signature() == self._signature()
        from bridge.codecs.faery_udp import T32X16Y15On1Codec, T64X16Y16On8Codec

        return (isinstance(other, T32X16Y15On1Codec | T64X16Y16On8Codec)
                and other.neurons == self.neurons
                and other.geometry.key() == self.geometry.key())
