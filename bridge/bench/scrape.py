"""``spikebridge bench scrape``: does serving Prometheus scrapes disturb the real-time loop?

Runs a stepped bridge in this process with the metrics exporter the daemon uses (its own
process, fed counter snapshots; ``--in-process`` serves from a thread here instead, with the
daemon's registry layout: the spikebridge collector plus the process, platform and GC
collectors), and measures
every step's lateness in alternating phases: no scrapes, then ``--rate`` scrapes per second from
a separate process (as Prometheus would), with ``--idle`` idle TCP connections and a client
sending its request one byte a second held open beside them (reopened whenever the server
closes them), then the other way round, ``--rounds`` times. It
reports the lateness quantiles of both conditions, the p99 ratio against the target (<= 1.5x),
how long one collection holds the interpreter, and what each scrape cost the scraper.

A benchmark, not a test: it reads the real clocks, runs real processes, and never asserts.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from bridge.bench.stepped import Quantiles, RecordingHistogram, free_port
from bridge.config import build_config
from bridge.engine.loop import Bridge
from bridge.engine.stats import BridgeStats
from bridge.service.exporter import MetricsServer
from bridge.service.metrics import register
from bridge.service.metrics_process import MetricsProcess, snapshot
from bridge.tools import ArgumentParser, add_dt, add_duration, add_json, add_spin_us, write_json

TARGET_RATIO = 1.5

# The scraper: GET the URL RATE times a second on an absolute schedule for SECONDS, then print
# the scrape durations (ns) as JSON. A separate process, like Prometheus.
SCRAPER = """
import json, sys, time, urllib.request
url, rate, seconds = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
period = 1.0 / rate
start = time.monotonic()
durations, size, k = [], 0, 0
while True:
    due = start + k * period
    if due - start >= seconds:
        break
    time.sleep(max(0.0, due - time.monotonic()))
    t0 = time.perf_counter_ns()
    with urllib.request.urlopen(url, timeout=5) as resp:
        size = len(resp.read())
    durations.append(time.perf_counter_ns() - t0)
    k += 1
print(json.dumps({"durations": durations, "bytes": size}))
"""

# Hostile clients: hold IDLE connections open without a byte sent, and one that sends its
# request a byte a second; reopen each one the server closes. Prints how many were reopened.
IDLER = """
import selectors, socket, sys, time
port, n, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
sel = selectors.DefaultSelector()
def connect(slow=False):
    s = socket.socket()
    try:
        s.connect(("127.0.0.1", port))
    except OSError:
        return None
    s.setblocking(False)
    sel.register(s, selectors.EVENT_READ, slow)
    return s
for _ in range(n):
    connect()
request = b"GET /metrics HTTP/1.1\\r\\nHost: bench\\r\\n\\r\\n"
slow, sent, reopened = connect(True), 0, 0
start = time.monotonic()
next_byte = start + 1.0
while (now := time.monotonic()) < start + seconds:
    for key, _ in sel.select(max(0.0, next_byte - now)):
        sel.unregister(key.fileobj)
        key.fileobj.close()
        reopened += 1
        if key.data:
            slow, sent = connect(True), 0
        else:
            connect()
    if time.monotonic() >= next_byte:
        next_byte += 1.0
        if slow is not None:
            try:
                slow.send(request[sent % len(request):sent % len(request) + 1])
                sent += 1
            except OSError:
                pass
print(reopened)
"""


@dataclass
class Phase:
    """One timed run: whether it was scraped, the step lateness, and the scrapes served."""

    scraped: bool
    lateness: Quantiles
    misses: int
    scrapes: int


def bench_doc(endpoints: int, dt_ms: float, priority: int, cpu: int | None,
              switch_interval_us: float | None, spin_us: float = 0.0) -> dict[str, Any]:
    """A stepped relay bridge with ``endpoints`` idle inputs, each to an output of its own."""
    realtime: dict[str, Any] = {"priority": priority, "cpus": [] if cpu is None else [cpu]}
    if switch_interval_us is not None:
        realtime["switch_interval_us"] = switch_interval_us
    return {
        "bridge": {"mode": "stepped", "processor": "relay", "dt_ms": dt_ms, "spin_us": spin_us},
        "input": [f"udp://127.0.0.1:{free_port()}?format=native&neurons=16&offset={16 * i}"
                  f"&name=in{i}" for i in range(endpoints)],
        "output": [f"udp://127.0.0.1:{free_port()}?format=native&neurons=16&offset={16 * i}"
                   f"&name=out{i}" for i in range(endpoints)],
        "realtime": realtime,
    }


def production_registry(stats: BridgeStats) -> CollectorRegistry:
    """A fresh registry holding what the daemon's default registry holds."""
    reg = CollectorRegistry()
    ProcessCollector(registry=reg)
    PlatformCollector(registry=reg)
    GCCollector(registry=reg)
    register(stats, reg)
    return reg


