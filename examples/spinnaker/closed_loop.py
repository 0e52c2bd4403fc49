"""A sPyNNaker network in a closed loop with spikebridge (run on SpiNNaker hardware).

    python closed_loop.py          # after starting spikebridge with closed_loop.toml

The script registers spikebridge (127.0.0.1:19999) as the listener of both live-I/O
populations. It names no keys, cores or addresses: spikebridge reads them from the
database the toolchain writes. See docs/spinnaker.md.
"""

import pyNN.spiNNaker as sim

NOTIFY = {"database_notify_host": "127.0.0.1", "database_notify_port_num": 19999}

sim.setup(timestep=1.0)
stimulus = sim.Population(10, sim.external_devices.SpikeInjector(**NOTIFY), label="stimulus")
network = sim.Population(100, sim.IF_curr_exp(), label="network")
sim.Projection(stimulus, network, sim.FixedProbabilityConnector(0.2),
               sim.StaticSynapse(weight=3.0, delay=1.0))
# The live output goes to an IP tag; spikebridge (tag=set) points the tag at its own socket.
sim.external_devices.activate_live_output_for(network, **NOTIFY)

sim.run(10_000)  # notifies, waits for spikebridge's acknowledgement, then runs 10 s
sim.end()
