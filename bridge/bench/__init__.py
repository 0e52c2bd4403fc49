"""``spikebridge bench NAME``: benchmarks that print ratios against floors measured in the same run.

Benchmarks, not tests: they time real processes on this machine and never assert.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

BENCHES: dict[str, tuple[str, str]] = {
    "relay": ("bridge.bench.relay:main", "UDP relay latency and throughput vs the bare floor"),
    "stepped": ("bridge.bench.stepped:main", "step lateness vs cyclictest, Brian2 step cost"),
    "serial": ("bridge.bench.serial:main", "eDVS line-rate stream through the daemon"),
    "replay": ("bridge.bench.replay:main", "replay timing error and drift"),
    "scrape": ("bridge.bench.scrape:main", "step lateness with and without metric scrapes"),
    "overload": ("bridge.bench.overload:main", "2x the relay's throughput for a while: books, "
                 "memory, watchdog, recovery"),
    "fuzz": ("bridge.bench.fuzz:main", "coverage-guided fuzzing of every decoder (atheris)"),
    "spinnaker": ("bridge.bench.spinnaker:main", "sPyNNaker key tables vs base+i, and the "
                  "notification-to-ack time"),
    "events": ("bridge.bench.events:main", "camera events/s and CPU per event vs aestream"),
    "camfiles": ("bridge.bench.camfiles:main", "event-camera file libraries: read speed and "
                 "correctness; dv-processing's network classes"),
    "nir": ("bridge.bench.nir:main", "nir processor step cost vs its bare executor and snnTorch"),
}


def main(argv: Sequence[str]) -> int:
    """Dispatch to one benchmark."""
    args = list(argv)
    if not args or args[0] in ("-h", "--help"):
        print("usage: spikebridge bench NAME [ARGS...]\n\nbenchmarks:")
        for name, (_, text) in BENCHES.items():
            print(f"  {name:<8} {text}")
        print("\nexample: spikebridge bench relay --duration 1 --json relay.json")
        return 0 if args else 2
    if args[0] not in BENCHES:
        print(f"spikebridge bench: unknown benchmark {args[0]!r}; "
              f"choose from {', '.join(BENCHES)}", file=sys.stderr)
        return 2
    from bridge.cli import dispatch

    return dispatch("spikebridge bench", BENCHES, args)
