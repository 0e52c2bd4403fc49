"""``spikebridge demo``: a small closed loop on 127.0.0.1 that shows spikes flowing.

Two simulated peers send to a stepped bridge: a "retina" (native frames, 64 neurons, sequence
numbers and send times) and a "legacy" BrianConnectUDP-style peer (dense frames, 32 neurons
at offset 64). A reflex step function maps the 96 inputs onto 16 "motor" neurons, which go
out to a third peer. Once a second it prints rates, the books, lateness and latency; the
Prometheus endpoint serves the same figures. Ends after --duration or on Ctrl-C.
"""

from __future__ import annotations

import math
import multiprocessing
import signal
import socket
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry

from bridge.codecs.legacy import LegacyCodec
from bridge.codecs.native import NativeCodec
from bridge.config import build_config
from bridge.engine.loop import Bridge
from bridge.engine.stats import BridgeStats, Histogram
from bridge.errors import ConfigError, EndpointError
from bridge.frame import IdArray, SpikeFrame
from bridge.tools import ArgumentParser, add_dt, add_duration, error

SENSORS, LEGACY, MOTORS = 64, 32, 16
BLOCK = (SENSORS + LEGACY) // MOTORS


def reflex(ids: IdArray) -> IdArray:
    """A motor neuron fires when two or more of its six input neurons fired this step."""
    counts = np.bincount(ids // BLOCK, minlength=MOTORS)
    return np.flatnonzero(counts >= 2).astype(np.uint32)


class Peers:
    """The simulated sensors and the motor listener, in a child process of their own.

    A separate process, as real peers are: threads here would share the loop's GIL and add
    up to a switch interval (5 ms) of lateness that a deployment does not have.
    """

    def __init__(self, retina_port: int, legacy_port: int, motor_port: int, rate_hz: float,
                 seed: int) -> None:
        ctx = multiprocessing.get_context("fork")
        self.counts = ctx.Array("q", 4)  # sent frames, motor frames, motor spikes, p50 ns
        self.stop = ctx.Event()
        self.proc = ctx.Process(
            target=_peers_main, daemon=True,
            args=(retina_port, legacy_port, motor_port, rate_hz, seed, self.counts, self.stop),
        )

    def start(self) -> None:
        self.proc.start()

    @property
    def motor_frames(self) -> int:
        return int(self.counts[1])

    @property
    def motor_spikes(self) -> int:
        return int(self.counts[2])

    @property
    def one_way_p50_ns(self) -> float:
        return float(self.counts[3]) if self.counts[1] else float("nan")

    def close(self) -> None:
        self.stop.set()
        self.proc.join(3)
        if self.proc.is_alive():
            self.proc.kill()


def _peers_main(retina_port: int, legacy_port: int, motor_port: int, rate_hz: float,
                seed: int, counts: Any, stop: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", motor_port))
    rx.setblocking(False)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    retina, legacy_addr = ("127.0.0.1", retina_port), ("127.0.0.1", legacy_port)
    rng = np.random.default_rng(seed)
    native, legacy, motor = NativeCodec(SENSORS), LegacyCodec(LEGACY), NativeCodec(MOTORS)
    p_native = rate_hz * 1e-3  # per neuron per 1 ms frame
    p_legacy = rate_hz * 5e-3  # per neuron per 5 ms frame
    one_way = Histogram()
    start, k, seq = time.monotonic(), 0, 0
    while not stop.is_set():
        k += 1
        while True:  # read what the bridge sent while we waited
            try:
                frame = motor.decode(rx.recv(65536))
            except BlockingIOError:
                break
            one_way.observe(time.time_ns() - frame.t_sent_ns)
            counts[1] += 1
            counts[2] += len(frame.ids)
        counts[3] = int(one_way.quantile(0.5)) if one_way.count else 0
        delay = start + k * 1e-3 - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        ids = np.flatnonzero(rng.random(SENSORS) < p_native)
        # a drifting stimulus: one block of the retina bursts, moving every 200 ms
        hot = (k // 200) % (SENSORS // BLOCK)
        ids = np.union1d(ids, np.arange(hot * BLOCK, hot * BLOCK + 3)).astype(np.uint32)
        for d in native.encode(SpikeFrame(2, seq, time.time_ns(), ids.astype(np.uint32))):
            tx.sendto(d, retina)
            seq += 1
        counts[0] += 1
        if k % 5 == 0:
            lids = np.flatnonzero(rng.random(LEGACY) < p_legacy).astype(np.uint32)
            tx.sendto(legacy.encode(SpikeFrame(3, -1, 0, lids))[0], legacy_addr)
            counts[0] += 1


def _us(ns: float) -> str:
    return "  n/a" if math.isnan(ns) else ("  >100ms" if math.isinf(ns) else f"{ns / 1e3:5.0f}")


def line(stats: BridgeStats, peers: Peers, elapsed: float) -> str:
    """One status line: rates, books, lateness and latency quantiles (bucket upper edges)."""
    fin = sum(s.frames for s in stats.inputs)
    acc = sum(s.accepted for s in stats.inputs)
    drop = sum(sum(s.drops) for s in stats.inputs)
    out = sum(s.frames for s in stats.outputs)
    lat = stats.step_lateness
    e2e = stats.frame_latency.get("stepped")
    return (
        f"{elapsed:5.1f}s  in {fin / elapsed:6.0f} fr/s (accepted {acc}, dropped {drop})  "
        f"out {out / elapsed:5.0f} fr/s  steps {stats.steps} rt {stats.realtime_factor:.4f}  "
        f"lateness p99<={_us(lat.quantile(0.99))} us  "
        f"in->out p99<={_us(e2e.quantile(0.99) if e2e else float('nan'))} us  "
        f"motor spikes {peers.motor_spikes}"
    )


def build_parser() -> ArgumentParser:
    """The command's argument parser (for main, the man page and shell completion)."""
    parser = ArgumentParser(prog="spikebridge demo", description=__doc__,
                            epilog="example: spikebridge demo --duration 5 "
                                   "--metrics 127.0.0.1:9108")
    add_duration(parser, "how long (0: until Ctrl-C)", dest="seconds", default=10.0)
    parser.add_argument("--rate", type=float, default=20.0, help="sensor firing rate, Hz")
    add_dt(parser, "bridge step", default=1.0, old=())
    parser.add_argument("--metrics", default="127.0.0.1:9108", metavar="HOST:PORT",
                        help="serve Prometheus metrics here, HOST:PORT or a URL ('' for "
                             "none; port 0: any)")
    return parser


def main(argv: Sequence[str]) -> int:
    """Run the demo; exit 0 when it ends (time up or Ctrl-C) with the books balanced."""
    parser = build_parser()
    args = parser.parse_args(argv)
    prog = "spikebridge demo"
    if not (args.seconds >= 0 and args.rate > 0 and args.dt > 0):
        return error(prog, "--duration must be >= 0, --rate and --dt > 0")
    motor = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    motor.bind(("127.0.0.1", 0))
    motor_port = motor.getsockname()[1]
    motor.close()
    doc = {
        "bridge": {"node": 1, "processor": "python:bridge.tools.demo:reflex", "dt_ms": args.dt},
        "input": [
            {"url": "udp://127.0.0.1:0", "format": "native", "neurons": SENSORS,
             "name": "retina"},
            {"url": "udp://127.0.0.1:0", "format": "legacy", "neurons": LEGACY,
             "offset": SENSORS, "name": "legacy"},
        ],
        "output": [{"url": f"udp://127.0.0.1:{motor_port}", "format": "native",
                    "neurons": MOTORS, "name": "motor"}],
    }
    try:
        cfg = build_config(doc, source="<demo>")
    except ConfigError as exc:
        return error(prog, str(exc))
    stats = BridgeStats(cfg.miss_ns)
    bridge = Bridge(cfg, stats=stats)
    server = None
    try:
        bridge.open()
    except (ConfigError, EndpointError) as exc:
        return error(prog, str(exc))
    retina_port = bridge.inputs[0].ep.local_address()[1]  # type: ignore[attr-defined]
    legacy_port = bridge.inputs[1].ep.local_address()[1]  # type: ignore[attr-defined]
    peers = Peers(retina_port, legacy_port, motor_port, args.rate, seed=1)
    if args.metrics:
        from bridge.config import parse_listen
        from bridge.service import metrics
        from bridge.service.exporter import MetricsServer

        try:
            host, port = parse_listen(args.metrics, "--metrics")
            registry = CollectorRegistry()
            metrics.register(stats, registry)
            server = MetricsServer(host, port, registry=registry)
            try:
                host, port = server.start()
            except EndpointError:
                server = MetricsServer(host, 0, registry=registry)
                host, port = server.start()
        except (ConfigError, EndpointError) as exc:
            return error(prog, str(exc))
        print(f"metrics: curl -s http://{host}:{port}/metrics | grep ^spikebridge_")
    print(f"demo: retina udp://127.0.0.1:{retina_port} (native, {SENSORS} neurons) + legacy "
          f"udp://127.0.0.1:{legacy_port} ({LEGACY} at offset {SENSORS}) -> reflex step every "
          f"{args.dt:g} ms -> motor udp://127.0.0.1:{motor_port} (native, {MOTORS} neurons)")
    signal.signal(signal.SIGINT, lambda *_: bridge.request_stop())
    signal.signal(signal.SIGTERM, lambda *_: bridge.request_stop())
    start = time.monotonic()
    next_line = [start + 1.0]

    def tick(_now: int) -> None:
        t = time.monotonic()
        if t >= next_line[0]:
            next_line[0] += 1.0
            print(line(stats, peers, t - start), flush=True)
        if args.seconds and t - start >= args.seconds:
            bridge.request_stop()

    peers.start()
    try:
        bridge.run(tick=tick)
    finally:
        peers.close()
        bridge.close()
        if server is not None:
            server.close()
    elapsed = time.monotonic() - start
    print(line(stats, peers, elapsed))
    balanced = all(s.balanced() for s in stats.inputs)
    for s in stats.inputs:
        print(f"  {s.name:<7} received {s.frames} = accepted {s.accepted} + dropped "
              f"{sum(s.drops)} {s.drops_by_reason() or ''}  (sequence gaps: {s.lost})")
    for s in stats.outputs:
        print(f"  {s.name:<7} sent {s.frames} frames, {s.spikes} spikes; received by the "
              f"motor peer: {peers.motor_frames} frames, one-way p50<="
              f"{_us(peers.one_way_p50_ns)} us")
    print("books balanced" if balanced else "BOOKS DO NOT BALANCE", file=sys.stderr)
    return 0 if balanced else 1
