"""The board emulator: commands and acks, echo and integrate, heartbeats, overflow, restarts."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from bridge.codecs.board import (
    ACK_BAD_ARGS,
    ACK_OK,
    ACK_UNKNOWN,
    CMD_MODE,
    CMD_PARAM,
    CMD_PING,
    CMD_START,
    FLAG_RESET,
    MODE_INTEGRATE,
    BoardAck,
    BoardCodec,
    BoardHeartbeat,
    cobs_decode,
)
from bridge.emulate.board import BoardEmulator
from bridge.errors import DecodeError
from bridge.frame import SpikeFrame

pytestmark = pytest.mark.integration  # the board sits behind a real pty
MS = 1_000_000


@pytest.fixture
def board() -> Iterator[BoardEmulator]:
    b = BoardEmulator(heartbeat_ms=0)
    b.plug(0)
    yield b
    b.stop()


def replies(b: BoardEmulator) -> tuple[list[SpikeFrame], list[object], BoardCodec]:
    """Decode (and consume) what the board queued for the host."""
    rx = BoardCodec()
    rx.feed(bytes(b.fifo))
    b.fifo.clear()
    frames = []
    while True:
        try:
            frame = rx.next_frame()
        except DecodeError as exc:  # pragma: no cover - would fail the assertions below
            raise AssertionError(f"the board sent a bad frame: {exc}") from exc
        if frame is None:
            break
        frames.append(frame)
    controls = []
    while (c := rx.next_control()) is not None:
        controls.append(c)
    return frames, controls, rx


def test_start_is_acked_and_echo_returns_spikes(board: BoardEmulator) -> None:
    host = BoardCodec()
    board.host_bytes(host.encode_spikes(np.array([1, 2])), 0)  # not started: no echo
    assert replies(board)[0] == []
    board.host_bytes(host.encode_command(CMD_START), 1 * MS)
    board.host_bytes(host.encode_spikes(np.array([5, 9, 300])), 2 * MS)
    frames, controls, _ = replies(board)
    assert controls == [BoardAck(0, FLAG_RESET, 1000, 0, CMD_START, ACK_OK)]
    assert [f.ids.tolist() for f in frames] == [[5, 9, 300]]
    assert board.spikes_in == 5 and board.spikes_out == 3


def test_integrate_mode_fires_after_enough_input(board: BoardEmulator) -> None:
    host = BoardCodec()
    board.host_bytes(host.encode_command(CMD_START), 0)
    board.host_bytes(host.encode_command(CMD_MODE, bytes((MODE_INTEGRATE,))), 0)
    board.host_bytes(host.encode_spikes(np.array([7])), 0)  # v = 0.6 < 1
    assert replies(board)[0] == []
    board.host_bytes(host.encode_spikes(np.array([7, 8])), 0)  # v[7] = 1.2: fires
    frames, _, _ = replies(board)
    assert [f.ids.tolist() for f in frames] == [[7]]
    # Leak: 100 ms later (5 time constants) one more input is not enough again.
    board.host_bytes(host.encode_spikes(np.array([8])), 100 * MS)
    assert replies(board)[0] == []


def test_ping_heartbeat_counts_bad_host_frames(board: BoardEmulator) -> None:
    host = BoardCodec()
    board.host_bytes(b"\x00\x05garbage\x00", 0)
    board.host_bytes(host.encode_command(CMD_PING), 3 * MS)
    _, controls, _ = replies(board)
    assert isinstance(controls[0], BoardAck) and controls[0].opcode == CMD_PING
    hb = controls[1]
    assert isinstance(hb, BoardHeartbeat) and hb.rx_errors == 1 and hb.rx_frames == 1
    assert hb.t0_us == 3000


def test_bad_and_unknown_commands(board: BoardEmulator) -> None:
    host = BoardCodec()
    board.host_bytes(host.encode_command(CMD_MODE, b"\x09"), 0)
    board.host_bytes(host.encode_command(0x7E), 0)
    board.host_bytes(host.encode_command(CMD_PARAM, struct.pack("<Bi", 0, 2500)), 0)
    _, controls, _ = replies(board)
    assert [c.status for c in controls if isinstance(c, BoardAck)] == [
        ACK_BAD_ARGS, ACK_UNKNOWN, ACK_OK]
    assert board.threshold == 2.5


def test_overflow_drops_are_flagged_without_a_sequence_gap() -> None:
    b = BoardEmulator(heartbeat_ms=0, fifo_bytes=200, autostart=True)
    try:
        b.plug(0)
        b.fire(np.arange(10), 0)           # fits
        b.fire(np.arange(100), 0)          # does not: dropped, flagged
        assert b.tx_dropped == 100
        raw = bytes(b.fifo)
        b.fifo.clear()
        b.fire(np.arange(3), 0)
        frames, _, rx = replies(b)
        assert rx.overflow_flags == 1 and rx.lost == 0
        first = cobs_decode(raw[1:raw.index(0, 1)])
        assert first[1] & FLAG_RESET and frames[0].ids.tolist() == [0, 1, 2]
        assert frames[0].seq == 1
    finally:
        b.stop()


def test_spontaneous_rate_and_heartbeats_with_injected_time() -> None:
    b = BoardEmulator(rate=2000, heartbeat_ms=10, autostart=True)
    try:
        b.plug(0)
        for t in range(1, 101):
            b.on_tick(t * MS)
        frames, controls, _ = replies(b)
        assert sum(len(f.ids) for f in frames) == 200  # 2000/s for 100 ms
        assert sum(isinstance(c, BoardHeartbeat) for c in controls) == 10
    finally:
        b.stop()


def test_cli_prints_the_path_and_counters(tmp_path: Path) -> None:
    link = tmp_path / "board"
    proc = subprocess.run(
        [sys.executable, "-m", "bridge", "emulate", "board", "--link", str(link),
         "--duration", "0.3", "--stats"],
        capture_output=True, text=True, timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == str(link)
    stats = json.loads(lines[-1])
    assert stats["unplugs"] == 0 and "rx_errors" in stats
    bad = subprocess.run([sys.executable, "-m", "bridge", "emulate", "board", "--flip", "2"],
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "flip" in bad.stderr
