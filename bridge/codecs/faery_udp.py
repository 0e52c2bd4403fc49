"""Faery's UDP event layouts, named as Faery names them: t64_x16_y16_on8 and t32_x16_y15_on1.

Faery (the AEStream authors' event-data ferry) sends packed little-endian event records, one
datagram per ``events_per_packet`` events (100 by default), with no header:

- ``t64_x16_y16_on8``: 13 bytes an event: t u64 (µs), x u16, y u16, on u8 (0 or 1);
- ``t32_x16_y15_on1``: 8 bytes an event: t u32 (µs, Faery writes ``t & 0xFFFFFFFF``), x u16,
  then u16 ``(y << 1 & 0x7FFF) | on`` (so Faery's encoder carries y only up to 16383).

Sans-IO: no socket, serial or time import. A pixel becomes a neuron id through the shared
geometry keys (bridge/codecs/geometry.py). Decoded frames have ``source=0``, ``seq=NO_SEQ``
and ``t_sent_ns=0``: Faery's times are the camera's, not a wall clock, so they must never feed
staleness or latency checks; ``decode_times`` gives them to whoever can carry them. A datagram
that is not a whole number of events, or holds an event outside the geometry, is a DecodeError;
this module must never decode such bytes into events. Byte diagrams: docs/wire-formats.md.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from bridge.codecs.base import Codec, Option
from bridge.codecs.geometry import GEOMETRY_OPTIONS, Geometry
from bridge.errors import DecodeError
from bridge.frame import NO_SEQ, SpikeFrame

__all__ = ["T32X16Y15On1Codec", "T64X16Y16On8Codec"]

DEFAULT_EVENTS = 100  # Faery's events_per_packet default
UDP_MAX_PAYLOAD = 65507
_T64 = np.dtype([("t", "<u8"), ("x", "<u2"), ("y", "<u2"), ("on", "u1")])  # packed: 13 bytes
_T32 = np.dtype([("t", "<u4"), ("x", "<u2"), ("yon", "<u2")])  # 8 bytes


class _FaeryCodec(Codec):
    """Shared body of the two layouts: geometry, splitting, pass-through."""

    DTYPE: ClassVar[np.dtype[Any]]
    MAX_HEIGHT: ClassVar[int]
    OPTIONS: ClassVar[dict[str, Option]]
    needs_neurons: ClassVar[bool] = False
    has_seq: ClassVar[bool] = False

    def __init__(self, neurons: int, *, width: int | None = None, height: int | None = None,
                 layout: str = "pyx", polarity: int = 1, events: int = DEFAULT_EVENTS) -> None:
        super().__init__(neurons)
        self.geometry = Geometry(self.name, neurons, width, height, layout, polarity,
                                 max_width=1 << 16, max_height=self.MAX_HEIGHT)
        size = self.DTYPE.itemsize
        if not 1 <= events <= UDP_MAX_PAYLOAD // size:
            raise ValueError(f"events must be 1..{UDP_MAX_PAYLOAD // size} for {self.name}, "
                             f"got {events}")
        self.events = events
        self.size = self.geometry.size

    @classmethod
    def _parse_events(cls, text: str) -> int:
        value = int(text, 0)
        if value < 1:
            raise ValueError("events must be >= 1")
        return value

    # -- decoding ------------------------------------------------------------------------

    def _records(self, data: bytes | bytearray | memoryview) -> npt.NDArray[Any]:
        size = self.DTYPE.itemsize
        n = len(data)
        if n % size:
            raise DecodeError("truncated", f"{n} bytes is not a whole number of "
                              f"{size}-byte {self.name} events")
        return np.frombuffer(data, dtype=self.DTYPE)

    def _xyp(self, rec: npt.NDArray[Any]) -> tuple[npt.NDArray[Any], npt.NDArray[Any],
                                                    npt.NDArray[Any]]:
        raise NotImplementedError

    def _times(self, rec: npt.NDArray[Any]) -> npt.NDArray[np.uint64]:
        return rec["t"].astype(np.uint64)

    def decode(self, data: bytes | bytearray | memoryview) -> SpikeFrame:
        """Decode one datagram of events; DecodeError for a partial event or one outside."""
        rec = self._records(data)
        ids = self.geometry.ids(*self._xyp(rec))
        return SpikeFrame(0, NO_SEQ, 0, ids.astype(np.uint32, copy=False))

    def decode_times(self, data: bytes | bytearray | memoryview
                     ) -> tuple[SpikeFrame, npt.NDArray[np.uint64]]:
        """Decode as ``decode`` does, plus each event's own time in µs (uint64)."""
        rec = self._records(data)
        ids = self.geometry.ids(*self._xyp(rec))
        return SpikeFrame(0, NO_SEQ, 0, ids.astype(np.uint32, copy=False)), self._times(rec)

    def fields(self, data: bytes | bytearray | memoryview) -> tuple[
            npt.NDArray[Any], npt.NDArray[Any], npt.NDArray[Any], npt.NDArray[Any]]:
        """(t µs, x, y, on) of a datagram, unchecked against the geometry (``peek`` does that)."""
        rec = self._records(data)
        x, y, on = self._xyp(rec)
        return self._times(rec), x, y, on

    # -- encoding ------------------------------------------------------------------------

    def _fill(self, out: npt.NDArray[Any], t: npt.NDArray[Any] | int, x: npt.NDArray[Any],
              y: npt.NDArray[Any], p: npt.NDArray[Any]) -> None:
        raise NotImplementedError

    def encode_events(self, t_us: npt.NDArray[Any], x: npt.NDArray[Any], y: npt.NDArray[Any],
                      on: npt.NDArray[Any]) -> list[bytes]:
        """Encode pixel events with their own µs times, ``events`` a datagram."""
        if not len(x):
            return [b""]
        out = np.empty(len(x), dtype=self.DTYPE)
        self._fill(out, t_us, x.astype(np.int64), y.astype(np.int64), on.astype(np.int64))
        raw = out.tobytes()
        step = self.events * self.DTYPE.itemsize
        return [raw[i:i + step] for i in range(0, len(raw), step)]

    def encode(self, frame: SpikeFrame) -> list[bytes]:
        """Events at the frame's time (µs), at most ``events`` a datagram (one empty if none)."""
        return self.encode_times(frame, None)

    def encode_times(self, frame: SpikeFrame, times_us: npt.NDArray[Any] | None) -> list[bytes]:
        """Encode with each event's own µs time, or the frame's time when ``times_us`` is None."""
        ids = frame.ids
        if not len(ids):
            return [b""]
        x, y, p = self.geometry.pixels(ids)
        out = np.empty(len(ids), dtype=self.DTYPE)
        t: npt.NDArray[Any] | int = (frame.t_sent_ns // 1000 if times_us is None
                                     else times_us.astype(np.uint64))
        self._fill(out, t, x, y, p)
        raw = out.tobytes()
        step = self.events * self.DTYPE.itemsize
        return [raw[i:i + step] for i in range(0, len(raw), step)]

    # -- pass-through --------------------------------------------------------------------

    def reframe(self, data: bytes | bytearray | memoryview, source: int, seq: int,
                t_sent_ns: int) -> list[bytes]:
        """Faery's layouts have no header to rewrite: the datagram goes out unchanged."""
        return [bytes(data)]

    def same_wire(self, other: Codec) -> bool:
        """True for an output that takes this input's events one for one, times included.

        The same layout with identical options passes the datagram unchanged; the other Faery
        layout, or ``spif`` with ``timestamp=1``, of the same geometry gets each event re-laid
        with its own time (``relay_to``).
        """
        from bridge.codecs.spif import SpifCodec

        if other.neurons != self.neurons:
            return False
        if isinstance(other, _FaeryCodec):
            return other.geometry.key() == self.geometry.key()
        if isinstance(other, SpifCodec):
            return other.timestamp and other.geometry.key() == self.geometry.key()
        return False

    def relay_to(self, other: Codec, data: bytes | bytearray | memoryview, source: int,
                 seq: int, t_sent_ns: int) -> list[bytes]:
        """The same layout: ``data`` unchanged; another event format: each event re-laid."""
        if type(other) is type(self) and isinstance(other, _FaeryCodec) \
                and other.events == self.events:
            return [bytes(data)]
        encode_events = getattr(other, "encode_events", None)
        if encode_events is None:  # not reached: same_wire admits only event formats
            return self.reframe(data, source, seq, t_sent_ns)
        result: list[bytes] = encode_events(*self.fields(data))
        return result


