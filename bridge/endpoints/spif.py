"""spif://HOST[:PORT] inputs: ask a SPIF board to stream its output to this socket.

A SPIF board's output pipe sends nothing until a host sends it commands on UDP 3332 (pipe 0;
3331 is pipe 1): 32-bit little-endian words, several per datagram, each a command in the
upper half-word and a value in the lower (SPIF's spif.h and spiffer.cpp's out_udp_listener):
``0x5ec4_0000 + bytes`` (SET_LEN, frame length), ``0x5ec2_0000 + us`` (SET_TICK, the longest
wait before a non-empty frame goes out), ``0x5ec0_0000`` (START), ``0x5ec1_0000`` (STOP).
spiffer streams to the address the last command came from. This endpoint sends SET_LEN,
SET_TICK and START in one datagram from its own socket, as sPyNNaker's
SPIFLiveSpikesConnection does, repeats that every ``repeat_s`` (our choice, not SPIF's: SPIF
keeps streaming without it, but a restarted spiffer forgets its client), and sends STOP on
close. Never blocks, never raises out of recv/send.
"""

from __future__ import annotations

import contextlib
import socket
import struct
from collections.abc import Mapping
from typing import ClassVar

from bridge.endpoints.base import Address, Endpoint
from bridge.endpoints.url import EndpointURL
from bridge.errors import EndpointError

SPIF_OUT_PORT = 3332  # spiffer: SPIFFER_UDP_PORT_BASE (3333) - (pipe + 1), pipe 0
OUT_START = 0x5EC00000
OUT_STOP = 0x5EC10000
OUT_SET_TICK = 0x5EC20000
OUT_SET_LEN = 0x5EC40000
_VALUE_MAX = 0xFFFF
MAX_DATAGRAM = 65536
_DONTWAIT = socket.MSG_DONTWAIT


def start_command(length_bytes: int, tick_us: int) -> bytes:
    """SET_LEN, SET_TICK, START in one datagram (SPIFLiveSpikesConnection's start)."""
    if not (0 < length_bytes <= _VALUE_MAX and 0 < tick_us <= _VALUE_MAX):
        raise ValueError("frame length and tick must be 1..65535")
    return struct.pack("<3I", OUT_SET_LEN + length_bytes, OUT_SET_TICK + tick_us, OUT_START)


def stop_command() -> bytes:
    """STOP, one word."""
    return struct.pack("<I", OUT_STOP)


def _number(url: EndpointURL, key: str, text: str, lo: float, hi: float) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not lo <= value <= hi:
        raise ValueError(f"{key} must be a number in {lo:g}..{hi:g}, got {text!r}")
    return value


class SpifEndpoint(Endpoint):
    """spif://HOST[:PORT]: starts a SPIF board's output stream and receives it."""

    scheme: ClassVar[str] = "spif"
    default_format: ClassVar[str] = "spif"
    KEYS: ClassVar[Mapping[str, str]] = {
        "bind": "local HOST[:PORT] the stream comes to (default 0.0.0.0:0)",
        "events": "events per SPIF frame (SET_LEN = 4 bytes each; default 32)",
        "tick_us": "longest wait before SPIF sends a non-empty frame, µs (default 500)",
        "repeat_s": "resend the start command every N s (default 5; 0: once)",
    }

    def __init__(self, url: EndpointURL, role: str, options: Mapping[str, str]) -> None:
        super().__init__(url, role, options)
        if role != "in":
            raise ValueError("spif:// is an input (a SPIF board's output stream)")
        target = url.target
        if ":" not in target or target.endswith("]"):  # no port given (IPv6 in brackets)
            target = f"{target}:{SPIF_OUT_PORT}"
        self.board = EndpointURL("udp", target).host_port()
        bind = options.get("bind", "0.0.0.0:0")
        self.bind_to = EndpointURL("udp", bind if ":" in bind else f"{bind}:0").host_port()
        self.events = int(_number(url, "events", options.get("events", "32"), 1, _VALUE_MAX // 4))
        self.tick_us = int(_number(url, "tick_us", options.get("tick_us", "500"), 1, _VALUE_MAX))
        self.repeat_ns = int(_number(url, "repeat_s", options.get("repeat_s", "5"), 0, 86400)
                             * 1e9)
        self.start = start_command(self.events * 4, self.tick_us)
        self.starts_sent = 0
        self._next_ns: int | None = None
        self._sock: socket.socket | None = None
        self._buf = bytearray(MAX_DATAGRAM)
        self._view = memoryview(self._buf)

    def open(self) -> None:
        """Bind the receiving socket and send the start command once."""
        family = socket.AF_INET6 if ":" in self.bind_to[0] else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            sock.bind(self.bind_to)
        except OSError as exc:
            sock.close()
            raise EndpointError(f"{self.url}: cannot bind {self.bind_to[0]}:{self.bind_to[1]}: "
                                f"{exc.strerror}") from None
        sock.setblocking(False)
        self._sock = sock
        self._send_start()

    def _send_start(self) -> None:
        if self._sock is None:
            return
        with contextlib.suppress(OSError):  # an unreachable board: the next repeat retries
            self._sock.sendto(self.start, self.board)
            self.starts_sent += 1

    def service(self, now_ns: int) -> None:
        """Repeat the start command every ``repeat_s``."""
        if self.repeat_ns <= 0:
            return
        if self._next_ns is None:
            self._next_ns = now_ns + self.repeat_ns
        elif now_ns >= self._next_ns:
            self._next_ns = now_ns + self.repeat_ns
            self._send_start()

    def fileno(self) -> int:
        """The receiving socket."""
        if self._sock is None:
            raise RuntimeError(f"{self.url} is not open")
        return self._sock.fileno()

    def recv(self) -> tuple[memoryview, Address] | None:
        """One datagram of the stream (valid until the next recv), or None."""
        if self._sock is None:
            return None
        try:
            n, addr = self._sock.recvfrom_into(self._buf, 0, _DONTWAIT)
        except OSError:
            return None
        return self._view[:n], addr

    def send(self, data: bytes) -> bool:
        """Inputs only: nothing is sent."""
        return False

    def close(self) -> None:
        """Send STOP, close the socket; idempotent."""
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.sendto(stop_command(), self.board)
            self._sock.close()
            self._sock = None

    def describe(self) -> str:
        """The URL and the board."""
        return f"{self.url} (SPIF output from {self.board[0]}:{self.board[1]})"
