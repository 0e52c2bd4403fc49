"""Unplug and replug, 20 times: the daemon reconnects each time within a second."""

from __future__ import annotations

import itertools
import time
from typing import Any

from bridge.emulate import EdvsEmulator
from hil.support import metric, quantiles, report

CYCLES = 20
DOWN_S = (0.05, 0.15, 0.3, 0.6)  # varied, so the replug lands at different backoff phases


def test_twenty_unplug_replug_cycles_each_back_within_a_second(
    device: Any, daemon: Any, monitor: Any
) -> None:
    dev = device("edvs", rate=5_000, pattern="random")
    sensor = dev.need_emulator("unplug on demand")
    assert isinstance(sensor, EdvsEmulator)
    mon = monitor(32768)
    d = daemon("--in", dev.url(neurons=32768), "--out", mon.url)
    assert mon.collect_for(0.3) > 0
    names = [sensor.path]
    back_s = []
    for i in range(CYCLES):
        sensor.request_unplug()
        time.sleep(DOWN_S[i % len(DOWN_S)])
        mon.drain()  # frames relayed before the unplug
        t0 = time.monotonic()
        names.append(sensor.request_replug())
        # Back = the first frame relayed from the new device reaches the UDP peer.
        assert mon.peer.recv(3.0) is not None, f"cycle {i}: no data within 3 s of the replug"
        back_s.append(time.monotonic() - t0)
        assert d.alive(), d.output
    m = d.metrics()
    assert metric(m, "spikebridge_serial_reconnects_total") == CYCLES
    assert metric(m, "spikebridge_endpoint_up", endpoint="in0") == 1
    # Each time the device came back under another pty name, behind the same link.
    assert all(a != b for a, b in itertools.pairwise(names))
    figures = quantiles([t * 1e3 for t in back_s])
    report("unplug_cycles", unit="ms from replug to first relayed frame", **figures)
    assert max(back_s) < 1.0, back_s
