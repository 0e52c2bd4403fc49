"""The ``board`` serial format: COBS-framed, CRC-16 checked frames for spiking boards.

Wire layout of one frame (all integers little-endian)::

    00 | COBS( ver/type u8, flags u8, seq u16, t0_us u32, payload, crc16 u16 ) | 00

The CRC is CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, check value 0x29B1)
over every byte before it. Spike frames carry ``n x (addr u16, dt_us u16)``; command,
acknowledgement and heartbeat frames carry their own payloads and are demultiplexed into a
control queue, never returned as SpikeFrames. The decoder resynchronises at the next 0x00, so
noise costs at most the frame it hits, and each bad frame is one counted DecodeError.

Sans-IO: no socket, serial or time import, no clock reads.
"""

from __future__ import annotations

import binascii
import struct
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from cobs import cobs as _cobs

from bridge.codecs.base import Option, parse_bool
from bridge.codecs.stream import StreamCodec
from bridge.errors import DecodeError
from bridge.frame import SpikeFrame

VERSION = 1
TYPE_SPIKES = 0
TYPE_COMMAND = 1
TYPE_ACK = 2
TYPE_HEARTBEAT = 3
TYPE_NAMES = {TYPE_SPIKES: "spikes", TYPE_COMMAND: "command", TYPE_ACK: "ack",
              TYPE_HEARTBEAT: "heartbeat"}

FLAG_RESET = 0x01     # first frame since the sender (re)started: its sequence numbers restart
FLAG_OVERFLOW = 0x02  # the sender dropped spikes before this frame (its buffer overflowed)

CMD_PING = 0x01   # answered by an ack and a heartbeat
CMD_START = 0x02  # start sending spike frames
CMD_STOP = 0x03   # stop sending spike frames (heartbeats go on)
CMD_MODE = 0x04   # args: u8 mode (MODE_ECHO or MODE_INTEGRATE)
CMD_RESET = 0x05  # restart: counters and sequence numbers from zero, next frame has FLAG_RESET
CMD_PARAM = 0x06  # args: u8 index, i32 value (board-defined parameter table)
COMMAND_NAMES = {CMD_PING: "ping", CMD_START: "start", CMD_STOP: "stop", CMD_MODE: "mode",
                 CMD_RESET: "reset", CMD_PARAM: "param"}
MODE_ECHO = 0
MODE_INTEGRATE = 1

ACK_OK = 0
ACK_UNKNOWN = 1   # unknown opcode
ACK_BAD_ARGS = 2  # arguments of the wrong length or value

_HEADER = struct.Struct("<BBHI")
_ACK = struct.Struct("<HBB")
_HEARTBEAT = struct.Struct("<III")
HEADER_SIZE = _HEADER.size  # 8
CRC_SIZE = 2
MAX_SPIKES = 256                         # per frame; longer frames are split by the encoder
MAX_PAYLOAD = 4 * MAX_SPIKES             # also the bound for command arguments
MAX_FRAME = HEADER_SIZE + MAX_PAYLOAD + CRC_SIZE
MAX_ENCODED = MAX_FRAME + MAX_FRAME // 254 + 1  # COBS adds one byte per 254
CONTROL_QUEUE = 256


def crc16(data: bytes | bytearray | memoryview) -> int:
    """CRC-16/CCITT-FALSE of ``data`` (``crc16(b"123456789") == 0x29B1``)."""
    return binascii.crc_hqx(data, 0xFFFF)


def cobs_encode(data: bytes | bytearray) -> bytes:
    """Consistent-overhead byte stuffing (the ``cobs`` package): the result holds no 0x00."""
    return _cobs.encode(data)


def cobs_decode(data: bytes | bytearray | memoryview) -> bytes:
    """Undo ``cobs_encode``; DecodeError("bad_cobs") when a block overruns or holds a zero."""
    try:
        # The C extension refuses typed memoryviews; bytes and bytearray go in as they are.
        return _cobs.decode(bytes(data) if isinstance(data, memoryview) else data)
    except _cobs.DecodeError as exc:
        raise DecodeError("bad_cobs", f"{exc} ({len(data)}-byte segment)") from None


@dataclass(frozen=True, slots=True)
class BoardCommand:
    """A command frame (host to board, or seen on a loopback): opcode and argument bytes."""

    seq: int
    flags: int
    t0_us: int
    opcode: int
    args: bytes


@dataclass(frozen=True, slots=True)
class BoardAck:
    """The board's answer to the command frame numbered ``acked_seq``."""

    seq: int
    flags: int
    t0_us: int
    acked_seq: int
    opcode: int
    status: int


