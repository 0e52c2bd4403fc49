"""Test network: equations name the builder's local variables, as in a Brian script."""

from __future__ import annotations

from typing import Any

from brian2 import NeuronGroup, Synapses

from bridge.processors.brian2 import Built

GAIN = 3.0  # a module global, also visible to the equations


def build(inputs: Any, dt: Any, params: dict[str, Any]) -> Built:
    """out[i] = input i, through a weight that only exists as a local variable."""
    weight = float(params.get("weight", 0.5))  # noqa: F841 - used by name in on_pre
    out = NeuronGroup(len(inputs), "v : 1", threshold="v > 1", reset="v = 0", name="out")
    syn = Synapses(inputs, out, on_pre="v_post += weight * GAIN", name="drive")
    syn.connect(j="i")
    return Built(outputs=[out], objects=[out, syn])
