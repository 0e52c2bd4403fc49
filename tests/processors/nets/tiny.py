"""Test network: the smallest one with code to compile (one group's threshold and reset)."""

from __future__ import annotations

from typing import Any

from brian2 import NeuronGroup

from bridge.processors.brian2 import Built


def build(inputs: Any, dt: Any, params: dict[str, Any]) -> Built:
    """Four neurons that never fire on their own."""
    g = NeuronGroup(4, "v : 1", threshold="v > 1", reset="v = 0", name="tiny")
    return Built(outputs=[g], objects=[g])