def _events_option() -> Option:
    return Option(_FaeryCodec._parse_events, DEFAULT_EVENTS,
                  "events per datagram sent (Faery's events_per_packet)")


class T64X16Y16On8Codec(_FaeryCodec):
    """Faery's default UDP layout: 13-byte events, t u64 µs, x u16, y u16, on u8."""

    name: ClassVar[str] = "t64_x16_y16_on8"
    summary: ClassVar[str] = "Faery UDP events, 13 bytes: t u64 µs, x u16, y u16, on u8"
    OPTIONS: ClassVar[dict[str, Option]] = {**GEOMETRY_OPTIONS, "events": _events_option()}
    DTYPE: ClassVar[np.dtype[Any]] = _T64
    MAX_HEIGHT: ClassVar[int] = 1 << 16

    def _xyp(self, rec: npt.NDArray[Any]) -> tuple[npt.NDArray[Any], npt.NDArray[Any],
                                                    npt.NDArray[Any]]:
        on = rec["on"]
        if on.size and int(on.max()) > 1:
            raise DecodeError("malformed", f"on byte {int(on.max())} is neither 0 nor 1")
        return rec["x"], rec["y"], on

    def _fill(self, out: npt.NDArray[Any], t: npt.NDArray[Any] | int, x: npt.NDArray[Any],
              y: npt.NDArray[Any], p: npt.NDArray[Any]) -> None:
        out["t"], out["x"], out["y"], out["on"] = t, x, y, p


class T32X16Y15On1Codec(_FaeryCodec):
    """Faery's compact UDP layout: 8-byte events, t u32 µs, x u16, (y << 1 | on) u16."""

    name: ClassVar[str] = "t32_x16_y15_on1"
    summary: ClassVar[str] = "Faery UDP events, 8 bytes: t u32 µs, x u16, y<<1|on u16"
    OPTIONS: ClassVar[dict[str, Option]] = {**GEOMETRY_OPTIONS, "events": _events_option()}
    DTYPE: ClassVar[np.dtype[Any]] = _T32
    MAX_HEIGHT: ClassVar[int] = 1 << 14  # Faery's encoder masks y << 1 to 15 bits

    def _xyp(self, rec: npt.NDArray[Any]) -> tuple[npt.NDArray[Any], npt.NDArray[Any],
                                                    npt.NDArray[Any]]:
        yon = rec["yon"]
        return rec["x"], yon >> 1, yon & 1

    def _fill(self, out: npt.NDArray[Any], t: npt.NDArray[Any] | int, x: npt.NDArray[Any],
              y: npt.NDArray[Any], p: npt.NDArray[Any]) -> None:
        out["t"] = np.asarray(t, dtype=np.uint64) & 0xFFFFFFFF
        out["x"] = x
        out["yon"] = ((y << 1) & 0x7FFF) | (p & 1)
