"""Test network: the input group is the output (each input spike comes straight back)."""

from __future__ import annotations

from typing import Any

from bridge.processors.brian2 import Built, RunInfo

RUNS: list[tuple[Any, RunInfo]] = []


def build(inputs: Any, dt: Any, params: dict[str, Any]) -> Built:
    """Output = the input group."""
    return Built(outputs=[inputs])


def post_run(net: Any, run: RunInfo) -> None:
    """Record each call for the test to inspect."""
    RUNS.append((net, run))
