"""The CUBA benchmark network (Brette et al. 2007, Brian2's own example) as a spikebridge builder.

4000 current-based LIF neurons by default, 80% excitatory and 20% inhibitory, each projecting
to ``synapses`` random targets on average (80: the original 2% connectivity at 4000 neurons).
The connectivity is written in terms of the group sizes, so networks of every size share the
same compiled code. Input spikes excite a random fraction ``p_in`` of the network; the first
``n_out`` excitatory neurons are the output. Run it with ``examples/cuba.toml``.
"""

from __future__ import annotations

from typing import Any

from brian2 import NeuronGroup, Synapses, ms, mV, seed

from bridge.processors.brian2 import Built, RunInfo


def build(inputs: NeuronGroup, dt: Any, params: dict[str, Any]) -> Built:
    """CUBA with ``params``: n (neurons), synapses (per neuron), p_in, n_out, seed."""
    n = int(params.get("n", 4000))
    p_in = float(params.get("p_in", 0.05))
    n_out = int(params.get("n_out", 100))
    if "seed" in params:
        seed(int(params["seed"]))
    # Names the equations use; Brian resolves them when the run is prepared.
    namespace = {
        "taum": 20 * ms, "taue": 5 * ms, "taui": 10 * ms,
        "vt": -50 * mV, "vr": -60 * mV, "el": -49 * mV,
        "k": float(params.get("synapses", 80)),
    }
    eqs = """
    dv/dt  = (ge + gi - (v - el)) / taum : volt (unless refractory)
    dge/dt = -ge / taue : volt
    dgi/dt = -gi / taui : volt
    """
    net = NeuronGroup(n, eqs, threshold="v > vt", reset="v = vr", refractory=5 * ms,
                      method="exact", name="cuba", namespace=namespace)
    net.v = "vr + rand() * (vt - vr)"
    exc = Synapses(net, net, on_pre="ge += 1.62 * mV", name="cuba_exc", namespace=namespace)
    exc.connect("i < 0.8 * N_pre", p="k / N_post")
    inh = Synapses(net, net, on_pre="gi -= 9 * mV", name="cuba_inh", namespace=namespace)
    inh.connect("i >= 0.8 * N_pre", p="k / N_post")
    drive = Synapses(inputs, net, on_pre="ge += 2 * mV", name="cuba_input")
    drive.connect(p=p_in)
    return Built(outputs=[net[:n_out]], objects=[net, exc, inh, drive], namespace=namespace)


def post_run(net: Any, run: RunInfo) -> None:
    """Log what the run did (a real experiment would save weights or state here)."""
    import logging

    group = net["cuba"]
    log = logging.getLogger("spikebridge.examples.cuba")
    seconds = run.t_end - run.t_start
    log.info("CUBA repetition %d: %d steps, %.3f s of Brian time, %d neurons",
             run.repetition, run.steps, seconds, len(group))
