"""SpiNNaker EIEIO data messages, as sPyNNaker's live spike I/O reads and writes them.

Sans-IO: no socket, serial or time import. EIEIO carries no source node, no sequence number
and no wall-clock time: decoded frames have ``source=0``, ``seq=NO_SEQ`` and ``t_sent_ns=0``.
Neuron ``i`` travels as routing key ``base + i``. The byte layout and the points where the
host library and the board firmware disagree are in docs/wire-formats.md (section "eieio").
"""

from __future__ import annotations

import struct
from typing import ClassVar

import numpy as np

from bridge.codecs.base import Codec, Option, parse_bool
from bridge.errors import DecodeError
from bridge.frame import NO_SEQ, IdArray, SpikeFrame

# Header: one little-endian u16; the count is its low byte, the flags its high byte.
FLAG_P = 0x80  # a 16-bit key prefix follows the header
FLAG_F = 0x40  # prefix format: 1 = upper half-word, 0 = lower (with P clear: a command message)
FLAG_D = 0x20  # a payload prefix follows (here: the timestamp)
FLAG_T = 0x10  # payloads are timestamps
TYPE_SHIFT = 2
KEY_16_BIT, KEY_PAYLOAD_16_BIT, KEY_32_BIT, KEY_PAYLOAD_32_BIT = 0, 1, 2, 3
KEY_BYTES = (2, 2, 4, 4)
ELEMENT_BYTES = (2, 4, 4, 8)

MAX_MESSAGE = 256  # spinnman's UDP_MESSAGE_MAX_SIZE: EIEIO bytes per message (SDP data limit)
MAX_COUNT = 255  # the count field is one byte
SDP_PAD = b"\0\0"  # spinnman sends two zero bytes before an SDP header over UDP
SDP_REPLY_NOT_EXPECTED = 0x07
SDP_HEADER = struct.Struct("<8B")  # flags tag dest_port_cpu src_port_cpu dest_y dest_x src_y src_x
SDP_WRAP = len(SDP_PAD) + SDP_HEADER.size  # 10
SCAMP_PORT = 17893  # where a board listens for SDP-wrapped live input

_COUNT_FLAGS = struct.Struct("<BB")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_M32 = 0xFFFFFFFF
_SMALL = 16  # below this many keys, plain Python beats numpy's per-call overhead
_lists: dict[tuple[str, int], struct.Struct] = {}


def _list_struct(code: str, n: int) -> struct.Struct:
    s = _lists.get((code, n))
    if s is None:
        s = _lists[(code, n)] = struct.Struct(f"<{n}{code}")
    return s


def _parse_keybits(text: str) -> int:
    value = int(text)
    if value not in (16, 32):
        raise ValueError("keybits must be 16 or 32")
    return value


def _parse_u32(text: str) -> int:
    value = int(text, 0)
    if not 0 <= value <= 0xFFFFFFFF:
        raise ValueError("must be a 32-bit unsigned integer (decimal or 0x...)")
    return value


def _parse_prefix(text: str) -> int:
    value = int(text, 0)
    if not 0 <= value <= 0xFFFF:
        raise ValueError("the key prefix is 16 bits: 0..65535 (or 0x0..0xffff)")
    return value


def _parse_tag(text: str) -> int:
    value = int(text, 0)
    if not 0 <= value <= 3:
        raise ValueError("the EIEIO tag is 2 bits: 0..3")
    return value


def _parse_tick(text: str) -> int:
    value = int(text, 0)
    if value <= 0:
        raise ValueError("must be a positive number of microseconds")
    return value


def _parse_sdp(text: str) -> tuple[int, int, int]:
    parts = text.split(",")
    if len(parts) != 3:
        raise ValueError("expected X,Y,P: the chip x, chip y and core of the live input")
    x, y, p = (int(v, 0) for v in parts)
    if not (0 <= x <= 255 and 0 <= y <= 255 and 0 <= p <= 31):
        raise ValueError("chip x and y must be 0..255 and the core 0..31")
    return x, y, p


