"""A closed-loop reflex arc: sensor spikes in, motor spikes out, answered in the same step.

The sensor population is split in a left and a right half. Each half excites the motor neuron
on the opposite side (a crossed withdrawal reflex), and the two motor neurons inhibit each
other. The motor neurons' threshold runs after the synapses, so a strong enough sensor volley
makes the motor fire in the very time step the volley arrives in: the response leaves the
bridge one step cost after the deadline, not one dt later. Run it with ``examples/reflex.toml``.
"""

from __future__ import annotations

from typing import Any

from brian2 import NeuronGroup, Synapses, ms

from bridge.processors.brian2 import Built, RunInfo


def build(sensors: NeuronGroup, dt: Any, params: dict[str, Any]) -> Built:
    """Params: weight (per sensor spike, threshold 1), inhibition, tau_ms, refractory_ms."""
    half = len(sensors) // 2
    namespace = {
        "tau": float(params.get("tau_ms", 10.0)) * ms,
        "w": float(params.get("weight", 0.35)),
        "w_inh": float(params.get("inhibition", 0.5)),
        "half": half,
    }
    motor = NeuronGroup(2, "dv/dt = -v / tau : 1 (unless refractory)", threshold="v > 1",
                        reset="v = 0", refractory=float(params.get("refractory_ms", 5.0)) * ms,
                        method="exact", name="motor", namespace=namespace)
    # Same-step answer: threshold after the synapses have delivered this step's sensor spikes.
    motor.thresholder["spike"].when = "after_synapses"
    crossed = Synapses(sensors, motor, on_pre="v_post += w", name="crossed",
                       namespace=namespace)
    crossed.connect("(i < half and j == 1) or (i >= half and j == 0)")
    mutual = Synapses(motor, motor, on_pre="v_post = clip(v_post - w_inh, 0, 1)",
                      name="mutual", namespace=namespace)
    mutual.connect("i != j")
    return Built(outputs=[motor], objects=[motor, crossed, mutual])


def post_run(net: Any, run: RunInfo) -> None:
    """Log the run; a real experiment would save the motor state or learned weights here."""
    import logging

    logging.getLogger("spikebridge.examples.reflex").info(
        "reflex run %d: %d steps (%.3f s of Brian time)", run.repetition, run.steps,
        run.t_end - run.t_start)