def run_phase(doc: dict[str, Any], seconds: float, rate: float,
              idle: int = 0, in_process: bool = False) -> tuple[Phase, dict[str, Any]]:
    """One stepped run of ``seconds`` with (rate > 0) or without scrapes from another process.

    With scrapes, ``idle`` > 0 also holds that many idle connections and one slow client open.
    """
    cfg = build_config({**doc, "bridge": {**doc["bridge"], "duration_s": seconds}},
                       source="<bench>")
    stats = BridgeStats(cfg.miss_ns)
    capacity = int(seconds * 1e9 / cfg.dt_ns) + 16
    stats.step_lateness = RecordingHistogram(stats.step_lateness.edges_ns, capacity)
    server: MetricsServer | MetricsProcess
    if in_process:
        server = MetricsServer("127.0.0.1", 0, production_registry(stats))
    else:
        server = MetricsProcess("127.0.0.1", 0, stats)  # what the daemon runs
    port = server.start()[1]
    scraper = idler = None
    bridge = Bridge(cfg, stats=stats)
    try:
        bridge.open()
        if rate > 0 and idle > 0:
            idler = subprocess.Popen(
                [sys.executable, "-c", IDLER, str(port), str(idle), str(seconds + 1)],
                stdout=subprocess.PIPE, text=True)
            time.sleep(0.3)  # the connections are open before the phase starts
        if rate > 0:
            scraper = subprocess.Popen(
                [sys.executable, "-c", SCRAPER, f"http://127.0.0.1:{port}/metrics", str(rate),
                 str(seconds)], stdout=subprocess.PIPE, text=True)
        bridge.run()
    finally:
        bridge.close()
        scraped: dict[str, Any] = {"durations": [], "bytes": 0}
        if scraper is not None:
            out, _ = scraper.communicate(timeout=seconds + 30)
            scraped = json.loads(out or '{"durations": [], "bytes": 0}')
        if idler is not None:
            out, _ = idler.communicate(timeout=seconds + 30)
            scraped["reopened"] = int(out or 0)
        scrapes = server.scrapes
        server.close()
    hist = stats.step_lateness
    assert isinstance(hist, RecordingHistogram)
    phase = Phase(rate > 0, Quantiles.of_ns(hist.values()), stats.deadline_misses, scrapes)
    return phase, {**scraped, "samples": hist.values().copy()}


def collection_cost(endpoints: int, repeats: int = 200) -> tuple[Quantiles, int]:
    """How long one collection and exposition holds the interpreter, and its size in bytes."""
    cfg = build_config(bench_doc(endpoints, 1.0, 0, None, None), source="<bench>")
    stats = BridgeStats(cfg.miss_ns)
    for spec in cfg.inputs:
        stats.add_input(spec.name)
    for spec in cfg.outputs:
        stats.add_output(spec.name)
    stats.latency("stepped")
    reg = production_registry(stats)
    times = []
    body = b""
    for _ in range(repeats):
        t0 = time.perf_counter_ns()
        body = generate_latest(reg)
        times.append(time.perf_counter_ns() - t0)
    return Quantiles.of_ns(np.array(times, dtype=np.int64)), len(body)


def snapshot_cost(endpoints: int, repeats: int = 200) -> Quantiles:
    """What the daemon itself does per scrape with the exporter process: the JSON snapshot."""
    cfg = build_config(bench_doc(endpoints, 1.0, 0, None, None), source="<bench>")
    stats = BridgeStats(cfg.miss_ns)
    for spec in cfg.inputs:
        stats.add_input(spec.name)
    for spec in cfg.outputs:
        stats.add_output(spec.name)
    stats.latency("stepped")
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter_ns()
        snapshot(stats)
        times.append(time.perf_counter_ns() - t0)
    return Quantiles.of_ns(np.array(times, dtype=np.int64))