class EieioCodec(Codec):
    """EIEIO data messages: decodes every data variant; encodes 16- or 32-bit key messages.

    ``decode`` reads the header it is given (any key width, key prefix, payload prefix,
    payloads, timestamps); the options shape what ``encode`` writes and set ``base``.
    """

    name: ClassVar[str] = "eieio"
    summary: ClassVar[str] = "SpiNNaker EIEIO data messages (sPyNNaker live spike I/O)"
    OPTIONS: ClassVar[dict[str, Option]] = {
        "keybits": Option(_parse_keybits, 32, "key width of sent messages: 16 or 32"),
        "base": Option(_parse_u32, 0, "routing key of neuron 0 (key = base + id)"),
        "prefix": Option(_parse_prefix, None, "16-bit key prefix written in sent headers"),
        "prefix_upper": Option(parse_bool, False, "the prefix is the key's upper half-word"),
        "timestamp": Option(parse_bool, False, "send the send time as a timestamp (D and T)"),
        "tick_us": Option(_parse_tick, 1000, "timestamp unit in microseconds"),
        "tag": Option(_parse_tag, 0, "2-bit tag field of sent headers"),
        "sdp": Option(_parse_sdp, None, "X,Y,P: SDP-wrap messages for a board's port 17893"),
    }
    needs_neurons: ClassVar[bool] = False
    has_seq: ClassVar[bool] = False

    def __init__(
        self,
        neurons: int,
        *,
        keybits: int = 32,
        base: int = 0,
        prefix: int | None = None,
        prefix_upper: bool = False,
        timestamp: bool = False,
        tick_us: int = 1000,
        tag: int = 0,
        sdp: tuple[int, int, int] | None = None,
    ) -> None:
        super().__init__(neurons)
        if keybits not in (16, 32):
            raise ValueError(f"keybits must be 16 or 32, got {keybits}")
        if not 0 <= base <= 0xFFFFFFFF:
            raise ValueError(f"base must be a 32-bit key, got {base}")
        if prefix is not None and not 0 <= prefix <= 0xFFFF:
            raise ValueError(f"prefix must be 0..65535, got {prefix}")
        if not 0 <= tag <= 3:
            raise ValueError(f"tag must be 0..3, got {tag}")
        if tick_us <= 0:
            raise ValueError(f"tick_us must be positive, got {tick_us}")
        top = base + max(neurons, 1) - 1
        if top > 0xFFFFFFFF:
            raise ValueError(f"base {base} + {neurons} neurons overflows 32-bit keys")
        if keybits == 16:
            if prefix is None:
                if top > 0xFFFF:
                    raise ValueError(
                        f"16-bit keys without a prefix end at 65535 but key {top} is needed; "
                        "set prefix= with prefix_upper=1, or keybits=32"
                    )
            elif not prefix_upper:
                raise ValueError(
                    "a lower half-word prefix on 16-bit keys is read differently by spinnman "
                    "(key | prefix) and by the board firmware (key << 16 | prefix); "
                    "use prefix_upper=1 or keybits=32"
                )
            elif base >> 16 != prefix or top >> 16 != prefix:
                raise ValueError(
                    f"keys {base}..{top} do not all have upper half-word 0x{prefix:04x}"
                )
        self.keybits = keybits
        self.base = base
        self.prefix = prefix
        self.prefix_upper = prefix_upper
        self.timestamp = timestamp
        self.tick_us = tick_us
        self.tag = tag
        self.sdp = sdp
        self._limit = neurons if neurons else 0x100000000 - base

        etype = KEY_16_BIT if keybits == 16 else KEY_32_BIT
        flags = etype << TYPE_SHIFT | tag
        header_len = 2
        extra = b""
        self._prefix_bits = 0
        if prefix is not None:
            flags |= FLAG_P | (FLAG_F if prefix_upper else 0)
            extra = _U16.pack(prefix)
            header_len += 2
            self._prefix_bits = prefix << 16 if prefix_upper else prefix
        self._ts_struct = None
        if timestamp:
            flags |= FLAG_D | FLAG_T
            self._ts_struct = _U16 if keybits == 16 else _U32
            header_len += self._ts_struct.size
        self._flags = flags
        self._extra = extra
        self._key_code = "H" if keybits == 16 else "I"
        self._per_message = min(MAX_COUNT, (MAX_MESSAGE - header_len) // KEY_BYTES[etype])
        self._wrap = b""
        if sdp is not None:
            x, y, p = sdp
            self._wrap = SDP_PAD + SDP_HEADER.pack(
                SDP_REPLY_NOT_EXPECTED, 0, 1 << 5 | p, 0, y, x, 0, 0
            )

    # -- decoding ------------------------------------------------------------------------

    def decode(self, data: bytes | bytearray | memoryview) -> SpikeFrame:
        """Decode one data message to neuron ids ``key - base``; payloads and times are dropped."""
        keys = self.keys(data)
        base = self.base
        if isinstance(keys, tuple):
            return SpikeFrame(0, NO_SEQ, 0, np.array(
                [k - base for k in keys] if base else keys, dtype=np.uint32))
        if base:
            keys -= base
        return SpikeFrame(0, NO_SEQ, 0, keys.astype(np.uint32))

    def keys(self, data: bytes | bytearray | memoryview) -> tuple[int, ...] | np.ndarray:
        """The routing keys of one data message, range-checked as ``decode`` does.

        A tuple for small messages (plain Python is faster there), else an int64 array.
        """
        n = len(data)
        pos = 0
        if self.sdp is not None:
            if n < SDP_WRAP:
                raise DecodeError("truncated", f"{n} bytes cannot hold the SDP wrapper")
            if data[0] or data[1]:
                raise DecodeError("bad_magic", "SDP-wrapped message must start with two 0 bytes")
            pos = SDP_WRAP
        if n - pos < 2:
            raise DecodeError("truncated", f"{n - pos} bytes cannot hold the EIEIO header")
        count, flags = _COUNT_FLAGS.unpack_from(data, pos)
        pos += 2
        if flags & (FLAG_P | FLAG_F) == FLAG_F:
            raise DecodeError("malformed", "EIEIO command message, not spike data")
        etype = (flags >> TYPE_SHIFT) & 3
        prefix = 0
        if flags & FLAG_P:
            if n < pos + 2:
                raise DecodeError("truncated", "header announces a key prefix it does not hold")
            prefix = _U16.unpack_from(data, pos)[0]
            if flags & FLAG_F:
                prefix <<= 16
            pos += 2
        if flags & FLAG_D:
            pos += KEY_BYTES[etype]
        need = pos + count * ELEMENT_BYTES[etype]
        if n != need:
            raise DecodeError(
                "truncated" if n < need else "oversized",
                f"{count} elements of type {etype} need {need} bytes, got {n}",
            )
        if count == 0:
            return ()
        code = "H" if etype < KEY_32_BIT else "I"
        words = count * 2 if etype & 1 else count  # payload types interleave key, payload
        if count <= _SMALL:
            keys = _list_struct(code, words).unpack_from(data, pos)
            if etype & 1:
                keys = keys[::2]
            if prefix:
                keys = tuple(k | prefix for k in keys)
            self._check_range(min(keys), max(keys))
            return keys
        raw = np.frombuffer(data, dtype="<" + ("u2" if code == "H" else "u4"),
                            count=words, offset=pos)
        if etype & 1:
            raw = raw[::2]
        ids = raw.astype(np.int64)
        if prefix:
            ids |= prefix
        self._check_range(int(ids.min()), int(ids.max()))
        return ids

    def _check_range(self, lo: int, hi: int) -> None:
        if lo < self.base:
            raise DecodeError("id_out_of_range", f"key {lo} is below base {self.base}")
        if hi - self.base >= self._limit:
            raise DecodeError(
                "id_out_of_range", f"key {hi} is neuron {hi - self.base}, not below {self._limit}"
            )

    # -- encoding ------------------------------------------------------------------------

    def encode(self, frame: SpikeFrame) -> list[bytes]:
        """Encode to messages of at most 256 bytes (127 16-bit or 63 32-bit keys without extras)."""
        ids = frame.ids
        n = len(ids)
        head_extra = self._extra
        if self._ts_struct is not None:
            tick = frame.t_sent_ns // (self.tick_us * 1000)
            head_extra += self._ts_struct.pack(tick & (0xFFFF if self.keybits == 16 else _M32))
        if n == 0:
            return [self._wrap + _COUNT_FLAGS.pack(0, self._flags) + head_extra]
        if n <= _SMALL:  # always fits one message: at least 62 keys do
            values = self._values_small(ids.tolist())
            return [b"".join((self._wrap, _COUNT_FLAGS.pack(n, self._flags), head_extra,
                              _list_struct(self._key_code, n).pack(*values)))]
        body = self._values_array(ids)
        width = 2 if self.keybits == 16 else 4
        per = self._per_message
        out = []
        for i in range(0, n, per):
            count = min(per, n - i)
            out.append(
                self._wrap + _COUNT_FLAGS.pack(count, self._flags) + head_extra
                + body[i * width:(i + count) * width]
            )
        return out

    def _values_small(self, ids: list[int]) -> list[int]:
        if self.neurons and max(ids) >= self.neurons:
            raise ValueError(f"id {max(ids)} out of range for {self.neurons} neurons")
        keys = [self.base + i for i in ids]
        if max(keys) > 0xFFFFFFFF:
            raise ValueError(f"key {max(keys)} does not fit 32 bits")
        if self.keybits == 16:
            if self.prefix is None:
                if max(keys) > 0xFFFF:
                    raise ValueError(f"key {max(keys)} does not fit 16 bits without a prefix")
                return keys
            if any(k >> 16 != self.prefix for k in keys):
                raise ValueError(f"a key lies outside prefix 0x{self.prefix:04x}")
            return [k & 0xFFFF for k in keys]
        pbits = self._prefix_bits
        if pbits and any(k & pbits != pbits for k in keys):
            raise ValueError(f"a key lacks the prefix bits 0x{pbits:08x}")
        return keys

    def _values_array(self, ids: IdArray) -> bytes:
        if self.neurons and int(ids.max()) >= self.neurons:
            raise ValueError(f"id {int(ids.max())} out of range for {self.neurons} neurons")
        keys = ids.astype(np.int64) + self.base
        if int(keys.max()) > 0xFFFFFFFF:
            raise ValueError(f"key {int(keys.max())} does not fit 32 bits")
        if self.keybits == 16:
            if self.prefix is None:
                if int(keys.max()) > 0xFFFF:
                    raise ValueError(f"key {int(keys.max())} does not fit 16 bits")
            elif np.any((keys >> 16) != self.prefix):
                raise ValueError(f"a key lies outside prefix 0x{self.prefix:04x}")
            return (keys & 0xFFFF).astype("<u2").tobytes()
        pbits = self._prefix_bits
        if pbits and np.any((keys & pbits) != pbits):
            raise ValueError(f"a key lacks the prefix bits 0x{pbits:08x}")
        return keys.astype("<u4").tobytes()

    # -- pass-through --------------------------------------------------------------------

    def _signature(self) -> tuple[object, ...]:
        return (self.neurons, self.keybits, self.base, self.prefix, self.prefix_upper,
                self.timestamp, self.tick_us, self.tag, self.sdp)

    def reframe(
        self, data: bytes | bytearray | memoryview, source: int, seq: int, t_sent_ns: int
    ) -> list[bytes]:
        """EIEIO has no source, seq or send time to rewrite: the message goes out unchanged."""
        return [bytes(data)]

    def same_wire(self, other: Codec) -> bool:
        """True only for an EIEIO codec with identical options (the message passes unchanged)."""
        return isinstance(other, EieioCodec) and other._signature() == self._signature()