@dataclass(frozen=True, slots=True)
class BoardHeartbeat:
    """The board's periodic health report: its own frame and drop counters."""

    seq: int
    flags: int
    t0_us: int
    rx_frames: int
    rx_errors: int
    tx_dropped: int


BoardControl = BoardCommand | BoardAck | BoardHeartbeat


class _SeqTracker:
    """Extends a 16-bit wire sequence number to a monotonically increasing integer."""

    __slots__ = ("last16", "last_ext", "lost", "restarts")

    def __init__(self) -> None:
        self.last16 = -1
        self.last_ext = -1
        self.lost = 0
        self.restarts = 0

    def extend(self, seq16: int, flags: int) -> int:
        if self.last16 < 0:
            ext = seq16
        else:
            delta = (seq16 - self.last16) & 0xFFFF
            # A serial link does not reorder: a big step back is the sender restarting (its
            # FLAG_RESET frame may have been the one that was lost), not 32768 lost frames.
            if flags & FLAG_RESET or delta >= 0x8000:
                self.restarts += 1
                ext = self.last_ext + 1
            elif delta == 0:
                ext = self.last_ext  # a duplicate: the caller's sequence check counts it
            else:
                self.lost += delta - 1
                ext = self.last_ext + delta
        self.last16 = seq16
        self.last_ext = ext
        return ext


