"""Test network: a user network_operation runs once per step, at its scheduled slot."""

from __future__ import annotations

from typing import Any

import numpy as np
from brian2 import network_operation

from bridge.processors.brian2 import Built

CALLS: list[float] = []


def build(inputs: Any, dt: Any, params: dict[str, Any]) -> Built:
    """Echo the input; record the Brian time of every call of the operation."""

    @network_operation(when="end")
    def record(t: Any) -> None:
        CALLS.append(float(np.asarray(t)))

    return Built(outputs=[inputs], objects=[record])
