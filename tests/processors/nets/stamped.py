"""Test network: echoes the input and stamps every step with its Brian time-step number.

Output population: the input group (neurons 0..N-1), then 17 stamp neurons: stamp b fires
when bit b of the time-step number is set, and the last one fires every step, so every step
sends a frame that says which step it was. ``post_run`` writes the run's facts as JSON to
``params["report"]``.
"""

from __future__ import annotations

import json
from typing import Any

from brian2 import NeuronGroup

from bridge.processors.brian2 import Built, RunInfo

BITS = 16
REPORT: dict[str, str] = {}


def build(inputs: Any, dt: Any, params: dict[str, Any]) -> Built:
    """Input group plus the stamp group."""
    stamp = NeuronGroup(BITS + 1, "p : integer (constant)\nalways : boolean (constant)",
                        threshold="always or (timestep(t, dt) // p) % 2 == 1", reset="",
                        name="stamp")
    stamp.p = [2**b for b in range(BITS)] + [1]
    stamp.always = [False] * BITS + [True]
    REPORT["path"] = str(params["report"])
    return Built(outputs=[inputs, stamp], objects=[stamp])


def post_run(net: Any, run: RunInfo) -> None:
    """Append this run's facts to the report file."""
    with open(REPORT["path"], "a") as fh:
        fh.write(json.dumps({"repetition": run.repetition, "steps": run.steps,
                             "t_end": run.t_end}) + "\n")
