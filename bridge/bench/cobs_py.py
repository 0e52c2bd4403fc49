"""The hand-written COBS that the board codec used before it took the ``cobs`` package.

Kept only so that ``spikebridge bench serial --codecs-only`` can time both implementations in
one run, and the tests can check that they produce the same bytes. The codec must never import
it: bridge/codecs/board.py uses the ``cobs`` package.
"""

from __future__ import annotations

from bridge.codecs.board import BoardCodec
from bridge.errors import DecodeError


def cobs_encode(data: bytes | bytearray) -> bytes:
    """Consistent-overhead byte stuffing: the result holds no 0x00 byte."""
    out = bytearray()
    parts = bytes(data).split(b"\x00")
    last = len(parts) - 1
    for i, part in enumerate(parts):
        full_block = False
        while len(part) >= 254:
            out.append(0xFF)
            out += part[:254]
            part = part[254:]
            full_block = True
        if i == last and full_block and not part:
            break  # a final full block needs no empty block after it
        out.append(len(part) + 1)
        out += part
    return bytes(out)


def cobs_decode(data: bytes | bytearray | memoryview) -> bytes:
    """Undo ``cobs_encode``; DecodeError("bad_cobs") when a block overruns or holds a zero."""
    raw = bytes(data)
    out = bytearray()
    i, n = 0, len(raw)
    while i < n:
        code = raw[i]
        end = i + code
        if code == 0 or end > n:
            raise DecodeError("bad_cobs", f"COBS block at {i} claims {code} bytes, {n - i} left")
        block = raw[i + 1:end]
        if 0 in block:
            raise DecodeError("bad_cobs", "zero byte inside a COBS block")
        out += block
        i = end
        if code < 0xFF and i < n:
            out.append(0)
    return bytes(out)


class PyCobsBoardCodec(BoardCodec):
    """The board codec with the hand-written COBS in place of the ``cobs`` package."""

    _stuff = staticmethod(cobs_encode)
    _unstuff = staticmethod(cobs_decode)
