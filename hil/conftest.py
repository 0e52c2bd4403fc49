"""The hardware-in-the-loop suite: emulated devices by default, a real one with ``--port``.

    pytest hil                                              # everything, against emulators
    pytest hil --port /dev/serial/by-id/usb-...-if00 --device edvs --baud 4000000
    pytest hil --port /dev/ttyACM0 --device board --port-options 'start=1'

With ``--port`` the scenarios that need the device named by ``--device`` use the real port;
scenarios that need fault injection or an unplug on demand skip with a reason, and the other
device in a two-device scenario stays emulated. Daemon scenarios run ``spikebridge run`` as a
subprocess and read its Prometheus metrics.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.emulate import BoardEmulator, EdvsEmulator, Emulator
from bridge.testing import spikebridge_cmd
from hil.support import Device, Monitor, RunningDaemon, free_tcp_port


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("spikebridge HIL")
    group.addoption("--port", default=None,
                    help="a real device (path or pyserial URL); default: emulators only")
    group.addoption("--device", choices=("edvs", "board"), default="edvs",
                    help="what --port is (default edvs)")
    group.addoption("--baud", type=int, default=None,
                    help="line rate of --port (default 4000000 for edvs, 115200 for board)")
    group.addoption("--port-options", default="",
                    help="extra URL keys for --port, e.g. 'evsize=4&sync=0&rtscts=1'")


@pytest.fixture
def device(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., Device]]:
    """``device("edvs" | "board", **emulator_kwargs)``: the real port or a started emulator.

    Asking for faults (``faults=Faults(...)``) or other emulator-only settings on real
    hardware skips the test.
    """
    cfg = request.config
    started: list[Emulator] = []

    def make(kind: str, **kwargs: Any) -> Device:
        port = cfg.getoption("--port")
        if port and cfg.getoption("--device") == kind:
            if kwargs.get("faults") is not None:
                pytest.skip("fault injection needs the emulator")
            baud = cfg.getoption("--baud") or (4_000_000 if kind == "edvs" else 115_200)
            return Device(kind, port, baud, None, cfg.getoption("--port-options"))
        cls = EdvsEmulator if kind == "edvs" else BoardEmulator
        emu = cls(link=tmp_path / f"{kind}{len(started)}", **kwargs)
        started.append(emu)
        path = emu.start()
        faults = kwargs.get("faults")
        baud = faults.baud if faults is not None and faults.baud else 4_000_000
        return Device(kind, path, baud, emu)

    yield make
    for emu in started:
        emu.stop()


@pytest.fixture
def daemon() -> Iterator[Callable[..., RunningDaemon]]:
    """``daemon(*args)``: start ``spikebridge run ARGS --metrics 127.0.0.1:PORT``, ready."""
    started: list[RunningDaemon] = []

    def start(*args: str, ready_timeout: float = 60.0) -> RunningDaemon:
        port = free_tcp_port()
        proc = subprocess.Popen(
            spikebridge_cmd("run", *args, "--metrics", f"127.0.0.1:{port}"),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        d = RunningDaemon(proc, port)
        started.append(d)
        d.wait_ready(ready_timeout)
        return d

    yield start
    for d in started:
        d.stop()


@pytest.fixture
def monitor() -> Iterator[Callable[[int], Monitor]]:
    """``monitor(neurons)``: a UDP sink decoding what the daemon sends."""
    made: list[Monitor] = []

    def make(neurons: int) -> Monitor:
        m = Monitor(neurons)
        made.append(m)
        return m

    yield make
    for m in made:
        m.close()


