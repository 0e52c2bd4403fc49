"""Device emulators behind os.openpty(): an eDVS event sensor and a small spiking board.

They stand in for hardware in tests, the HIL suite and benchmarks, with fault injection
(line-rate pacing, noise, split writes, start-up garbage, unplug and replug). They run on
their own thread or process, never inside the bridge's real-time loop.
"""

from __future__ import annotations

from bridge.emulate.board import BoardEmulator
from bridge.emulate.device import Emulator
from bridge.emulate.edvs import EdvsEmulator
from bridge.emulate.faults import Faults

__all__ = ["BoardEmulator", "EdvsEmulator", "Emulator", "Faults"]
