"""An eDVS4337 / mini-eDVS emulator: the UART command set and an event stream at a set rate.

It answers ``R`` (reset and banner), ``??`` (help), ``E+``/``E-``, ``!E<n>`` (event format,
numbered per firmware variant), ``!ET`` (timestamp reset), ``!U0``/``!U1`` (echo off/on),
``!B<n>=<v>`` and ``!BF`` (biases), and records PushBot-style motor and LED commands
(``!M...``, ``!L...``, ``!P...``). Events come from a pattern or a recording, with a µs
device clock; bursts separated by idle gaps let that clock wrap unseen. The sync polarity and
the ``!E`` numbering are the firmware variant. Runs on its own thread (see device.py).
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

from bridge.codecs.edvs import TIMESTAMP_BYTES, VARIANTS, event_bytes
from bridge.emulate.device import MAX_SLEEP_NS, Emulator
from bridge.emulate.patterns import Pattern, make_pattern

TICK_NS = 1_000_000  # event generation granularity while streaming
MAX_COMMAND = 64
HELP = (
    "E+/E- event streaming on/off", "!E0 !E2 !E3 !E4 event format (2, 4, 5, 6 bytes)",
    "!ET timestamp reset", "!U0/!U1 echo off/on", "!Bn=v bias n, !BF flush biases",
    "!M+ !M- !MV0=v !MV1=v motors, !L0 !L1 !L2=f LED", "R reset, ?? this help",
)


class EdvsEmulator(Emulator):
    """An eDVS event sensor on a pty."""

    kind = "edvs"

    def __init__(
        self, *, pattern: str | Pattern = "bar", rate: float = 10_000.0, sync: int = 1,
        variant: str = "standard", burst_ms: float = 0.0, idle_ms: float = 0.0,
        autostart: bool = False, **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if sync not in (0, 1) or variant not in VARIANTS:
            raise ValueError("sync must be 0 or 1 and variant one of " + ", ".join(VARIANTS))
        if rate < 0 or burst_ms < 0 or idle_ms < 0:
            raise ValueError("rate, burst_ms and idle_ms must be >= 0")
        self.pattern = make_pattern(pattern, rng=self.rng) if isinstance(pattern, str) else pattern
        self.rate = rate
        self.sync = sync
        self.variant = variant
        self._formats = {n: size for size, n in VARIANTS[variant].items()}
        self.burst_ns = int(burst_ms * 1e6)
        self.idle_ns = int(idle_ms * 1e6)
        self.autostart = autostart
        self.commands: deque[str] = deque(maxlen=1024)  # every command line received
        self.motors: dict[str, str] = {}
        self.biases: dict[int, int] = {}
        self.bias_flushes = 0
        self.events_sent = 0     # events queued for the host
        self.first_ts_us = -1    # device µs stamp (before truncation) of the first event sent
        self.last_ts_us = -1     # ... and of the last one
        self.events_dropped = 0  # events lost to a full FIFO (the sensor's own overflow)
        self.bursts: deque[int] = deque(maxlen=100_000)  # when each burst's first events went out
        self._burst = -1
        self._line = bytearray()
        self._reset_state(0)

    def _reset_state(self, now_ns: int) -> None:
        self.streaming = self.autostart
        self.evsize = 2
        self.echo = True
        self._ts_origin = now_ns
        self._last_gen = now_ns
        self._carry = 0.0
        self._line.clear()

    def on_plug(self, now_ns: int) -> None:
        """Power-on: defaults, then the banner."""
        self._reset_state(now_ns)
        self._reply(self.banner())

    def on_quiesce(self, now_ns: int) -> None:
        """Stop the event stream (as ``E-`` would)."""
        self.streaming = False

    def banner(self) -> str:
        """What ``R`` prints."""
        return (f"EDVS-4337 emulator (spikebridge), firmware variant {self.variant}, "
                f"sync {self.sync}")

    def _reply(self, *lines: str) -> None:
        for line in lines:
            self.emit(f"{line}\n".encode("ascii"))

    def device_us(self, now_ns: int) -> int:
        """The sensor's µs clock (before truncation to the timestamp width)."""
        return (now_ns - self._ts_origin) // 1000

    # -- host to device -------------------------------------------------------------------

    def on_host(self, data: bytes, now_ns: int) -> None:
        """Echo each byte while echo is on, and run each complete command line."""
        start = 0
        for i, byte in enumerate(data):
            if byte in (0x0A, 0x0D):
                if self.echo:
                    self.emit(data[start:i + 1])
                start = i + 1
                if self._line:
                    self.command(self._line.decode("ascii", "replace"), now_ns)
                    self._line.clear()
            elif len(self._line) < MAX_COMMAND:
                self._line.append(byte)
        if self.echo and start < len(data):
            self.emit(data[start:])

    def command(self, line: str, now_ns: int) -> None:
        """Run one command line."""
        self.commands.append(line)
        if line == "R":
            self._reset_state(now_ns)
            self._reply(self.banner())
        elif line == "??":
            self._reply(*HELP)
        elif line in ("E+", "E-"):
            self.streaming = line == "E+"
            self._last_gen = now_ns
            self._burst = -1
        elif line.startswith("!ET"):
            self._ts_origin = now_ns
        elif line.startswith("!E") and line[2:].isdigit() and int(line[2:]) in self._formats:
            self.evsize = self._formats[int(line[2:])]
        elif line in ("!U0", "!U1"):
            self.echo = line == "!U1"
        elif line == "!BF":
            self.bias_flushes += 1
        elif line.startswith("!B") and "=" in line:
            num, _, value = line[2:].partition("=")
            if num.isdigit() and value.isdigit():
                self.biases[int(num)] = int(value)
            else:
                self._reply(f"?{line}")
        elif line[:2] in ("!M", "!L", "!P"):
            name, _, value = line.partition("=")
            self.motors[name] = value
        else:
            self._reply(f"?{line}")

    # -- device to host -------------------------------------------------------------------

    def _active_ns(self, t0_ns: int, t1_ns: int) -> int:
        """Streaming time within [t0, t1): all of it, or the overlap with the bursts."""
        if not self.idle_ns:
            return t1_ns - t0_ns
        period, burst = self.burst_ns + self.idle_ns, self.burst_ns

        def cumulative(t: int) -> int:
            k, r = divmod(t - self.started_ns, period)
            return k * burst + min(r, burst)

        return cumulative(t1_ns) - cumulative(t0_ns)

    def _burst_index(self, now_ns: int) -> int:
        return (now_ns - self.started_ns) // (self.burst_ns + self.idle_ns) if self.idle_ns else 0

    def on_tick(self, now_ns: int) -> int:
        """Generate the events due since the last tick at ``rate`` (only inside bursts).

        A late tick still produces every event of the streaming time it covers, so the
        emulator's own scheduling delays never thin out a burst.
        """
        if not self.streaming or not self.port.plugged or self.rate <= 0:
            self._last_gen = now_ns
            return MAX_SLEEP_NS
        elapsed = now_ns - self._last_gen
        if elapsed < TICK_NS:
            return TICK_NS - elapsed
        active = self._active_ns(self._last_gen, now_ns)
        if not active:
            self._last_gen = now_ns
            self._carry = 0.0
            return TICK_NS
        due = self.rate * active / 1e9 + self._carry
        n = int(due)
        self._carry = due - n
        if n:
            burst = self._burst_index(now_ns)  # window k: burst [kP, kP+B), then silence
            if burst != self._burst:
                self.bursts.append(now_ns)
                self._burst = burst
            self._generate(n, self._last_gen, now_ns)
        self._last_gen = now_ns
        return TICK_NS

    def _generate(self, n: int, t0_ns: int, t1_ns: int) -> None:
        size = self.evsize
        fit = min(n, self.fifo_room() // size)
        self.events_dropped += n - fit
        if fit <= 0:
            return
        x, y, p = self.pattern.events(fit)
        ts = None
        if TIMESTAMP_BYTES[size]:
            start, stop = self.device_us(t0_ns), self.device_us(t1_ns)
            ts = start + (np.arange(fit, dtype=np.int64) * max(stop - start, 0)) // fit
            if self.first_ts_us < 0:
                self.first_ts_us = int(ts[0])
            self.last_ts_us = int(ts[-1])
        self.emit(event_bytes(x, y, p, ts, evsize=size, sync=self.sync))
        self.events_sent += fit

    def counters(self) -> dict[str, int]:
        """Device counters plus events sent and dropped."""
        return {**super().counters(), "events_sent": self.events_sent,
                "events_dropped": self.events_dropped, "commands": len(self.commands)}
