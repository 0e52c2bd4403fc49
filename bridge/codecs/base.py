"""The Codec contract and option parsing shared by every datagram codec.

Codecs are sans-IO: bytes in, SpikeFrames out and back. No module under ``bridge.codecs`` may
import socket, serial, select or time, or read a clock: callers pass times in.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from bridge.frame import SpikeFrame


@dataclass(frozen=True)
class Option:
    """One codec query option: how to parse its string, its default, and one line of help."""

    parse: Callable[[str], Any]
    default: Any
    help: str


def parse_bool(text: str) -> bool:
    """Parse a URL boolean (1/0, true/false, yes/no, on/off); ValueError otherwise."""
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected a boolean (1/0, true/false, yes/no, on/off), got {text!r}")


def parse_options(options: Mapping[str, Option], given: Mapping[str, str]) -> dict[str, Any]:
    """Parse URL option strings against ``options``; KeyError names an unknown key."""
    kwargs: dict[str, Any] = {}
    for name, text in given.items():
        spec = options.get(name)
        if spec is None:
            raise KeyError(name)
        try:
            kwargs[name] = spec.parse(text)
        except ValueError as exc:
            raise ValueError(f"{name}={text!r}: {exc}") from None
    return kwargs


class Codec(ABC):
    """A datagram codec for one endpoint: ``decode`` one datagram, ``encode`` one frame.

    ``decode`` raises only DecodeError for bad peer bytes. ``encode`` raises ValueError when the
    caller passes a frame the format cannot carry (our misuse, not the peer's).
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
    ) -> Codec:
        """Build from URL query strings: KeyError (unknown option), ValueError (bad value)."""
        kwargs = parse_options(cls.OPTIONS, options)
        if keys:
            kwargs["keys"] = keys
        return cls(neurons, **kwargs)

    @abstractmethod
    def decode(self, data: bytes | bytearray | memoryview) -> SpikeFrame:
        """Decode one datagram to a frame, or raise DecodeError with a drop reason."""

    @abstractmethod
    def encode(self, frame: SpikeFrame) -> list[bytes]:
        """Encode one frame to one or more datagrams (several when it must be split).

        Formats with sequence numbers give the datagrams ``frame.seq``, ``frame.seq + 1``, ...;
        the caller advances its counter by ``len(result)``.
        """

    # The relay's pass-through path. A datagram whose spikes go unchanged to an output with an
    # identical codec is validated and re-headed instead of decoded to ids and encoded again.
    # Formats override these when they can do it without building an id array.

    def peek(self, data: bytes | bytearray | memoryview) -> tuple[int, int, int, int]:
        """Validate exactly as ``decode`` does; return (source, seq, t_sent_ns, spike count)."""
        frame = self.decode(data)
        return frame.source, frame.seq, frame.t_sent_ns, len(frame.ids)

    def reframe(
        self, data: bytes | bytearray | memoryview, source: int, seq: int, t_sent_ns: int
    ) -> list[bytes]:
        """Re-emit a datagram that ``peek`` accepted under a new header (source, seq, time)."""
        frame = self.decode(data)
        frame.source, frame.seq, frame.t_sent_ns = source, seq, t_sent_ns
        return self.encode(frame)

    def same_wire(self, other: Codec) -> bool:
        """True when ``relay_to(other, ...)`` can carry a datagram ``peek`` accepted, unchanged
        but for the header (or, for event formats, re-laid event for event with its times)."""
        return type(other) is type(self) and other.neurons == self.neurons

    def relay_to(
        self, other: Codec, data: bytes | bytearray | memoryview, source: int, seq: int,
        t_sent_ns: int,
    ) -> list[bytes]:
        """The datagrams ``other`` sends for a datagram that ``peek`` accepted (``same_wire``)."""
        return self.reframe(data, source, seq, t_sent_ns)
