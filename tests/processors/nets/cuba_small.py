"""Test network: a seeded 400-neuron CUBA driven by the input, for comparing with net.run."""

from __future__ import annotations

from typing import Any

from brian2 import NeuronGroup, Synapses, ms, mV, seed

from bridge.processors.brian2 import Built

# Module-level names, so that a bare net.run(namespace=vars(module)) resolves them too.
taum, taue, taui = 20 * ms, 5 * ms, 10 * ms
vt, vr, el = -50 * mV, -60 * mV, -49 * mV


def build(inputs: Any, dt: Any, params: dict[str, Any]) -> Built:
    """CUBA (Brette et al. 2007) at 400 neurons, fixed seed, first 50 neurons out."""
    seed(int(params.get("seed", 7)))
    eqs = """
    dv/dt  = (ge + gi - (v - el)) / taum : volt (unless refractory)
    dge/dt = -ge / taue : volt
    dgi/dt = -gi / taui : volt
    """
    p = NeuronGroup(400, eqs, threshold="v > vt", reset="v = vr", refractory=5 * ms,
                    method="exact", name="p")
    p.v = "vr + rand() * (vt - vr)"
    ce = Synapses(p, p, on_pre="ge += 1.62 * mV", name="ce")
    ce.connect("i < 320", p=0.1)
    ci = Synapses(p, p, on_pre="gi -= 9 * mV", name="ci")
    ci.connect("i >= 320", p=0.1)
    drive = Synapses(inputs, p, on_pre="ge += 3 * mV", name="drive")
    drive.connect(p=0.2)
    return Built(outputs=[p[:50]], objects=[p, ce, ci, drive])
