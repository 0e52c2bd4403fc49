"""The ``edvs`` serial format: the eDVS4337 / mini-eDVS UART event stream and its commands.

Events are ``1yyyyyyy pxxxxxxx`` followed by 0, 2, 3 or 4 big-endian timestamp bytes (µs).
The top bit of the first byte marks the start of an event (its value, the sync polarity, is
1 on most firmware; some firmware sends 0). ASCII command replies (lines ending in LF) arrive
on the same line and are demultiplexed into a control queue. The decoder locks onto the
stream only after several consecutive aligned events; bytes skipped while hunting are one
counted drop per noise run. Timestamps are unwrapped; across idle gaps longer than the wrap
period the caller's arrival times (``feed(data, now_ns)``) count the wraps no event showed.

Commands (the output direction) are ASCII lines: ``E+``/``E-`` start and stop the stream,
``!E<n>`` picks the event format, ``!U0`` turns the echo off, ``!B<n>=<v>`` and ``!BF`` set
and flush biases, ``R`` resets. Output spikes map to lines by a configured table, so the
motors and LEDs of a PushBot-style robot can be driven from a network's output.

Sans-IO: no socket, serial or time import, no clock reads.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Mapping
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from bridge.codecs.base import Option, parse_bool
from bridge.codecs.stream import StreamCodec
from bridge.errors import DecodeError
from bridge.frame import NO_SEQ, SpikeFrame

SENSOR_SIZE = 128
TIMESTAMP_BYTES = {2: 0, 4: 2, 5: 3, 6: 4}  # event size -> timestamp bytes
# The number n of the ``!En`` command that selects each event size, per firmware numbering.
VARIANTS: dict[str, dict[int, int]] = {
    "standard": {2: 0, 4: 2, 5: 3, 6: 4},  # !E1 is a variable-length delta format, unused here
    "compact": {2: 0, 4: 1, 5: 2, 6: 3},
}
POLARITIES = ("both", "merge", "on", "off")
MAX_LINE = 160         # a printable run longer than this without LF is not a reply
MAX_BATCH = 1 << 16    # events per returned frame
CONTROL_QUEUE = 256
CHECK_BYTES = 4096     # hunting this long without ever locking means a format mismatch
SHORT_LOCKS = 16       # this many locks in a row lost within 4 x lock events: a mismatch too
LAG_SLACK_DIV = 8      # idle gaps: an event may be stamped up to period / 8 after min arrival lag
LAG_DRIFT = 10_000     # the smallest arrival lag ages 1 µs per 10 ms (100 ppm clock drift)
_PRINTABLE_RUN = re.compile(rb"[\x20-\x7e\t\r]*")
_COMMAND_TEXT = re.compile(r"[\x20-\x7e]+")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(f"must be >= 1, got {value}")
    return value


def _evsize(text: str) -> int:
    value = int(text)
    if value not in TIMESTAMP_BYTES:
        raise ValueError("event size must be 2, 4, 5 or 6 bytes (0, 2, 3 or 4 timestamp bytes)")
    return value


def _sync(text: str) -> int:
    if text.strip() not in ("0", "1"):
        raise ValueError("sync polarity is 1 (top bit set on the first byte) or 0")
    return int(text)


def _choice(choices: tuple[str, ...]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}")
        return text
    return parse


def _command(text: str) -> str:
    text = text.strip()
    if not _COMMAND_TEXT.fullmatch(text):
        raise ValueError(f"a command is one line of printable ASCII, got {text!r}")
    return text


def parse_biases(text: str) -> dict[int, int]:
    """``N:VALUE,N:VALUE`` -> {N: VALUE}; ValueError when malformed."""
    out: dict[int, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        num, sep, value = part.partition(":")
        if not sep:
            raise ValueError(f"bias {part!r} is not N:VALUE")
        n, v = int(num), int(value)
        if not 0 <= n <= 63 or not 0 <= v < 1 << 24:
            raise ValueError(f"bias {part!r}: N is 0..63 and VALUE 0..2**24-1")
        out[n] = v
    return out


def parse_commands(text: str) -> dict[int, str]:
    """``ID:COMMAND;ID:COMMAND`` -> {ID: COMMAND} (the output spike -> command table)."""
    out: dict[int, str] = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        num, sep, cmd = part.partition(":")
        if not sep:
            raise ValueError(f"mapping {part!r} is not ID:COMMAND")
        out[int(num)] = _command(cmd)
    return out


def parse_lines(text: str) -> tuple[str, ...]:
    """``CMD;CMD`` -> (CMD, CMD)."""
    return tuple(_command(p) for p in text.split(";") if p.strip())


def event_bytes(
    x: npt.ArrayLike, y: npt.ArrayLike, p: npt.ArrayLike, ts_us: npt.ArrayLike | None = None,
    *, evsize: int = 2, sync: int = 1,
) -> bytes:
    """Events as the sensor sends them (the device side; emulators and tests use it).

    ``ts_us`` is taken modulo the timestamp width; it is required when ``evsize`` > 2.
    """
    if evsize not in TIMESTAMP_BYTES or sync not in (0, 1):
        raise ValueError("evsize must be 2/4/5/6 and sync 0/1")
    xs = np.asarray(x, dtype=np.int64)
    n = len(xs)
    out = np.empty((n, evsize), dtype=np.uint8)
    out[:, 0] = (np.asarray(y, dtype=np.int64) & 0x7F) | (sync << 7)
    out[:, 1] = (xs & 0x7F) | ((np.asarray(p, dtype=np.int64) & 1) << 7)
    tsb = TIMESTAMP_BYTES[evsize]
    if tsb:
        if ts_us is None:
            raise ValueError(f"{evsize}-byte events need timestamps")
        t = np.asarray(ts_us, dtype=np.int64)
        for k in range(tsb):
            out[:, 2 + k] = (t >> (8 * (tsb - 1 - k))) & 0xFF
    return out.tobytes()


class EdvsCodec(StreamCodec):
    """Stream codec of the eDVS UART protocol; see the module docstring.

    Decoded frames hold one batch of events (everything complete that was fed), with
    ``source=0``, ``seq=NO_SEQ`` and ``t_sent_ns=0`` (sensor time is not host time). The
    unwrapped µs timestamps of the last frame's events are ``timestamps_us`` (empty for 2-byte
    events). Pixel (x, y) and polarity p map to neuron ids by the layout options: with
    ``scale`` s and ``W = ceil(width / s)``, ``pixel = (y // s) * W + x // s``, and the id is
    ``2 * pixel + p`` (polarity=both) or ``pixel`` (merge, on, off).
    """

    name: ClassVar[str] = "edvs"
    summary: ClassVar[str] = "eDVS4337 / mini-eDVS UART events and ASCII commands"
    OPTIONS: ClassVar[Mapping[str, Option]] = {
        "evsize": Option(_evsize, 2, "bytes per event: 2, or 4/5/6 with a 16/24/32-bit µs time"),
        "sync": Option(_sync, 1, "top bit of an event's first byte: 1 (most firmware) or 0"),
        "variant": Option(_choice(tuple(VARIANTS)), "standard",
                          "!E numbering: standard (!E0/!E2/!E3/!E4) or compact (!E0..!E3)"),
        "width": Option(_positive, SENSOR_SIZE, "sensor width in pixels"),
        "height": Option(_positive, SENSOR_SIZE, "sensor height in pixels"),
        "scale": Option(_positive, 1, "pool s x s pixels into one neuron"),
        "polarity": Option(_choice(POLARITIES), "both",
                           "both (id = 2*pixel + p), merge (id = pixel), on or off (one only)"),
        "lock": Option(_positive, 8, "consecutive aligned events needed to lock on"),
        "biases": Option(parse_biases, {}, "biases set on open: N:VALUE,... (!BN=VALUE, !BF)"),
        "commands": Option(parse_commands, {}, "output spikes to commands: ID:CMD;ID:CMD"),
        "init": Option(parse_lines, (), "extra command lines sent after each open: CMD;CMD"),
        "stream": Option(parse_bool, True, "start the event stream (E+) when an input opens"),
    }
    needs_neurons: ClassVar[bool] = False

    def __init__(
        self, neurons: int = 0, *, evsize: int = 2, sync: int = 1, variant: str = "standard",
        width: int = SENSOR_SIZE, height: int = SENSOR_SIZE, scale: int = 1,
        polarity: str = "both", lock: int = 8, biases: Mapping[int, int] | None = None,
        commands: Mapping[int, str] | None = None, init: tuple[str, ...] = (),
        stream: bool = True,
    ) -> None:
        super().__init__(neurons)
        if evsize not in TIMESTAMP_BYTES or sync not in (0, 1) or variant not in VARIANTS:
            raise ValueError("evsize must be 2/4/5/6, sync 0/1 and variant a known numbering")
        if polarity not in POLARITIES or min(width, height, scale, lock) < 1:
            raise ValueError("bad layout: polarity, width, height, scale and lock")
        if width > SENSOR_SIZE or height > SENSOR_SIZE:
            raise ValueError(f"eDVS addresses are 7-bit: width and height <= {SENSOR_SIZE}")
        self.evsize = evsize
        self.ts_bytes = TIMESTAMP_BYTES[evsize]
        self.sync = sync
        self.variant = variant
        self.width, self.height, self.scale = width, height, scale
        self.polarity = polarity
        self.lock = lock
        self.biases = dict(biases or {})
        self.commands = {int(k): _command(v) for k, v in (commands or {}).items()}
        self.init = tuple(_command(c) for c in init)
        self.stream = stream
        self._cols = -(-width // scale)
        rows = -(-height // scale)
        self.population = self._cols * rows * (2 if polarity == "both" else 1)
        self.sensor_neurons = self.population  # the default neurons= (endpoint_spec)
        self._period = 1 << (8 * self.ts_bytes)
        self._buf = bytearray()
        self._pos = 0
        self._locked = False
        self._ever_locked = False
        self._garbage = 0          # bytes skipped in the current hunt, not yet reported
        self._hunted = 0           # bytes skipped since the last lock (format check)
        self._since_lock = 0       # events decoded since the lock was established
        self._short_locks = 0      # consecutive locks that were lost almost at once
        self._pending: DecodeError | None = None
        self._controls: deque[str] = deque()
        self._now: int | None = None
        self._last_now: int | None = None
        self._ts_last = -1         # last raw timestamp
        self._ts_epoch = 0         # wraps so far
        self._ts_full = 0          # last unwrapped timestamp
        self._lag_us: int | None = None  # smallest arrival - device time seen (idle gaps)
        self.timestamps_us: npt.NDArray[np.int64] = np.empty(0, dtype=np.int64)
        self.mismatch = False      # never locked within CHECK_BYTES: evsize/sync look wrong
        # Counters, read by the engine and tests.
        self.events = 0            # events delivered in frames
        self.filtered = 0          # events of the polarity the layout leaves out (by config)
        self.out_of_range = 0      # events outside width x height or beyond neurons (dropped)
        self.lines = 0             # ASCII reply lines seen
        self.controls_dropped = 0  # reply lines pushed out of a full control queue
        self.resyncs = 0           # times an established lock was lost
        self.skipped_bytes = 0     # bytes discarded while hunting for the lock
        self.ts_wraps = 0          # timestamp wraps unwrapped (including idle-gap ones)
        self.unmapped = 0          # output spikes with no command in the table

    # -- decoding -------------------------------------------------------------------------

    @property
    def locked(self) -> bool:
        """True while the decoder is aligned to event boundaries."""
        return self._locked

    def feed(self, data: bytes | bytearray | memoryview, now_ns: int | None = None) -> None:
        """Append received bytes; ``now_ns`` (monotonic) lets idle-gap wraps be counted."""
        if self._pos and self._pos == len(self._buf):
            self._buf.clear()
            self._pos = 0
        self._buf += data
        if now_ns is not None:
            self._now = now_ns

    def buffered(self) -> int:
        """Bytes fed but not yet consumed."""
        return len(self._buf) - self._pos

    def reset(self) -> None:
        """Forget partial input and the lock (the link was cut); timestamps stay monotonic."""
        self._buf.clear()
        self._pos = 0
        self._locked = False
        self._garbage = 0
        self._pending = None

    def next_control(self) -> str | None:
        """The oldest ASCII reply line (without its line end), or None."""
        return self._controls.popleft() if self._controls else None

    def next_frame(self) -> SpikeFrame | None:
        """The next batch of events, None for more bytes, or DecodeError for one bad run."""
        if self._pending is not None:
            exc, self._pending = self._pending, None
            raise exc
        while True:
            if self._pos >= len(self._buf):
                self._compact()
                return None
            if self._locked:
                frame = self._events()
                if frame is not None:
                    return frame
                if len(self._buf) - self._pos < self.evsize:
                    self._compact()
                    return None
                # An event should start here but the sync bit is wrong: a reply, or noise.
                text = self._text()
                if text is None:
                    return None
                if text:
                    continue
                self._lost_lock()
            else:
                if self.sync == 0:
                    # Replies and events both start with a clear top bit here: events win
                    # when a lock can start at the head (as drivers that ignore replies do),
                    # so a byte such as LF (y = 10) is never taken for the end of a reply.
                    if len(self._buf) - self._pos < self.evsize * self.lock:
                        return None
                    if self._aligned_at_head():
                        self._locked = self._ever_locked = True
                        self._hunted = self._since_lock = 0
                        self._report_garbage()
                        continue
                text = self._text()
                if text is None:
                    return None
                if text:
                    self._report_garbage()
                    continue
            if not self._hunt():
                self._compact()
                if self._garbage >= CHECK_BYTES:
                    self._report_garbage()
                return None
            self._report_garbage()

    def _lost_lock(self) -> None:
        self._locked = False
        self.resyncs += 1
        if self._since_lock < 4 * self.lock:
            self._short_locks += 1
            if self._short_locks >= SHORT_LOCKS and not self.mismatch:
                self._flag_mismatch(f"{SHORT_LOCKS} locks in a row were lost at once")
        else:
            self._short_locks = 0

    def _flag_mismatch(self, why: str) -> None:
        self.mismatch = True
        self._pending = DecodeError(
            "malformed",
            f"{why}: evsize={self.evsize} sync={self.sync} do not match the device's events",
        )

    def _compact(self) -> None:
        if self._pos > 4096 or self._pos == len(self._buf):
            del self._buf[:self._pos]
            self._pos = 0

    def _report_garbage(self) -> None:
        skipped, self._garbage = self._garbage, 0
        if not skipped:
            if self._pending is not None:
                exc, self._pending = self._pending, None
                raise exc
            return
        self.skipped_bytes += skipped
        if not self._ever_locked and self._hunted >= CHECK_BYTES and not self.mismatch:
            self.mismatch = True
            raise DecodeError(
                "malformed",
                f"no event lock in {self._hunted} bytes: evsize={self.evsize} sync={self.sync} "
                "do not match the device's events",
            )
        raise DecodeError("truncated" if skipped < self.evsize else "malformed",
                          f"{skipped} bytes skipped to regain event alignment")

    def _text(self) -> bool | None:
        """Consume one reply line at the read position: True, False (not text), None (wait)."""
        buf, pos = self._buf, self._pos
        end = _PRINTABLE_RUN.match(buf, pos).end()  # type: ignore[union-attr]
        if end - pos > MAX_LINE:
            return False
        if end == len(buf):
            return None
        if buf[end] != 0x0A:
            return False
        line = buf[pos:end].decode("ascii").rstrip("\r")
        self._pos = end + 1
        if line:
            self.lines += 1
            if len(self._controls) >= CONTROL_QUEUE:
                self._controls.popleft()
                self.controls_dropped += 1
            self._controls.append(line)
        return True

    def _aligned_at_head(self) -> bool:
        buf, pos, size = self._buf, self._pos, self.evsize
        return all(buf[pos + k * size] >> 7 == self.sync for k in range(self.lock))

    def _hunt(self) -> bool:
        """Find ``lock`` consecutive aligned events; skip (and count) what cannot start one."""
        size, span = self.evsize, self.evsize * self.lock
        avail = len(self._buf) - self._pos
        candidates = avail - span + 1
        if candidates <= 0:
            return False
        raw = np.frombuffer(bytes(self._buf[self._pos:]), dtype=np.uint8)
        marks = (raw >> 7) == self.sync
        ok = marks[:candidates].copy()
        for k in range(1, self.lock):
            ok &= marks[k * size:k * size + candidates]
        first = int(ok.argmax())
        if not ok[first]:
            self._skip(candidates)
            return False
        self._skip(first)
        self._locked = self._ever_locked = True
        self._hunted = 0
        self._since_lock = 0
        return True

    def _skip(self, n: int) -> None:
        self._pos += n
        self._garbage += n
        self._hunted += n

    def _events(self) -> SpikeFrame | None:
        """Decode aligned events up to the first misaligned one (None when there are none)."""
        while True:
            size = self.evsize
            n = min((len(self._buf) - self._pos) // size, MAX_BATCH)
            if n == 0:
                return None
            start = self._pos
            ev = np.frombuffer(bytes(self._buf[start:start + n * size]), dtype=np.uint8)
            ev = ev.reshape(n, size)
            bad = (ev[:, 0] >> 7) != self.sync
            if bad.any():
                n = int(bad.argmax())
                if n == 0:
                    return None
                ev = ev[:n]
            self._pos = start + n * size
            self._since_lock += n
            frame = self._batch(ev)
            if frame is not None:
                return frame
            if self._pending is not None:
                exc, self._pending = self._pending, None
                raise exc

    def _batch(self, ev: npt.NDArray[np.uint8]) -> SpikeFrame | None:
        y = ev[:, 0] & 0x7F
        x = ev[:, 1] & 0x7F
        p = ev[:, 1] >> 7
        ts = self._unwrap(ev) if self.ts_bytes else None
        keep = (x < self.width) & (y < self.height)
        pixel = (y // self.scale).astype(np.uint32) * self._cols + x // self.scale
        ids = pixel * 2 + p if self.polarity == "both" else pixel
        if self.neurons:
            keep &= ids < self.neurons
        bad = len(keep) - int(np.count_nonzero(keep))
        if self.polarity in ("on", "off"):
            wanted = p == (1 if self.polarity == "on" else 0)
            self.filtered += int(np.count_nonzero(keep & ~wanted))
            keep &= wanted
        if bad:
            self.out_of_range += bad
            self._pending = DecodeError(
                "id_out_of_range", f"{bad} events outside {self.width}x{self.height} or neurons"
            )
        if not keep.all():
            ids = ids[keep]
            if ts is not None:
                ts = ts[keep]
        if not len(ids):
            return None
        self.events += len(ids)
        self.timestamps_us = ts if ts is not None else np.empty(0, dtype=np.int64)
        return SpikeFrame(0, NO_SEQ, 0, ids.astype(np.uint32))

    def _unwrap(self, ev: npt.NDArray[np.uint8]) -> npt.NDArray[np.int64]:
        t = ev[:, 2].astype(np.int64)
        for col in range(3, self.evsize):
            t = (t << 8) | ev[:, col]
        period = self._period
        epoch = self._ts_epoch
        if self._ts_last >= 0:
            gap_us = None
            if self._now is not None and self._last_now is not None:
                gap_us = (self._now - self._last_now) // 1000
            if gap_us is not None and gap_us > period // 2:
                # An idle gap: the device clock may have wrapped several times unseen. Bytes
                # never arrive before they are stamped, and a late read only makes them look
                # older: the chunk's last event is stamped at most the smallest arrival lag
                # seen so far (plus a slack) before this arrival. Take the latest epoch that
                # keeps it there: right while this read is less than a period (less the
                # slack) late, whatever the lateness of the reads before the gap.
                assert self._now is not None and self._lag_us is not None
                latest = self._now // 1000 - self._lag_us + period // LAG_SLACK_DIV
                wraps_in = int(np.count_nonzero(t[1:] < t[:-1])) if len(t) > 1 else 0
                guess = (latest - int(t[-1])) // period - wraps_in
                epoch = max(guess, epoch + (1 if t[0] < self._ts_last else 0))
            elif t[0] < self._ts_last:
                epoch += 1
        wraps = np.zeros(len(t), dtype=np.int64)
        if len(t) > 1:
            np.cumsum(t[1:] < t[:-1], out=wraps[1:])
            # A real clock steps back once per wrap period; bytes of the next event taken
            # for a timestamp (a wrong evsize) step back about every other event.
            if len(t) >= 64 and int(wraps[-1]) * 4 > len(t) and not self.mismatch:
                self._flag_mismatch("timestamps step back in most events")
        full = t + (epoch + wraps) * period
        last_epoch = epoch + int(wraps[-1])
        self.ts_wraps += last_epoch - self._ts_epoch
        self._ts_epoch = last_epoch
        self._ts_last = int(t[-1])
        self._ts_full = int(full[-1])
        if self._now is not None:
            # The smallest arrival lag (host µs - device µs), aged by LAG_DRIFT so that a
            # device clock slower than the host's cannot leave it behind.
            now_us = self._now // 1000
            lag = now_us - self._ts_full
            if self._lag_us is not None and self._last_now is not None:
                aged = self._lag_us + (self._now - self._last_now) // 1000 // LAG_DRIFT
                lag = min(lag, aged)
            self._lag_us = lag
        self._last_now = self._now
        return full

    # -- encoding -------------------------------------------------------------------------

    def encode(self, frame: SpikeFrame) -> bytes:
        """Command lines for the spiking ids that the ``commands`` table maps (each id once).

        ValueError when no table is configured: an eDVS output without one cannot say anything.
        """
        if not self.commands:
            raise ValueError("an edvs output needs commands=ID:COMMAND;... to map spikes")
        lines = []
        for i in np.unique(frame.ids).tolist():
            cmd = self.commands.get(i)
            if cmd is None:
                self.unmapped += 1
            else:
                lines.append(cmd)
        return "".join(f"{c}\n" for c in lines).encode("ascii")

    def check_role(self, role: str) -> None:
        """An output needs a ``commands`` table: without one no spike could be sent."""
        if role == "out" and not self.commands:
            raise ValueError("an edvs output needs commands=ID:COMMAND;... to map spikes "
                             "to command lines")

    def command_lines(self, role: str) -> list[str]:
        """The command lines of ``greeting``, in order."""
        lines = ["!U0"]
        if role == "in":
            lines.append(f"!E{VARIANTS[self.variant][self.evsize]}")
            lines += [f"!B{n}={v}" for n, v in sorted(self.biases.items())]
            if self.biases:
                lines.append("!BF")
        lines += self.init
        if role == "in" and self.stream:
            lines.append("E+")
        return lines

    def greeting(self, role: str) -> bytes:
        """Echo off, event format, biases, extra init lines, then ``E+`` (inputs)."""
        return "".join(f"{c}\n" for c in self.command_lines(role)).encode("ascii")
