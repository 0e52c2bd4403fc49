"""The network deploy/spikebridge.toml runs: install as /etc/spikebridge/network.py.

A placeholder a lab replaces with its own: ``n_out`` leaky integrate-and-fire neurons, each
pooling one contiguous block of the merged input population (the eDVS pixels, then the
simulation's neurons), firing when about ``1 / weight`` of its inputs spike within ``tau_ms``.
"""

from __future__ import annotations

from typing import Any

from brian2 import NeuronGroup, Synapses, ms

from bridge.processors.brian2 import Built


def build(inputs: NeuronGroup, dt: Any, params: dict[str, Any]) -> Built:
    """Params: n_out (outputs, default 100), weight (default 0.2), tau_ms (default 10)."""
    n_out = int(params.get("n_out", 100))
    namespace = {"tau": float(params.get("tau_ms", 10.0)) * ms,
                 "w": float(params.get("weight", 0.2)),
                 "n_in": len(inputs), "n_out": n_out}
    pool = NeuronGroup(n_out, "dv/dt = -v / tau : 1", threshold="v > 1", reset="v = 0",
                       method="exact", name="pool", namespace=namespace)
    feed = Synapses(inputs, pool, on_pre="v_post += w", name="feed", namespace=namespace)
    feed.connect(j="i * n_out // n_in")
    return Built(outputs=[pool], objects=[pool, feed])
