"""``spikebridge bench replay``: how exactly a replay keeps the recorded timing, and drift.

It writes a synthetic recording (Poisson frame times, default 60 s at 1000 frames/s), replays
it with the same code as ``spikebridge replay`` to a UDP receiver in a child process on
127.0.0.1, and reports the timing error of every frame: at the sender (send call start minus
due time), after the send call, and at the receiver (arrival minus due, same CLOCK_MONOTONIC),
as p50/p99/p99.9/max, plus the drift (the error's trend over the run, and last minus first).
The targets are p99 <= 200 µs and drift < 1 ms. It never asserts: a benchmark.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bridge.endpoints import endpoint_spec, make_codec, open_endpoint
from bridge.engine.clock import SYSTEM_CLOCK
from bridge.frame import SpikeFrame
from bridge.record.format import EndpointInfo, Header, encode_end, encode_spikes
from bridge.record.player_cli import DEFAULT_SPIN_US, tighten_timer_slack
from bridge.record.resend import Resender
from bridge.record.sbrfile import SbrWriter
from bridge.record.schedule import Player, Recording
from bridge.tools import ArgumentParser, add_duration, add_json, add_spin_us, write_json

RECEIVER = r"""
import socket, sys, time, array
from bridge.codecs.native import NativeCodec
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
sock.bind(("127.0.0.1", 0))
print(sock.getsockname()[1], flush=True)
codec = NativeCodec(0)
expected = int(sys.argv[1])
seqs, arrivals = array.array("q"), array.array("q")
sock.settimeout(float(sys.argv[2]))
buf = bytearray(65536)
try:
    while len(seqs) < expected:
        n = sock.recv_into(buf)
        arrivals.append(time.monotonic_ns())
        seqs.append(codec.decode(bytes(buf[:n])).seq)
except socket.timeout:
    pass
sys.stdout.buffer.write(seqs.tobytes() + arrivals.tobytes())
"""


def synthetic(path: Path, seconds: float, rate: float, spikes: int, seed: int) -> np.ndarray:
    """Write a recording with Poisson frame times; returns those times (ns)."""
    rng = np.random.default_rng(seed)
    n = max(1, int(seconds * rate))
    gaps = rng.exponential(1e9 / rate, size=n)
    times = np.cumsum(gaps).astype(np.int64)
    times -= times[0]
    times = times[times <= int(seconds * 1e9)]
    info = EndpointInfo("in0", "udp://127.0.0.1:0", "in", "native", 1000)
    writer = SbrWriter(path, Header((info,), start_wall_ns=time.time_ns(), start_mono_ns=0,
                                    run="bench"))
    chunk = bytearray()
    for i, t in enumerate(times.tolist()):
        ids = np.sort(rng.choice(1000, size=spikes, replace=False)).astype(np.uint32)
        chunk += encode_spikes(t, 0, 1, i, 0, ids)
        if len(chunk) > 1 << 20:
            writer.write(chunk)
            chunk = bytearray()
    chunk += encode_end(int(times[-1]), len(times), len(times) * spikes, 0, 0)
    writer.write(chunk)
    writer.close()
    return times


def quantiles_us(errors_ns: np.ndarray) -> dict[str, float]:
    """p50/p99/p99.9/max of errors in µs."""
    if not len(errors_ns):
        return {}
    q = np.percentile(errors_ns, [50, 99, 99.9]) / 1000
    return {"p50": float(q[0]), "p99": float(q[1]), "p99.9": float(q[2]),
            "max": float(errors_ns.max() / 1000)}


def drift_us(due_ns: np.ndarray, err_ns: np.ndarray) -> dict[str, float]:
    """The error's trend: least-squares slope times the run's length, and last minus first."""
    if len(err_ns) < 2:
        return {"trend_over_run": 0.0, "last_minus_first": 0.0}
    t = (due_ns - due_ns[0]) / 1e9
    slope, _ = np.polyfit(t, err_ns / 1000, 1)
    return {"trend_over_run": float(slope * t[-1]),
            "last_minus_first": float((err_ns[-1] - err_ns[0]) / 1000)}


def run(seconds: float, rate: float, spikes: int, spin_us: float, seed: int) -> dict[str, Any]:
    """One measured replay; returns the figures."""
    clock = SYSTEM_CLOCK
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.sbr"
        times = synthetic(path, seconds, rate, spikes, seed)
        n = len(times)
        child = subprocess.Popen(
            [sys.executable, "-c", RECEIVER, str(n), "2.0"],
            stdout=subprocess.PIPE,
        )
        assert child.stdout is not None
        port = int(child.stdout.readline())
        spec = endpoint_spec(f"udp://127.0.0.1:{port}?format=native", "out")
        ep = open_endpoint(spec)
        resender = Resender(make_codec(spec))
        player = Player(Recording([path]), clock=clock, spin_ns=int(spin_us * 1000),
                        keep_lateness=True)
        slack = tighten_timer_slack()
        after = np.zeros(n, dtype=np.int64)
        k = 0

        def send(_ep: int, frame: SpikeFrame) -> bool:
            nonlocal k
            ok = all([ep.send(d) for d in resender.datagrams(frame, clock.wall_ns())])
            after[k] = clock.monotonic_ns()
            k += 1
            return ok

        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        stats = player.run(send)
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        ep.close()
        raw, _ = child.communicate(timeout=60)
    assert player.schedule is not None
    due = player.schedule.start_ns + (times - times[0])
    late = np.frombuffer(stats.lateness_ns, dtype=np.int64)
    half = len(raw) // 2
    seqs = np.frombuffer(raw[:half], dtype=np.int64)
    arrivals = np.frombuffer(raw[half:], dtype=np.int64)
    recv_err = arrivals - due[seqs] if len(seqs) else np.empty(0, np.int64)
    cpu_s = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    wall_s = (after[-1] - due[0]) / 1e9 if n else 0.0
    return {
        "frames": n, "seconds": seconds, "rate": rate, "spin_us": spin_us,
        "timer_slack_1ns": slack,
        "send_start_error_us": quantiles_us(late),
        "send_end_error_us": quantiles_us(after - due),
        "receive_error_us": quantiles_us(recv_err),
        "received": len(seqs), "in_order": bool(np.all(np.diff(seqs) > 0)),
        "drift_us": drift_us(due, late),
        "receive_drift_us": drift_us(due[seqs], recv_err) if len(seqs) else {},
        "cpu_seconds": cpu_s, "cpu_share_of_one_core": cpu_s / wall_s if wall_s else 0.0,
    }


def build_parser() -> ArgumentParser:
    """The command's argument parser (for main, the man page and shell completion)."""
    parser = ArgumentParser(prog="spikebridge bench replay", description=__doc__,
                            epilog="example: spikebridge bench replay --duration 10 --json")
    add_duration(parser, "length of the replay", default=60.0)
    parser.add_argument("--rate", type=float, default=1000.0, help="mean frames/s")
    parser.add_argument("--spikes", type=int, default=10, help="ids per frame")
    add_spin_us(parser, "busy-wait before each frame", default=DEFAULT_SPIN_US)
    parser.add_argument("--seed", type=int, default=1, help="random seed")
    add_json(parser)
    return parser


