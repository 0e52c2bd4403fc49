"""Test helpers shared by the test suite and the HIL suite: loopback peers, bridges, daemons.

Not used by the daemon itself; never imported on the hot path.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence

from bridge.config import BridgeConfig
from bridge.engine.loop import Bridge


def free_udp_port() -> int:
    """An unused UDP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class UdpPeer:
    """A test peer: a bound UDP socket that sends to and receives from a bridge."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]

    def send(self, port: int, data: bytes) -> None:
        self.sock.sendto(data, ("127.0.0.1", port))

    def recv(self, timeout: float = 2.0) -> bytes | None:
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(65536)
        except TimeoutError:
            return None

    def recv_all(self, quiet: float = 0.3, limit: float = 5.0) -> list[bytes]:
        """Everything that arrives until ``quiet`` seconds pass with nothing new."""
        out: list[bytes] = []
        end = time.monotonic() + limit
        while time.monotonic() < end:
            got = self.recv(quiet)
            if got is None:
                break
            out.append(got)
        return out

    def close(self) -> None:
        self.sock.close()


class RunningBridge:
    """A Bridge opened and run on a background thread (tests only; the daemon uses main)."""

    def __init__(self, cfg: BridgeConfig, on_reload: Callable[[], None] | None = None) -> None:
        self.on_reload = on_reload
        self.bridge = Bridge(cfg)
        self.bridge.open()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.bridge.run(on_reload=self.on_reload)
        except BaseException as exc:  # surfaced by stop()
            self.error = exc

    def in_port(self, i: int = 0) -> int:
        port: int = self.bridge.inputs[i].ep.local_address()[1]  # type: ignore[attr-defined]
        return port

    def stop(self) -> None:
        self.bridge.request_stop()
        self.thread.join(10)
        assert not self.thread.is_alive(), "bridge loop did not stop"
        self.bridge.close()
        if self.error is not None:
            raise self.error


def spikebridge_cmd(*args: str) -> list[str]:
    """The argv that runs this checkout's spikebridge command."""
    return [sys.executable, "-m", "bridge", *args]


class Daemon:
    """``spikebridge run ...`` as a subprocess, stopped with SIGTERM at teardown."""

    def __init__(self, args: Sequence[str], env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            spikebridge_cmd("run", *args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})}, text=True,
        )
        self.output = ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        self.output += out or ""
        return self.proc.returncode


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0, interval: float = 0.02) -> bool:
    """Poll ``predicate`` until true or ``timeout``; return its last value."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
