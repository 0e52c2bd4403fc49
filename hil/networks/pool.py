"""The HIL closed-loop network: eDVS pixel columns pooled onto one neuron each.

Input ids below ``inputs`` are pooled sensor pixels (``id % columns`` is the column); ids at
and above it (the board's answers coming back) drive nothing. A column's neuron fires in the
same time step as the third of its input spikes that arrive within a few time constants.
"""

from __future__ import annotations

from typing import Any

from brian2 import NeuronGroup, Synapses, ms

from bridge.processors.brian2 import Built


def build(sensors: NeuronGroup, dt: Any, params: dict[str, Any]) -> Built:
    """Params: columns (16), inputs (256), weight (0.4), tau_ms (10)."""
    columns = int(params.get("columns", 16))
    namespace = {
        "tau": float(params.get("tau_ms", 10.0)) * ms,
        "w": float(params.get("weight", 0.4)),
        "n_in": int(params.get("inputs", 256)),
        "columns": columns,
    }
    pool = NeuronGroup(columns, "dv/dt = -v / tau : 1", threshold="v > 1", reset="v = 0",
                       method="exact", name="pool", namespace=namespace)
    pool.thresholder["spike"].when = "after_synapses"  # answer in the step the input arrives
    syn = Synapses(sensors, pool, on_pre="v_post += w", name="pool_in", namespace=namespace)
    syn.connect(condition="i < n_in and i % columns == j", namespace=namespace)
    return Built(outputs=[pool], objects=[pool, syn])
