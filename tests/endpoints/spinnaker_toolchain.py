"""A PyNN script run by sPyNNaker on a virtual board, driven line by line from a test.

Run by tests/endpoints/test_spinnaker_toolchain.py in a subprocess, with HOME pointing at a
temporary directory that holds the .spynnaker.cfg the test writes. On a virtual board the
toolchain maps, writes the database and sends the notification, but skips the application
runner, which is where it calls ``wait_for_confirmation`` and sends START and STOP
(spinn_front_end_common's ``_execute_runner`` returns at ``skip_if_virtual_board``). So this
script calls those three methods of the toolchain's own NotificationProtocol itself, when
the test says so on stdin.

argv: NOTIFY_PORT LPG_PORT_SET LPG_PORT_DB
"""

from __future__ import annotations

import sys

import pyNN.spiNNaker as sim
from spinn_front_end_common.data import FecDataView


def say(*words: object) -> None:
    print(*words, flush=True)


def wait_for(word: str) -> None:
    line = sys.stdin.readline().strip()
    if line != word:
        raise SystemExit(f"expected {word!r} on stdin, got {line!r}")


def main() -> None:
    notify, port_set, port_db = (int(a) for a in sys.argv[1:4])
    ext = sim.external_devices
    sim.setup(timestep=1.0)
    # Two live outputs (two Live Packet Gatherers: their ports differ) and two injectors.
    pop = sim.Population(20, sim.IF_curr_exp(), label="pop")
    pop2 = sim.Population(12, sim.IF_curr_exp(), label="pop2")
    inj = sim.Population(10, ext.SpikeInjector(
        database_notify_host="127.0.0.1", database_notify_port_num=notify), label="inj")
    inj2 = sim.Population(6, ext.SpikeInjector(
        database_notify_host="127.0.0.1", database_notify_port_num=notify), label="inj2")
    sim.Projection(inj, pop, sim.OneToOneConnector(), sim.StaticSynapse(weight=5))
    sim.Projection(inj2, pop2, sim.OneToOneConnector(), sim.StaticSynapse(weight=5))
    ext.activate_live_output_for(pop, database_notify_host="127.0.0.1",
                                 database_notify_port_num=notify,
                                 host="127.0.0.1", port=port_set)
    ext.activate_live_output_for(pop2, database_notify_host="127.0.0.1",
                                 database_notify_port_num=notify,
                                 host="127.0.0.1", port=port_db)
    for run in (1, 2):
        sim.run(100)
        say("DB", FecDataView.get_database_file_path())
        protocol = FecDataView.get_notification_protocol()
        try:
            protocol.wait_for_confirmation()  # raises SpinnmanTimeoutException after 10 s
        except Exception as exc:
            say("FAILED", type(exc).__name__, exc)
            raise SystemExit(1) from None
        say("CONFIRMED", run)
        wait_for("start")
        protocol.send_start_resume_notification()
        say("STARTED", run)
        wait_for("stop")
        protocol.send_stop_pause_notification()
        say("STOPPED", run)
    sim.end()
    say("END")


if __name__ == "__main__":
    main()
