"""Turning recorded frames back into datagrams for a live peer (replay's encoding step).

A replayed frame goes out with the send time of the moment it is sent, so one-way latency
stays meaningful, and with sequence numbers that keep rising per source when a recording is
looped, so the receiver's duplicate and replay checks accept every lap. Pure: the caller
passes the wall time; nothing here sends.
"""

from __future__ import annotations

from typing import Any

from bridge.frame import NO_SEQ, SpikeFrame


class Resender:
    """Encodes frames with ``codec``: fresh send times; sequence numbers kept or renewed."""

    __slots__ = ("_next", "codec", "encode_errors", "renumber", "stream")

    def __init__(self, codec: Any, *, renumber: bool = False, stream: bool = False) -> None:
        self.codec = codec
        self.renumber = renumber  # True: every frame gets the next number of its source
        self.stream = stream      # stream codecs (serial) encode one frame to one bytes object
        self.encode_errors = 0    # frames the format could not carry (ids beyond neurons=)
        self._next: dict[int, int] = {}

    def datagrams(self, frame: SpikeFrame, wall_ns: int) -> list[bytes]:
        """The datagrams of ``frame`` as sent now; [] (counted) when the format cannot carry it."""
        src = frame.source
        nxt = self._next.get(src, 0)
        seq = nxt if self.renumber or frame.seq == NO_SEQ else frame.seq
        try:
            out = self.codec.encode(SpikeFrame(src, seq, wall_ns, frame.ids))
        except ValueError:
            self.encode_errors += 1
            return []
        data: list[bytes] = [out] if self.stream else out
        self._next[src] = max(nxt, seq + len(data))
        return data
