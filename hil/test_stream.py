"""Endpoint-level scenarios: the serial endpoint and stream codecs against a device.

No daemon here: the port is opened and decoded exactly as the daemon does it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from bridge.codecs.board import CMD_PING, BoardAck, BoardCodec, BoardHeartbeat
from bridge.emulate import EdvsEmulator
from bridge.frame import SpikeFrame
from hil.support import Device, open_stream, read_stream, report, stop_stream

Make = Callable[..., Device]


@pytest.mark.parametrize("evsize", [2, 4, 5, 6])
def test_edvs_event_formats_arrive_whole(device: Make, evsize: int) -> None:
    dev = device("edvs", rate=50_000, pattern="random")
    ep, codec = open_stream(dev.url(evsize=evsize, neurons=32768))
    try:
        res = read_stream(ep, codec, seconds=0.4)
        if dev.emulator is not None:
            emu = dev.emulator
            assert isinstance(emu, EdvsEmulator)
            stop_stream(emu)
            read_stream(ep, codec, quiet=0.2, result=res)
            # Every event the sensor sent was decoded; nothing needed a resync.
            assert res.spikes == emu.events_sent > 0
            assert res.errors == [] and emu.events_dropped == 0
        else:
            assert res.spikes > 0 and not codec.mismatch
        if evsize > 2:
            assert res.ts_backwards == 0  # unwrapped: monotonic across 16/24-bit wraps
        report("edvs_format", evsize=evsize, events=res.spikes, drops=len(res.errors))
    finally:
        ep.close()


def test_edvs_replies_are_demultiplexed_while_streaming(device: Make) -> None:
    dev = device("edvs", rate=20_000, pattern="random")
    ep, codec = open_stream(dev.url(neurons=32768))
    try:
        res = read_stream(ep, codec, seconds=0.1)
        assert ep.send(b"??\n")
        read_stream(ep, codec, seconds=0.2, result=res)
        assert res.spikes > 0 and res.errors == []
        assert any(isinstance(c, str) and "help" in c for c in res.controls), res.controls
    finally:
        ep.close()


def test_edvs_timestamps_unwrap_across_idle_gaps(device: Make) -> None:
    dev = device("edvs", rate=20_000, pattern="blink", burst_ms=5, idle_ms=120)
    emu = dev.need_emulator("go silent on demand")
    assert isinstance(emu, EdvsEmulator)
    ep, codec = open_stream(dev.url(evsize=4, neurons=32768))
    try:
        res = read_stream(ep, codec, seconds=0.7)
        stop_stream(emu)
        read_stream(ep, codec, quiet=0.2, result=res)
        assert res.spikes == emu.events_sent > 0 and res.errors == []
        # The 16-bit µs clock wraps twice in each 120 ms gap; with arrival times the decoder
        # counts every wrap: the span from the first event to the last is the device's, to
        # the µs. (Not the absolute time: the wraps before the first event are unknowable.)
        assert res.ts_backwards == 0
        assert res.last_ts - res.first_ts == emu.last_ts_us - emu.first_ts_us > 500_000
    finally:
        ep.close()


def test_board_echo_round_trip(device: Make) -> None:
    dev = device("board", heartbeat_ms=50)
    rx, codec = open_stream(dev.url(neurons=4096), "in")
    tx, _ = open_stream(dev.url(neurons=4096), "out")
    host = BoardCodec(4096)
    rng = np.random.default_rng(5)
    sent: list[int] = []
    try:
        res = read_stream(rx, codec, seconds=0.05, keep_ids=True)
        for _ in range(200):
            ids = np.unique(rng.integers(0, 4096, rng.integers(1, 40)))
            sent += ids.tolist()
            assert tx.send(host.encode(SpikeFrame.of(ids)))
        assert tx.send(host.encode_command(CMD_PING))
        read_stream(rx, codec, seconds=0.2, result=res, keep_ids=True)
        assert res.ids == sent and res.errors == [] and codec.lost == 0
        assert any(isinstance(c, BoardAck) for c in res.controls)
        assert any(isinstance(c, BoardHeartbeat) for c in res.controls)
        report("board_echo", frames=res.frames, spikes=res.spikes)
    finally:
        tx.close()
        rx.close()


def test_board_integrate_mode(device: Make) -> None:
    dev = device("board", mode="integrate", heartbeat_ms=0)
    dev.need_emulator("switch to a known neuron model")
    rx, codec = open_stream(dev.url(neurons=256), "in")
    tx, _ = open_stream(dev.url(neurons=256), "out")
    host = BoardCodec(256)
    try:
        read_stream(rx, codec, seconds=0.05)
        for _ in range(2):  # weight 0.6, threshold 1: the second volley fires both
            assert tx.send(host.encode(SpikeFrame.of([3, 4])))
        res = read_stream(rx, codec, seconds=0.1, keep_ids=True)
        assert res.ids == [3, 4]
    finally:
        tx.close()
        rx.close()


