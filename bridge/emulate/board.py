"""A small spiking board emulator speaking the ``board`` format over a pty.

It decodes the host's frames (counting the bad ones, reported in its heartbeats), answers
commands with acknowledgements, and in ``echo`` mode sends every received spike frame straight
back, while in ``integrate`` mode it runs leaky integrate-and-fire neurons driven by the
received spikes and sends their spikes. It can also fire spontaneously at a set rate. After
each plug-in (power-on) its sequence numbers restart and its first frame carries FLAG_RESET.
Runs on its own thread (see device.py).
"""

from __future__ import annotations

import struct
from collections import deque
from typing import Any

import numpy as np

from bridge.codecs.board import (
    ACK_BAD_ARGS,
    ACK_OK,
    ACK_UNKNOWN,
    CMD_MODE,
    CMD_PARAM,
    CMD_PING,
    CMD_RESET,
    CMD_START,
    CMD_STOP,
    FLAG_OVERFLOW,
    FLAG_RESET,
    MODE_ECHO,
    MODE_INTEGRATE,
    BoardCodec,
    BoardCommand,
)
from bridge.emulate.device import MAX_SLEEP_NS, Emulator
from bridge.errors import DecodeError
from bridge.frame import IdArray

MODES = {"echo": MODE_ECHO, "integrate": MODE_INTEGRATE}
_PARAM = struct.Struct("<Bi")
PARAMS = ("threshold", "weight", "tau_ms")  # CMD_PARAM index -> name; values are x1000


