"""Reading frames from one opened endpoint for the command-line tools (record, top).

Decodes datagrams or stream chunks with the endpoint's codec; undecodable input is counted
by drop reason, never raised. Not for the daemon's loop, which admits frames itself.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

from bridge.endpoints import Endpoint
from bridge.errors import DecodeError
from bridge.frame import SpikeFrame


class Intake:
    """Drains an endpoint and yields its frames; ``drops`` counts bad input by reason."""

    def __init__(self, ep: Endpoint, codec: Any, stream: bool) -> None:
        self.ep = ep
        self.codec = codec
        self.stream = stream
        self.drops: Counter[str] = Counter()
        self.datagrams = 0

    def frames(self, limit: int = 1024) -> Iterator[SpikeFrame]:
        """Frames from up to ``limit`` pending datagrams or chunks (returns when drained)."""
        for _ in range(limit):
            got = self.ep.recv()
            if got is None:
                return
            self.datagrams += 1
            data = got[0]
            if not self.stream:
                try:
                    frame = self.codec.decode(data)
                except DecodeError as exc:
                    self.drops[exc.reason] += 1
                    continue
                yield frame
                continue
            self.codec.feed(bytes(data))
            while True:
                try:
                    frame = self.codec.next_frame()
                except DecodeError as exc:
                    self.drops[exc.reason] += 1
                    continue
                if frame is None:
                    break
                yield frame

    def dropped(self) -> int:
        """Undecodable input plus the kernel's own receive drops."""
        return sum(self.drops.values()) + self.ep.overflow_drops()
