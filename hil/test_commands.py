"""The output direction: network spikes drive a PushBot-style robot's commands over serial."""

from __future__ import annotations

import time
from typing import Any

from bridge.codecs.native import NativeCodec
from bridge.emulate import EdvsEmulator
from bridge.frame import SpikeFrame
from bridge.testing import UdpPeer, free_udp_port
from hil.support import metric

# Spike id -> command line: motors on, left wheel forward, left wheel stop, LED on. In a URL
# query "+" means a space, so the "+" of "!M+" is written %2B.
TABLE = "0:!M%2B;1:!MV0=40;2:!MV0=0;3:!L1"


def test_output_spikes_become_motor_and_led_commands(device: Any, daemon: Any) -> None:
    dev = device("edvs", rate=0)
    robot = dev.need_emulator("show which commands it received")
    assert isinstance(robot, EdvsEmulator)
    port = free_udp_port()
    d = daemon("--in", f"udp://127.0.0.1:{port}?format=native&neurons=4",
               "--out", dev.url(neurons=4, commands=TABLE, init="!M-"))
    peer, codec = UdpPeer(), NativeCodec(4)
    try:
        for seq, ids in enumerate(([0, 1], [3], [2, 2, 1])):
            for datagram in codec.encode(SpikeFrame.of(ids, source=7, seq=seq)):
                peer.send(port, datagram)
            time.sleep(0.05)
        end = time.monotonic() + 3
        while len(robot.commands) < 7 and time.monotonic() < end:
            time.sleep(0.02)
    finally:
        peer.close()
    # The output's start-up lines, then one line per spiking id of each frame, in id order.
    assert list(robot.commands) == ["!U0", "!M-", "!M+", "!MV0=40", "!L1", "!MV0=40", "!MV0=0"]
    assert robot.motors == {"!M-": "", "!M+": "", "!MV0": "0", "!L1": ""}
    m = d.metrics()
    assert metric(m, "spikebridge_spikes_sent_total", endpoint="out0") == 6
    assert metric(m, "spikebridge_frames_dropped_total") == 0
