"""Every injected fault, through the daemon: it survives, forwards, and counts the damage.

Each scenario runs ``spikebridge run --in serial:... --out udp://...`` as a subprocess against
an emulator with one fault switched on, then reads the daemon's metrics. The books must
balance on every input (received = accepted + dropped by reason).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from bridge.emulate import BoardEmulator, EdvsEmulator, Faults
from hil.support import Device, Monitor, RunningDaemon, metric, report, settle, stop_stream

EDVS_NEURONS = 32768


def books(m: dict[str, Any], endpoint: str = "in0") -> tuple[float, float, float]:
    """(frames received, accepted, dropped) of an input; asserts that they balance."""
    received = metric(m, "spikebridge_frames_received_total", endpoint=endpoint)
    accepted = metric(m, "spikebridge_frames_accepted_total", endpoint=endpoint)
    dropped = metric(m, "spikebridge_frames_dropped_total", endpoint=endpoint)
    assert received == accepted + dropped, (received, accepted, dropped)
    return received, accepted, dropped


def relay(daemon: Callable[..., RunningDaemon], monitor: Callable[[int], Monitor],
          url: str, neurons: int) -> tuple[RunningDaemon, Monitor]:
    mon = monitor(neurons)
    return daemon("--in", url, "--out", mon.url), mon


@dataclass
class Run:
    """One scenario's sensor, daemon, UDP monitor and final metrics."""

    sensor: EdvsEmulator
    daemon: RunningDaemon
    mon: Monitor
    m: dict[str, Any]


def edvs_run(
    device: Callable[..., Device], daemon: Callable[..., RunningDaemon],
    monitor: Callable[[int], Monitor], seconds: float = 1.0,
    url_params: dict[str, Any] | None = None, **emu: Any,
) -> Run:
    """Stream for ``seconds``, stop the sensor, drain, and return the daemon's metrics."""
    dev = device("edvs", **emu)
    sensor = dev.need_emulator("inject faults")
    assert isinstance(sensor, EdvsEmulator)
    d, mon = relay(daemon, monitor, dev.url(neurons=EDVS_NEURONS, **(url_params or {})),
                   EDVS_NEURONS)
    mon.collect_for(seconds)
    stop_stream(sensor)
    mon.collect(quiet=0.4)
    assert d.alive(), d.output
    return Run(sensor, d, mon, d.metrics())


def test_clean_stream_loses_nothing(device: Any, daemon: Any, monitor: Any) -> None:
    r = edvs_run(device, daemon, monitor, rate=50_000, pattern="random")
    books(r.m)
    received = metric(r.m, "spikebridge_spikes_received_total", endpoint="in0")
    assert received == r.sensor.events_sent > 0
    assert r.mon.spikes == received
    assert metric(r.m, "spikebridge_frames_dropped_total") == 0


def test_line_noise_is_counted(device: Any, daemon: Any, monitor: Any) -> None:
    faults = Faults(flip=1e-3, insert=5e-4, delete=5e-4, seed=1)
    r = edvs_run(device, daemon, monitor, rate=50_000, pattern="random", faults=faults)
    _, accepted, dropped = books(r.m)
    assert dropped > 0 and accepted > 0 and r.mon.spikes > 0
    noise = r.sensor.noise
    report("fault_noise", flipped=noise.flipped, inserted=noise.inserted,
           deleted=noise.deleted, dropped_frames=dropped, events=r.sensor.events_sent,
           forwarded=r.mon.spikes)


def test_byte_by_byte_writes_lose_nothing(device: Any, daemon: Any, monitor: Any) -> None:
    r = edvs_run(device, daemon, monitor, rate=2_000, pattern="random", faults=Faults(split=1))
    books(r.m)
    assert r.mon.spikes == r.sensor.events_sent > 0
    assert metric(r.m, "spikebridge_frames_dropped_total") == 0


def test_startup_garbage_is_counted_and_no_event_is_lost(
    device: Any, daemon: Any, monitor: Any
) -> None:
    r = edvs_run(device, daemon, monitor, rate=20_000, pattern="random",
                 faults=Faults(garbage=64, seed=2))
    _, _, dropped = books(r.m)
    assert r.sensor.garbage_sent == 64 and dropped >= 1
    # Garbage has no checksum to fail: it may decode as a few bogus events, but every real
    # event still arrives.
    assert r.mon.spikes >= r.sensor.events_sent > 0


