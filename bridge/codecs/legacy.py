"""The BrianConnectUDP dense format: 8 address bytes (bits, MSB first), then one byte per neuron.

Sans-IO: no socket, serial or time import. The format has no sequence number and no send time,
so loss cannot be seen on the wire: decoded frames carry ``seq=NO_SEQ`` and ``t_sent_ns=0``.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from bridge.codecs.base import Codec
from bridge.errors import DecodeError
from bridge.frame import NO_SEQ, SpikeFrame

ADDRESS_BYTES = 8
_BITS = b"\x00\x01"
_SPARSE_ENCODE = 32  # below this many spikes a Python loop beats numpy's call overhead


def address_bytes(node: int) -> bytes:
    """The 8-byte address field for ``node`` (0..255), one byte per bit, MSB first."""
    if not 0 <= node <= 255:
        raise ValueError(f"legacy node address must be 0..255, got {node}")
    return _ADDRESS[node]


_ADDRESS: list[bytes] = [bytes((n >> (7 - i)) & 1 for i in range(8)) for n in range(256)]
_ADDRESS_OF: dict[bytes, int] = {a: n for n, a in enumerate(_ADDRESS)}


class LegacyCodec(Codec):
    """Dense 0/1 byte-per-neuron frames of exactly ``8 + neurons`` bytes."""

    name: ClassVar[str] = "legacy"
    summary: ClassVar[str] = "BrianConnectUDP dense frame: 8 address bytes, 1 byte per neuron"

    def __init__(self, neurons: int) -> None:
        super().__init__(neurons)
        if neurons == 0:
            raise ValueError("the legacy format needs neurons= (its frames are dense)")
        self._size = ADDRESS_BYTES + neurons
        self._blank = bytes(self._size)

    def _check(self, data: bytes | bytearray | memoryview) -> tuple[bytes, int]:
        n = len(data)
        if n != self._size:
            raise DecodeError(
                "truncated" if n < self._size else "oversized",
                f"legacy frame is {n} bytes, expected {self._size}",
            )
        raw = data if isinstance(data, bytes) else bytes(data)
        source = _ADDRESS_OF.get(raw[:ADDRESS_BYTES])
        if source is None:
            raise DecodeError("malformed", "address bytes must each be 0 or 1")
        if raw.translate(None, _BITS):
            raise DecodeError("malformed", "neuron bytes must each be 0 or 1")
        return raw, source

    def decode(self, data: bytes | bytearray | memoryview) -> SpikeFrame:
        """Decode one dense frame; every byte must be 0 or 1."""
        raw, source = self._check(data)
        dense = np.frombuffer(raw, dtype=np.uint8, offset=ADDRESS_BYTES)
        return SpikeFrame(source, NO_SEQ, 0, np.flatnonzero(dense).astype(np.uint32))

    def encode(self, frame: SpikeFrame) -> list[bytes]:
        """Encode to one dense frame; ids must lie below ``neurons``."""
        ids = frame.ids
        buf = bytearray(self._blank)
        buf[:ADDRESS_BYTES] = address_bytes(frame.source)
        if len(ids) < _SPARSE_ENCODE:
            for i in ids.tolist():
                if i >= self.neurons:
                    raise ValueError(f"id {i} out of range for {self.neurons} neurons")
                buf[ADDRESS_BYTES + i] = 1
        else:
            if int(ids.max()) >= self.neurons:
                raise ValueError(f"id {int(ids.max())} out of range for {self.neurons} neurons")
            np.frombuffer(buf, dtype=np.uint8)[ADDRESS_BYTES + ids.astype(np.intp)] = 1
        return [bytes(buf)]

    def peek(self, data: bytes | bytearray | memoryview) -> tuple[int, int, int, int]:
        """Validate as ``decode`` does; return (source, NO_SEQ, 0, spike count)."""
        # The relay's hot path: _check inlined.
        if len(data) != self._size:
            self._check(data)  # raises the precise DecodeError
        raw = bytes(data)
        source = _ADDRESS_OF.get(raw[:ADDRESS_BYTES])
        if source is None or raw.translate(None, _BITS):
            self._check(raw)
        return source, NO_SEQ, 0, raw.count(1, ADDRESS_BYTES)  # type: ignore[return-value]

    def reframe(
        self, data: bytes | bytearray | memoryview, source: int, seq: int, t_sent_ns: int
    ) -> list[bytes]:
        """Rewrite only the address: legacy frames carry no sequence number or time."""
        return [_ADDRESS[source & 0xFF] + bytes(data[ADDRESS_BYTES:])]
