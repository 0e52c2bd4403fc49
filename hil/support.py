"""Helpers of the HIL suite: devices under test, the daemon subprocess, a UDP monitor, metrics.

Test-side only; the daemon never imports this.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bridge.codecs.native import NativeCodec
from bridge.emulate import EdvsEmulator, Emulator
from bridge.errors import DecodeError
from bridge.testing import UdpPeer

REPORT = Path(os.environ.get("SPIKEBRIDGE_HIL_REPORT", "out/hil-report.jsonl"))


@dataclass
class Device:
    """A device under test: a path the daemon opens, and the emulator behind it (or None)."""

    kind: str
    path: str
    baud: int
    emulator: Emulator | None = None
    extra: str = ""

    @property
    def real(self) -> bool:
        """True for real hardware (``--port``)."""
        return self.emulator is None

    def url(self, **params: Any) -> str:
        """``serial:PATH?format=KIND&baud=...`` plus ``params`` and --port-options."""
        keys = {"format": self.kind, "baud": self.baud, **params}
        query = "&".join(f"{k}={v}" for k, v in keys.items())
        if self.extra:
            query += "&" + self.extra
        return f"serial:{self.path}?{query}"

    def need_emulator(self, what: str) -> Emulator:
        """The emulator, or skip: real hardware cannot do ``what`` on demand."""
        if self.emulator is None:
            pytest.skip(f"real hardware cannot {what}")
        return self.emulator


def scrape(port: int) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """All spikebridge_* samples: name -> {sorted label pairs: value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def metric(samples: dict[str, Any], name: str, **labels: str) -> float:
    """Sum of ``name`` over the samples whose labels include ``labels``."""
    total = 0.0
    for key, value in samples.get(name, {}).items():
        have = dict(key)
        if all(have.get(k) == v for k, v in labels.items()):
            total += value
    return total


@dataclass
class RunningDaemon:
    """``spikebridge run`` as a subprocess with a metrics port."""

    proc: subprocess.Popen[str]
    metrics_port: int
    output: str = ""

    def metrics(self) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
        """Scrape the daemon's metrics now."""
        return scrape(self.metrics_port)

    def alive(self) -> bool:
        """True while the process runs."""
        return self.proc.poll() is None

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait until the loop has ticked (endpoints open, processor built and compiled).

        The metrics endpoint answers, with a tick count of 0, from before the processor is
        built: a Brian2 network takes seconds to build and compile, more on a loaded machine.
        """
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if not self.alive():
                self.stop()
                raise AssertionError(f"daemon exited early:\n{self.output}")
            try:
                if metric(self.metrics(), "spikebridge_loop_ticks_total") > 0:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise AssertionError(f"the loop did not start in {timeout:g} s:\n{self.output}")

    def stop(self) -> int:
        """SIGTERM, wait, keep the output; return the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            out, _ = self.proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        self.output += out or ""
        return self.proc.returncode


def free_tcp_port() -> int:
    """An unused TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Monitor:
    """A UDP peer that decodes native frames from the daemon and keeps their ids and times."""

    neurons: int
    peer: UdpPeer = field(default_factory=UdpPeer)
    frames: int = 0
    spikes: int = 0
    errors: int = 0
    arrivals: list[tuple[int, int]] = field(default_factory=list)  # (monotonic ns, spikes)

    def __post_init__(self) -> None:
        self.codec = NativeCodec(self.neurons)

    @property
    def url(self) -> str:
        """Where the daemon should send."""
        return f"udp://127.0.0.1:{self.peer.port}?format=native&neurons={self.neurons}"

    def collect(self, quiet: float = 0.3, limit: float = 10.0) -> int:
        """Receive until ``quiet`` s pass with nothing; return the spikes seen in this call."""
        before = self.spikes
        end = time.monotonic() + limit
        while time.monotonic() < end:
            data = self.peer.recv(quiet)
            if data is None:
                break
            self._count(data)
        return self.spikes - before

    def collect_for(self, seconds: float) -> int:
        """Receive for ``seconds`` however quiet it is; return the spikes seen."""
        before = self.spikes
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            data = self.peer.recv(min(left, 0.1))
            if data is not None:
                self._count(data)
        return self.spikes - before

    def first_after(self, timeout: float) -> float | None:
        """Seconds until the next frame arrives (None on timeout)."""
        t0 = time.monotonic()
        data = self.peer.recv(timeout)
        if data is None:
            return None
        self._count(data)
        return time.monotonic() - t0

    def drain(self) -> None:
        """Forget what is queued right now."""
        while (data := self.peer.recv(0.01)) is not None:
            self._count(data)

    def _count(self, data: bytes) -> None:
        try:
            frame = self.codec.decode(data)
        except DecodeError:
            self.errors += 1
            return
        self.frames += 1
        self.spikes += len(frame.ids)
        self.arrivals.append((time.monotonic_ns(), len(frame.ids)))

    def close(self) -> None:
        self.peer.close()


def settle(emu: Emulator, timeout: float = 5.0) -> None:
    """Wait until the emulator's FIFO has been written out (the host read everything)."""
    end = time.monotonic() + timeout
    while emu.fifo and time.monotonic() < end:
        time.sleep(0.02)


def stop_stream(emu: EdvsEmulator) -> None:
    """Stop the eDVS event stream from the device side and let the last bytes go out."""
    emu.call(lambda _now: setattr(emu, "streaming", False))
    settle(emu)


def report(name: str, **figures: Any) -> None:
    """Append measured figures of a scenario to the HIL report (JSON lines) and print them."""
    line = json.dumps({"scenario": name, **figures}, default=float)
    print(line)
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    with REPORT.open("a") as fh:
        fh.write(line + "\n")


def quantiles(values: Sequence[float]) -> dict[str, float]:
    """p50, p99 and max of ``values`` (ms figures in, ms out)."""
    arr = np.asarray(values, dtype=float)
    return {"n": len(arr), "p50": float(np.percentile(arr, 50)),
            "p99": float(np.percentile(arr, 99)), "max": float(arr.max())}




@dataclass
class StreamResult:
    """What ``read_stream`` saw: events/spikes, frames, drop reasons and reply lines."""

    spikes: int = 0
    frames: int = 0
    errors: list[str] = field(default_factory=list)
    controls: list[Any] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)
    ts_backwards: int = 0
    first_ts: int = -1
    last_ts: int = -1


