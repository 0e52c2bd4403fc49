"""Shared fixtures: loopback peers, in-process bridges, and daemons run as subprocesses."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from bridge.config import build_config
from bridge.endpoints import loop as loop_channels
from bridge.testing import Daemon, RunningBridge, UdpPeer


@pytest.fixture
def peer() -> Iterator[UdpPeer]:
    p = UdpPeer()
    yield p
    p.close()


@pytest.fixture
def peers() -> Iterator[Callable[[], UdpPeer]]:
    made: list[UdpPeer] = []

    def make() -> UdpPeer:
        p = UdpPeer()
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


@pytest.fixture
def run_bridge() -> Iterator[Callable[..., RunningBridge]]:
    """Start bridges from a config dict (see bridge.config.build_config); stopped at teardown."""
    started: list[RunningBridge] = []

    def start(doc: dict[str, Any]) -> RunningBridge:
        rb = RunningBridge(build_config(doc))
        started.append(rb)
        return rb

    yield start
    for rb in started:
        if rb.thread.is_alive():
            rb.stop()
    loop_channels.reset()


@pytest.fixture
def daemon() -> Iterator[Callable[..., Daemon]]:
    started: list[Daemon] = []

    def start(*args: str, env: dict[str, str] | None = None) -> Daemon:
        d = Daemon(args, env)
        started.append(d)
        return d

    yield start
    for d in started:
        d.stop(signal.SIGKILL if d.proc.poll() is None else signal.SIGTERM)