def build_parser() -> ArgumentParser:
    """The command's argument parser (for main, the man page and shell completion)."""
    parser = ArgumentParser(prog="spikebridge bench scrape", description=__doc__,
                            epilog="example: spikebridge bench scrape --rounds 3 --json")
    add_duration(parser, "length of each phase", dest="seconds", default=2.0)
    parser.add_argument("--rounds", type=int, default=5,
                        help="quiet/scraped phase pairs, alternating their order, so that a "
                             "change in the machine's other load hits both alike")
    parser.add_argument("--rate", type=float, default=10.0, help="scrapes per second")
    parser.add_argument("--endpoints", type=int, default=4,
                        help="inputs and as many outputs: the exposition grows with them")
    add_dt(parser, "step", default=1.0, old=())
    add_spin_us(parser, "busy-wait this long before each deadline ([bridge] spin_us)")
    parser.add_argument("--priority", type=int, default=0,
                        help="SCHED_FIFO priority of the loop thread (0: leave it)")
    parser.add_argument("--cpu", type=int, help="pin the loop thread to this CPU")
    parser.add_argument("--switch-interval-us", type=float,
                        help="sys.setswitchinterval for the run ([realtime] switch_interval_us)")
    parser.add_argument("--idle", type=int, default=0,
                        help="idle TCP connections held open (plus one client sending a byte a "
                             "second) while scraping")
    parser.add_argument("--in-process", action="store_true",
                        help="serve from a thread of this process (the exposition formatted "
                             "under the loop's interpreter lock) instead of the daemon's "
                             "exporter process")
    add_json(parser)
    return parser


def main(argv: Sequence[str]) -> int:
    """Print lateness with and without scrapes, and the p99 ratio against the target."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.rounds < 1 or args.rate <= 0 or args.endpoints < 1:
        parser.error("--seconds, --rounds, --rate and --endpoints must be positive")
    if args.idle < 0:
        parser.error("--idle must be >= 0")

    doc = bench_doc(args.endpoints, args.dt, args.priority, args.cpu, args.switch_interval_us,
                    args.spin_us)
    phases: list[Phase] = []
    pooled: dict[bool, list[np.ndarray]] = {False: [], True: []}
    scrape_ns: list[int] = []
    size = 0
    for rnd in range(args.rounds):
        for scraped in ((False, True) if rnd % 2 == 0 else (True, False)):
            phase, extra = run_phase(doc, args.seconds, args.rate if scraped else 0.0,
                                     args.idle, args.in_process)
            phases.append(phase)
            pooled[scraped].append(extra["samples"])
            scrape_ns += extra["durations"]
            size = extra["bytes"] or size
            if not args.json:
                label = f"{args.rate:g} scrapes/s" if scraped else "no scrapes"
                print(f"round {rnd + 1} {label:<14} {phase.lateness.text()}  "
                      f"misses {phase.misses}  scrapes {phase.scrapes}"
                      + (f"  clients reopened {extra['reopened']}" if "reopened" in extra else ""),
                      flush=True)
    quiet = Quantiles.of_ns(np.concatenate(pooled[False]))
    loud = Quantiles.of_ns(np.concatenate(pooled[True]))
    ratio = loud.p99 / quiet.p99 if quiet.p99 > 0 else float("inf")
    # Per round: robust to one round disturbed by something else on the machine.
    pair_ratios = [b.lateness.p99 / a.lateness.p99 if a.lateness.p99 > 0 else float("inf")
                   for a, b in (sorted(phases[i:i + 2], key=lambda p: p.scraped)
                                for i in range(0, len(phases), 2))]
    median_ratio = float(np.median(pair_ratios))
    cost, body_bytes = collection_cost(args.endpoints)
    snap = snapshot_cost(args.endpoints)
    scrapes = Quantiles.of_ns(np.array(scrape_ns, dtype=np.int64))
    result = {
        "settings": {k: v for k, v in vars(args).items() if k != "json"},
        "no_scrapes": asdict(quiet), "scraped": asdict(loud), "p99_ratio": ratio,
        "round_p99_ratios": pair_ratios, "median_round_p99_ratio": median_ratio,
        "target_ratio": TARGET_RATIO, "holds": ratio <= TARGET_RATIO,
        "collection_us": asdict(cost), "snapshot_us": asdict(snap),
        "exposition_bytes": body_bytes or size,
        "scrape_round_trip_us": asdict(scrapes), "phases": [asdict(p) for p in phases],
    }
    if args.json:
        write_json(args.json, result)
        if args.json == "-":
            return 0
    print(f"\nstep lateness, all rounds (dt {args.dt:g} ms, {args.endpoints} in + "
          f"{args.endpoints} out):")
    print(f"  no scrapes      {quiet.text()}")
    clients = f" + {args.idle} idle, 1 slow" if args.idle else ""
    print(f"  {args.rate:g} scrapes/s{clients}  {loud.text()}")
    verdict = "holds" if ratio <= TARGET_RATIO else "does NOT hold"
    print(f"  p99 ratio {ratio:.2f} (target <= {TARGET_RATIO}): {verdict}")
    print(f"  p99 ratio per round: {' '.join(f'{r:.2f}' for r in pair_ratios)} "
          f"(median {median_ratio:.2f})")
    print(f"one collection + exposition ({body_bytes} bytes), in-process: {cost.text()}")
    print(f"one snapshot (the daemon's share with the exporter process): "
          f"{snap.text()}")
    print(f"scrape round trip seen by the scraper: {scrapes.text()}")
    return 0