def open_stream(url: str, role: str = "in") -> tuple[Any, Any]:
    """Open a serial URL as the daemon does (spec, endpoint, codec); returns (endpoint, codec)."""
    from bridge.endpoints import endpoint_spec, make_codec, open_endpoint

    spec = endpoint_spec(url, role)
    return open_endpoint(spec), make_codec(spec)


def read_stream(ep: Any, codec: Any, seconds: float = 0.0, quiet: float | None = None,
                result: StreamResult | None = None, keep_ids: bool = False) -> StreamResult:
    """Poll ``ep`` and decode with ``codec`` for ``seconds``; with ``quiet``, go on until that
    long passes with no bytes (at most 10 s more)."""
    import selectors

    res = result if result is not None else StreamResult()
    sel = selectors.DefaultSelector()
    sel.register(ep.fileno(), selectors.EVENT_READ)
    start = time.monotonic()
    last = start
    try:
        while True:
            now = time.monotonic()
            if now - start >= seconds and (
                quiet is None or now - last >= quiet or now - start > seconds + 10
            ):
                break
            if not sel.select(0.02):
                continue
            got = ep.recv()
            if got is None:
                continue
            last = time.monotonic()
            codec.feed(bytes(got[0]), time.monotonic_ns())
            _drain_codec(codec, res, keep_ids)
    finally:
        sel.close()
    return res


def _drain_codec(codec: Any, res: StreamResult, keep_ids: bool) -> None:
    while True:
        try:
            frame = codec.next_frame()
        except DecodeError as exc:
            res.errors.append(exc.reason)
            continue
        if frame is None:
            break
        res.frames += 1
        res.spikes += len(frame.ids)
        if keep_ids:
            res.ids += frame.ids.tolist()
        ts = getattr(codec, "timestamps_us", None)
        if ts is not None and len(ts):
            steps = np.diff(np.concatenate(([res.last_ts], ts)) if res.last_ts >= 0 else ts)
            res.ts_backwards += int(np.count_nonzero(steps < 0))
            if res.first_ts < 0:
                res.first_ts = int(ts[0])
            res.last_ts = int(ts[-1])
    while (ctl := codec.next_control()) is not None:
        res.controls.append(ctl)