def test_line_rate_pacing_overflows_the_sensor_not_the_daemon(
    device: Any, daemon: Any, monitor: Any
) -> None:
    # 20k events/s of 2 bytes need 400 kbaud; the line has 115.2 kbaud, and the sensor a
    # 4 KiB buffer.
    r = edvs_run(device, daemon, monitor, rate=20_000, pattern="random",
                 faults=Faults(baud=115_200), fifo_bytes=4096)
    books(r.m)
    assert r.sensor.events_dropped > 0  # the sensor's own buffer overflowed, as a real one does
    assert r.mon.spikes == r.sensor.events_sent  # everything that left the sensor arrived
    report("fault_baud", sent=r.sensor.events_sent, device_dropped=r.sensor.events_dropped)


def test_idle_gaps_with_timestamps(device: Any, daemon: Any, monitor: Any) -> None:
    r = edvs_run(device, daemon, monitor, seconds=1.2, rate=20_000, pattern="blink",
                 burst_ms=10, idle_ms=150, url_params={"evsize": 4})
    books(r.m)
    assert r.mon.spikes == r.sensor.events_sent > 0
    assert metric(r.m, "spikebridge_frames_dropped_total") == 0


@pytest.mark.parametrize(("emu", "url"), [
    ({"variant": "compact"}, {"evsize": 4}),  # !E2 means 5-byte events on this firmware
    ({"sync": 0}, {}),                         # the firmware clears the sync bit
])
def test_firmware_variant_mismatch_is_counted(
    device: Any, daemon: Any, monitor: Any, emu: dict[str, Any], url: dict[str, Any]
) -> None:
    r = edvs_run(device, daemon, monitor, rate=20_000, pattern="random", url_params=url, **emu)
    _, _, dropped = books(r.m)
    assert dropped > 0 and r.daemon.alive()
    assert metric(r.m, "spikebridge_frames_dropped_total", endpoint="in0",
                  reason="malformed") > 0


def test_unplug_mid_stream(device: Any, daemon: Any, monitor: Any) -> None:
    dev = device("edvs", rate=20_000, pattern="random")
    sensor = dev.need_emulator("unplug on demand")
    d, mon = relay(daemon, monitor, dev.url(neurons=EDVS_NEURONS), EDVS_NEURONS)
    mon.collect_for(0.3)
    before = mon.spikes
    sensor.request_unplug(down_ms=200)
    mon.collect_for(0.6)
    after = mon.collect_for(0.5)
    m = d.metrics()
    books(m)
    assert d.alive() and before > 0 and after > 0
    assert metric(m, "spikebridge_serial_reconnects_total") == 1
    assert metric(m, "spikebridge_endpoint_up", endpoint="in0") == 1


def test_board_noise_counts_crc_errors_and_gaps(device: Any, daemon: Any, monitor: Any) -> None:
    faults = Faults(flip=2e-4, seed=4)
    dev = device("board", rate=20_000, heartbeat_ms=20, faults=faults)
    board = dev.need_emulator("inject faults")
    assert isinstance(board, BoardEmulator)
    d, mon = relay(daemon, monitor, dev.url(neurons=256), 256)
    mon.collect_for(1.0)
    board.call(lambda _now: setattr(board, "started", False))
    settle(board)
    mon.collect(quiet=0.4)
    m = d.metrics()
    _, accepted, dropped = books(m)
    crc = metric(m, "spikebridge_serial_crc_errors_total")
    lost = metric(m, "spikebridge_frames_lost_total", endpoint="in0")
    assert crc > 0 and dropped >= crc and accepted > 0
    assert lost > 0  # frames dropped for a bad CRC leave sequence gaps, counted too
    report("fault_board_noise", flipped=board.noise.flipped, crc_errors=crc, dropped=dropped,
           lost=lost, spikes_out=board.spikes_out, forwarded=mon.spikes)
