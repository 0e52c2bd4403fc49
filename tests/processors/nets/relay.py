"""Test network: input i drives output neuron i through one synapse (weight above threshold).

``params["same_step"]`` schedules the output threshold after the synapses, so the answer
comes in the input's own time step; otherwise it comes one step later (Brian's default).
A second output group ``tail`` (a subgroup of a silent 4-neuron group, the last two) and the
input group itself follow, to test output offsets.
"""

from __future__ import annotations

from typing import Any

from brian2 import NeuronGroup, Synapses

from bridge.processors.brian2 import Built

WEIGHT = 2.0


def build(inputs: Any, dt: Any, params: dict[str, Any]) -> Built:
    """out[i] fires when input i fires."""
    n = len(inputs)
    out = NeuronGroup(n, "v : 1", threshold="v > 1", reset="v = 0", name="out")
    syn = Synapses(inputs, out, on_pre="v_post += WEIGHT", name="drive")
    syn.connect(j="i")
    if params.get("same_step"):
        out.thresholder["spike"].when = "after_synapses"
    silent = NeuronGroup(4, "v : 1", threshold="v > 1", reset="v = 0", name="silent")
    outputs: list[Any] = [out]
    if params.get("three_outputs"):
        outputs += [silent[2:], inputs]
    return Built(outputs=outputs, objects=[out, syn, silent])