class BoardCodec(StreamCodec):
    """Stream codec of the board format; see the module docstring for the layout.

    Spike frames come back from ``next_frame`` with ``source=0``, ``seq`` the wire sequence
    number extended to a monotonically increasing integer (16-bit wrap and board restarts are
    unwrapped here; ``lost`` counts the gaps), and ``t_sent_ns=0`` because board time is not
    host time. The board's own times of the last frame are ``last_t0_us`` (unwrapped) and
    ``last_dt_us``. Commands, acks and heartbeats go to ``next_control``.
    """

    name: ClassVar[str] = "board"
    summary: ClassVar[str] = "COBS + CRC-16 framed spike, command, ack and heartbeat frames"
    OPTIONS: ClassVar[Mapping[str, Option]] = {
        "start": Option(parse_bool, True, "send a start command after each open of an input"),
    }
    needs_neurons: ClassVar[bool] = False
    has_seq: ClassVar[bool] = True
    # The COBS pair, as class attributes so that ``bench serial`` can time another one.
    _stuff = staticmethod(cobs_encode)
    _unstuff = staticmethod(cobs_decode)

    def __init__(self, neurons: int = 0, *, start: bool = True) -> None:
        super().__init__(neurons)
        if neurons > 0x10000:
            raise ValueError(f"board addresses are 16-bit: neurons must be <= 65536, got {neurons}")
        self.start = start
        self._buf = bytearray()
        self._pos = 0
        self._skipping = False
        self._spike_seq = _SeqTracker()
        self._control_seq = _SeqTracker()
        self._t0_last = -1
        self._t0_wraps = 0
        self._controls: deque[BoardControl] = deque()
        self.last_t0_us = 0
        self.last_dt_us = np.empty(0, dtype=np.uint16)
        # Counters, read by the engine and tests; never reset except by a new codec.
        self.frames = 0            # spike frames decoded
        self.controls = 0          # control frames decoded
        self.controls_dropped = 0  # control frames pushed out of a full control queue
        self.crc_errors = 0
        self.cobs_errors = 0
        self.oversized = 0
        self.overflow_flags = 0    # frames whose sender reported its own overflow
        self.tx_seq = 0            # next spike sequence number sent
        self.tx_control_seq = 0    # next control sequence number sent
        self.tx_flags = 0          # flags for the next frame sent (cleared after use)

    # -- decoding -------------------------------------------------------------------------

    @property
    def lost(self) -> int:
        """Spike frames missing from the sequence (gaps), since the codec was made."""
        return self._spike_seq.lost

    @property
    def control_lost(self) -> int:
        """Control frames missing from their sequence."""
        return self._control_seq.lost

    @property
    def restarts(self) -> int:
        """Times the board's sequence numbers restarted (FLAG_RESET or a step back)."""
        return self._spike_seq.restarts

    def feed(self, data: bytes | bytearray | memoryview, now_ns: int | None = None) -> None:
        """Append received bytes (``now_ns`` is unused: the format carries its own times)."""
        if self._pos and self._pos == len(self._buf):
            self._buf.clear()
            self._pos = 0
        self._buf += data

    def buffered(self) -> int:
        """Bytes of a frame that has not ended yet."""
        return len(self._buf) - self._pos

    def reset(self) -> None:
        """Drop the partial frame (the link was cut); the next 0x00 starts a fresh frame."""
        self._buf.clear()
        self._pos = 0
        self._skipping = False

    def next_control(self) -> BoardControl | None:
        """The oldest queued command, ack or heartbeat, or None."""
        return self._controls.popleft() if self._controls else None

    def next_frame(self) -> SpikeFrame | None:
        """The next spike frame, None for more bytes, or DecodeError for one consumed bad frame."""
        buf = self._buf
        while True:
            pos = self._pos
            end = buf.find(0, pos)
            if end < 0:
                if len(buf) - pos > MAX_ENCODED:
                    self._pos = len(buf)
                    if not self._skipping:
                        self._skipping = True
                        self.oversized += 1
                        raise DecodeError("oversized", f"no frame delimiter in {MAX_ENCODED} bytes")
                if pos > 4096:
                    del buf[:pos]
                    self._pos = 0
                return None
            self._pos = end + 1
            if self._skipping:
                self._skipping = False  # the delimiter that ends an oversized frame
                continue
            if end == pos:
                continue  # the empty gap between two delimiters
            if end - pos > MAX_ENCODED:
                self.oversized += 1
                raise DecodeError("oversized", f"{end - pos} encoded bytes, at most {MAX_ENCODED}")
            frame = self._segment(buf[pos:end])
            if frame is not None:
                return frame

    def _segment(self, seg: bytearray) -> SpikeFrame | None:
        try:
            raw = self._unstuff(seg)
        except DecodeError:
            self.cobs_errors += 1
            raise
        if len(raw) < HEADER_SIZE + CRC_SIZE:
            raise DecodeError("truncated", f"{len(raw)} bytes, a frame has at least 10")
        if crc16(memoryview(raw)[:-CRC_SIZE]) != int.from_bytes(raw[-CRC_SIZE:], "little"):
            self.crc_errors += 1
            raise DecodeError("bad_crc", f"{len(raw)}-byte frame")
        verty, flags, seq16, t0 = _HEADER.unpack_from(raw)
        if verty >> 4 != VERSION:
            raise DecodeError("bad_version", f"version {verty >> 4}, this build speaks {VERSION}")
        kind = verty & 0x0F
        payload = raw[HEADER_SIZE:-CRC_SIZE]
        if kind == TYPE_SPIKES:
            return self._spikes(flags, seq16, t0, payload)
        if kind == TYPE_COMMAND:
            if not payload:
                raise DecodeError("malformed", "command frame without an opcode")
            seq = self._control_seq.extend(seq16, flags)
            self._control(BoardCommand(seq, flags, t0, payload[0], payload[1:]))
        elif kind == TYPE_ACK:
            if len(payload) != _ACK.size:
                raise DecodeError("malformed", f"ack payload is {len(payload)} bytes, not 4")
            acked, opcode, status = _ACK.unpack(payload)
            seq = self._control_seq.extend(seq16, flags)
            self._control(BoardAck(seq, flags, t0, acked, opcode, status))
        elif kind == TYPE_HEARTBEAT:
            if len(payload) != _HEARTBEAT.size:
                raise DecodeError("malformed", f"heartbeat payload is {len(payload)} bytes, not 12")
            seq = self._control_seq.extend(seq16, flags)
            self._control(BoardHeartbeat(seq, flags, t0, *_HEARTBEAT.unpack(payload)))
        else:
            raise DecodeError("malformed", f"unknown frame type {kind}")
        return None

    def _control(self, msg: BoardControl) -> None:
        if len(self._controls) >= CONTROL_QUEUE:
            self._controls.popleft()
            self.controls_dropped += 1
        self._controls.append(msg)
        self.controls += 1
        if msg.flags & FLAG_OVERFLOW:
            self.overflow_flags += 1

    def _spikes(self, flags: int, seq16: int, t0: int, payload: bytes) -> SpikeFrame:
        if len(payload) % 4:
            raise DecodeError("malformed", f"spike payload of {len(payload)} bytes is not n x 4")
        words = np.frombuffer(payload, dtype="<u2")
        ids = words[0::2].astype(np.uint32)
        seq = self._spike_seq.extend(seq16, flags)
        if flags & FLAG_OVERFLOW:
            self.overflow_flags += 1
        if self.neurons and ids.size and int(ids.max()) >= self.neurons:
            raise DecodeError("id_out_of_range", f"address {int(ids.max())} >= {self.neurons}")
        if self._t0_last >= 0 and t0 < self._t0_last:
            self._t0_wraps += 1
        self._t0_last = t0
        self.last_t0_us = (self._t0_wraps << 32) + t0
        self.last_dt_us = words[1::2]
        self.frames += 1
        return SpikeFrame(0, seq, 0, ids)

    # -- encoding -------------------------------------------------------------------------

    def _frame(self, kind: int, seq: int, t0_us: int, payload: bytes) -> bytes:
        flags, self.tx_flags = self.tx_flags, 0
        raw = _HEADER.pack(VERSION << 4 | kind, flags, seq & 0xFFFF, t0_us & 0xFFFFFFFF) + payload
        raw += crc16(raw).to_bytes(CRC_SIZE, "little")
        return b"\x00" + self._stuff(raw) + b"\x00"

    def encode_spikes(
        self, ids: np.ndarray, dt_us: np.ndarray | None = None, *, t0_us: int = 0,
        seq: int | None = None,
    ) -> bytes:
        """Spike frames for ``ids``, split every MAX_SPIKES; ValueError for ids out of range."""
        ids = np.asarray(ids)
        if ids.size and (int(ids.min()) < 0 or int(ids.max()) > 0xFFFF):
            raise ValueError("board addresses must lie in 0..65535")
        if self.neurons and ids.size and int(ids.max()) >= self.neurons:
            raise ValueError(f"id {int(ids.max())} out of range for {self.neurons} neurons")
        if dt_us is not None and len(dt_us) != len(ids):
            raise ValueError("dt_us must have one entry per id")
        first = self.tx_seq if seq is None or seq < 0 else seq
        out = []
        for k, start in enumerate(range(0, max(len(ids), 1), MAX_SPIKES)):
            part = ids[start:start + MAX_SPIKES]
            words = np.zeros(2 * len(part), dtype="<u2")
            words[0::2] = part
            if dt_us is not None:
                words[1::2] = np.asarray(dt_us[start:start + MAX_SPIKES]) & 0xFFFF
            out.append(self._frame(TYPE_SPIKES, first + k, t0_us, words.tobytes()))
        self.tx_seq = first + len(out)
        return b"".join(out)

    def encode(self, frame: SpikeFrame) -> bytes:
        """Spike frames carrying ``frame.ids``, numbered by this codec's own ``tx_seq``.

        The codec numbers the frames itself because a long frame is split into several and
        the caller cannot see how many. ``t0_us`` is the frame's send time in µs modulo
        2**32; ``dt_us`` is 0. An empty frame still produces one (empty) spike frame.
        """
        return self.encode_spikes(frame.ids, t0_us=frame.t_sent_ns // 1000)

    def _control_frame(self, kind: int, payload: bytes, t0_us: int) -> bytes:
        seq = self.tx_control_seq
        self.tx_control_seq += 1
        return self._frame(kind, seq, t0_us, payload)

    def encode_command(self, opcode: int, args: bytes = b"", *, t0_us: int = 0) -> bytes:
        """One command frame."""
        if not 0 <= opcode <= 255 or len(args) >= MAX_PAYLOAD:
            raise ValueError("opcode must be a byte and args shorter than the payload limit")
        return self._control_frame(TYPE_COMMAND, bytes((opcode,)) + args, t0_us)

    def encode_ack(
        self, acked_seq: int, opcode: int, status: int = ACK_OK, *, t0_us: int = 0
    ) -> bytes:
        """One acknowledgement of the command frame numbered ``acked_seq``."""
        return self._control_frame(TYPE_ACK, _ACK.pack(acked_seq & 0xFFFF, opcode, status), t0_us)

    def encode_heartbeat(
        self, rx_frames: int, rx_errors: int, tx_dropped: int, *, t0_us: int = 0
    ) -> bytes:
        """One heartbeat carrying the sender's counters (each modulo 2**32)."""
        payload = _HEARTBEAT.pack(rx_frames & 0xFFFFFFFF, rx_errors & 0xFFFFFFFF,
                                  tx_dropped & 0xFFFFFFFF)
        return self._control_frame(TYPE_HEARTBEAT, payload, t0_us)

    def greeting(self, role: str) -> bytes:
        """A start command for inputs (unless ``start=0``); nothing for outputs."""
        return self.encode_command(CMD_START) if role == "in" and self.start else b""