def main(argv: Sequence[str]) -> int:
    """Run the replay benchmark and print its figures."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.rate <= 0 or not 0 <= args.spikes <= 1000:
        print("spikebridge bench replay: --duration and --rate must be > 0, --spikes 0..1000",
              file=sys.stderr)
        return 2
    print(f"spikebridge bench replay: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
          f"{args.duration:g} s at {args.rate:g} frames/s (Poisson), spin {args.spin_us:g} µs",
          flush=True)
    r = run(args.duration, args.rate, args.spikes, args.spin_us, args.seed)
    if args.json:
        write_json(args.json, r)
    print(f"  frames {r['frames']}, received {r['received']}, in order: {r['in_order']}, "
          f"timer slack 1 ns: {r['timer_slack_1ns']}")
    for key, label in (("send_start_error_us", "send start - due"),
                       ("send_end_error_us", "send end - due"),
                       ("receive_error_us", "arrival - due")):
        q = r[key]
        if q:
            print(f"  {label:<17} p50 {q['p50']:8.1f} µs  p99 {q['p99']:8.1f} µs  "
                  f"p99.9 {q['p99.9']:8.1f} µs  max {q['max']:9.1f} µs")
    d = r["drift_us"]
    print(f"  drift (send start): trend over the run {d['trend_over_run']:+.2f} µs, "
          f"last - first {d['last_minus_first']:+.1f} µs")
    if r["receive_drift_us"]:
        d = r["receive_drift_us"]
        print(f"  drift (arrival):    trend over the run {d['trend_over_run']:+.2f} µs, "
              f"last - first {d['last_minus_first']:+.1f} µs")
    print(f"  CPU: {r['cpu_seconds']:.1f} s, {100 * r['cpu_share_of_one_core']:.0f} % of one core")
    q = r["send_start_error_us"]
    print(f"  targets: p99 <= 200 µs: {'met' if q.get('p99', 1e9) <= 200 else 'NOT met'}; "
          f"drift < 1 ms: {'met' if abs(r['drift_us']['trend_over_run']) < 1000 else 'NOT met'}")
    return 0