class BoardEmulator(Emulator):
    """A spiking board on a pty: echo or integrate, acks, heartbeats, spontaneous spikes."""

    kind = "board"

    def __init__(
        self, *, mode: str = "echo", neurons: int = 256, rate: float = 0.0,
        heartbeat_ms: float = 100.0, threshold: float = 1.0, weight: float = 0.6,
        tau_ms: float = 20.0, autostart: bool = False, **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if mode not in MODES or not 0 < neurons <= 0x10000 or rate < 0 or heartbeat_ms < 0:
            raise ValueError("mode echo|integrate, neurons 1..65536, rate and heartbeat >= 0")
        self.mode = MODES[mode]
        self.neurons = neurons
        self.rate = rate
        self.heartbeat_ns = int(heartbeat_ms * 1e6)
        self.threshold, self.weight, self.tau_ms = threshold, weight, tau_ms
        self.autostart = autostart
        self.rx = BoardCodec()
        self.tx = BoardCodec()
        self.v = np.zeros(neurons)
        self.started = autostart
        self.rx_frames = 0        # host frames decoded (spikes and commands)
        self.rx_errors = 0        # host frames that failed to decode
        self.spikes_in = 0
        self.spikes_out = 0       # spikes queued for the host
        self.tx_dropped = 0       # spikes lost to a full FIFO (reported in heartbeats)
        self.commands: list[BoardCommand] = []
        self.arrivals: deque[tuple[int, int]] = deque(maxlen=100_000)  # (now_ns, spikes)
        self._boot_ns = 0
        self._last_ns = 0
        self._next_hb = 0
        self._carry = 0.0
        self._rate_ns = 0

    def on_plug(self, now_ns: int) -> None:
        """Power-on: fresh sequence numbers, FLAG_RESET on the first frame."""
        self.rx = BoardCodec()
        self.tx = BoardCodec()
        self.tx.tx_flags = FLAG_RESET
        self.started = self.autostart
        self.v[:] = 0.0
        self._boot_ns = self._last_ns = self._rate_ns = now_ns
        self._next_hb = now_ns + self.heartbeat_ns

    def on_quiesce(self, now_ns: int) -> None:
        """Stop sending spikes (as a stop command would); heartbeats go on."""
        self.started = False

    def board_us(self, now_ns: int) -> int:
        """The board's µs clock since power-on."""
        return (now_ns - self._boot_ns) // 1000

    # -- host to board --------------------------------------------------------------------

    def on_host(self, data: bytes, now_ns: int) -> None:
        """Decode the host's frames; answer commands, react to spikes."""
        self.rx.feed(data)
        while True:
            try:
                frame = self.rx.next_frame()
            except DecodeError:
                self.rx_errors += 1
                continue
            while (ctl := self.rx.next_control()) is not None:
                if isinstance(ctl, BoardCommand):
                    self.rx_frames += 1
                    self._command(ctl, now_ns)
            if frame is None:
                return
            self.rx_frames += 1
            self.spikes_in += len(frame.ids)
            self.arrivals.append((now_ns, len(frame.ids)))
            self._spikes(frame.ids.astype(np.int64), now_ns)

    def _command(self, cmd: BoardCommand, now_ns: int) -> None:
        self.commands.append(cmd)
        status = ACK_OK
        if cmd.opcode == CMD_START:
            self.started = True
        elif cmd.opcode == CMD_STOP:
            self.started = False
        elif cmd.opcode == CMD_MODE:
            if len(cmd.args) == 1 and cmd.args[0] in MODES.values():
                self.mode = cmd.args[0]
            else:
                status = ACK_BAD_ARGS
        elif cmd.opcode == CMD_PARAM:
            if len(cmd.args) == _PARAM.size and cmd.args[0] < len(PARAMS):
                index, value = _PARAM.unpack(cmd.args)
                setattr(self, PARAMS[index], value / 1000)
            else:
                status = ACK_BAD_ARGS
        elif cmd.opcode not in (CMD_PING, CMD_RESET):
            status = ACK_UNKNOWN
        self._send(self.tx.encode_ack(cmd.seq, cmd.opcode, status, t0_us=self.board_us(now_ns)))
        if cmd.opcode == CMD_PING:
            self._heartbeat(now_ns)
        elif cmd.opcode == CMD_RESET:
            self.on_plug(now_ns)

    def _spikes(self, ids: np.ndarray, now_ns: int) -> None:
        if self.mode == MODE_ECHO:
            self.fire(ids, now_ns)
            return
        self._leak(now_ns)
        np.add.at(self.v, ids % self.neurons, self.weight)
        fired = np.flatnonzero(self.v >= self.threshold)
        if fired.size:
            self.v[fired] = 0.0
            self.fire(fired, now_ns)

    def _leak(self, now_ns: int) -> None:
        dt_ms = (now_ns - self._last_ns) / 1e6
        self._last_ns = now_ns
        if dt_ms > 0 and self.tau_ms > 0:
            self.v *= np.exp(-dt_ms / self.tau_ms)

    # -- board to host --------------------------------------------------------------------

    def _send(self, data: bytes) -> bool:
        return self.emit(data)

    def fire(self, ids: np.ndarray | IdArray, now_ns: int) -> None:
        """Send spikes to the host (only once started); a full FIFO drops and flags them."""
        if not self.started:
            return
        seq, flags = self.tx.tx_seq, self.tx.tx_flags
        frame = self.tx.encode_spikes(np.asarray(ids, dtype=np.int64) % 0x10000,
                                      t0_us=self.board_us(now_ns))
        if self._send(frame):
            self.spikes_out += len(ids)
        else:
            # Never sent, so no sequence gap on the wire: the loss is reported by the
            # overflow flag on the next frame and by the heartbeat's tx_dropped instead.
            self.tx.tx_seq = seq
            self.tx.tx_flags = flags | FLAG_OVERFLOW
            self.tx_dropped += len(ids)

    def _heartbeat(self, now_ns: int) -> None:
        self._send(self.tx.encode_heartbeat(self.rx_frames, self.rx_errors, self.tx_dropped,
                                            t0_us=self.board_us(now_ns)))

    def on_tick(self, now_ns: int) -> int:
        """Heartbeats, spontaneous spikes and leak."""
        if not self.port.plugged:
            return MAX_SLEEP_NS
        wait = MAX_SLEEP_NS
        if self.heartbeat_ns:
            if now_ns >= self._next_hb:
                self._heartbeat(now_ns)
                self._next_hb = now_ns + self.heartbeat_ns
            wait = min(wait, self._next_hb - now_ns)
        if self.rate > 0 and self.started:
            due = self.rate * (now_ns - self._rate_ns) / 1e9 + self._carry
            self._rate_ns = now_ns
            n = int(due)
            self._carry = due - n
            if n:
                self.fire(self.rng.integers(0, self.neurons, n), now_ns)
            wait = min(wait, 1_000_000)
        else:
            self._rate_ns = now_ns
        if self.mode == MODE_INTEGRATE:
            self._leak(now_ns)
        else:
            self._last_ns = now_ns
        return max(wait, 0)

    def counters(self) -> dict[str, int]:
        """Device counters plus frames, spikes and errors."""
        return {**super().counters(), "rx_frames": self.rx_frames, "rx_errors": self.rx_errors,
                "spikes_in": self.spikes_in, "spikes_out": self.spikes_out,
                "tx_dropped": self.tx_dropped}
