"""Test network: identical trials, by restoring a snapshot in the post-run hook."""

from __future__ import annotations

from typing import Any

from brian2 import NeuronGroup, ms

from bridge.processors.brian2 import Built, RunInfo


def build(inputs: Any, dt: Any, params: dict[str, Any]) -> Built:
    """Three neurons that fire every 10 ms from rest."""
    g = NeuronGroup(3, "dv/dt = 1 / (10 * ms) : 1", threshold="v > 1", reset="v = 0",
                    name="ramp", namespace={"ms": ms})
    return Built(outputs=[g], objects=[g])


def post_run(net: Any, run: RunInfo) -> None:
    """Back to the state the test stored before the first step."""
    net.restore("trial_start")
