"""The StreamCodec contract: sans-IO decoders and encoders for byte-stream links (serial).

A byte stream has no datagram boundaries, so a stream codec is fed chunks and hands back
frames as they complete, in the style of h11: ``feed(bytes)``, then ``next_frame()`` until it
returns None ("need more data"). Control traffic (acknowledgements, heartbeats, ASCII replies)
is demultiplexed here and never returned as a SpikeFrame. No module under ``bridge.codecs``
may import socket, serial, select or time, or read a clock: callers pass times in.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

from bridge.codecs.base import Option, parse_options
from bridge.frame import SpikeFrame

__all__ = ["StreamCodec", "parse_options"]


class StreamCodec(ABC):
    """A stream decoder/encoder for one serial link.

    ``next_frame`` returns the next SpikeFrame, None when it needs more bytes, or raises
    DecodeError for one bad frame that it has already consumed: calling it again continues
    after the bad bytes. ``encode`` raises ValueError when the caller passes a frame the
    format cannot carry (our misuse, not the peer's).
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    OPTIONS: ClassVar[Mapping[str, Option]] = {}
    needs_neurons: ClassVar[bool] = True
    has_seq: ClassVar[bool] = False

    def __init__(self, neurons: int) -> None:
        if neurons < 0:
            raise ValueError(f"neurons must be >= 0, got {neurons}")
        self.neurons = neurons

    @classmethod
    def from_options(
        cls, neurons: int, options: Mapping[str, str], *, keys: tuple[bytes, ...] = ()
    ) -> StreamCodec:
        """Build from URL query strings; KeyError for an unknown option, ValueError a bad value.

        ``keys`` is accepted for symmetry with datagram codecs; serial formats carry no auth
        tag, so a key is refused.
        """
        if keys:
            raise ValueError(f"the {cls.name} format carries no auth tag: key= does not apply")
        return cls(neurons, **parse_options(cls.OPTIONS, options))

    @abstractmethod
    def feed(self, data: bytes | bytearray | memoryview, now_ns: int | None = None) -> None:
        """Append received bytes; ``now_ns`` (monotonic, optional) is their arrival time."""

    @abstractmethod
    def next_frame(self) -> SpikeFrame | None:
        """The next complete spike frame, or None when more bytes are needed."""

    @abstractmethod
    def next_control(self) -> Any | None:
        """The next control message (command reply, ack, heartbeat), or None."""

    @abstractmethod
    def encode(self, frame: SpikeFrame) -> bytes:
        """Bytes that carry ``frame`` to the device (the output direction)."""

    def check_role(self, role: str) -> None:  # noqa: B027 - optional hook, accepts both
        """ValueError when this configuration cannot serve as an input or output (``role``)."""

    def greeting(self, role: str) -> bytes:
        """Bytes to write to the device after every open and reopen (empty by default)."""
        return b""

    @abstractmethod
    def reset(self) -> None:
        """Forget partial input after the link was cut (reopen); counters are kept."""

    @abstractmethod
    def buffered(self) -> int:
        """Bytes fed but not yet consumed (a partial frame)."""
