"""``spikebridge bench stepped``: stepped timing and Brian2 cost, against floors of the same run.

Parts (``--parts``, all by default):

- ``lateness``: the engine's step wake-up lateness p50/p99/p99.9 and its real-time factor over
  ``--seconds``, under SCHED_FIFO on one CPU, against ``cyclictest`` (rt-tests) on the same CPU
  at the same priority and interval: the physical floor. Target p99 <= 2x cyclictest's.
- ``cost``: the CUBA network's per-step cost inside the Brian2 processor against the same
  network run bare by ``Network.run`` with its inputs preloaded into a SpikeGeneratorGroup.
- ``latency``: UDP frame in -> response spikes out over UDP, through ``spikebridge run`` with the
  same-step reflex example at dt = 1 ms, against a bare UDP echo. Target p99 <= dt + 0.3 ms.
- ``capacity``: the largest CUBA network (100 synapses per neuron) that holds 1.0x real time
  inside the bridge against bare Brian2, both under the same scheduling. Target >= 0.9x.

A benchmark, not a test: it reads the real clocks, runs real processes, and never asserts.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from bridge.config import build_config
from bridge.engine.loop import Bridge
from bridge.engine.realtime import Realtime, RealtimeSettings
from bridge.engine.stats import BridgeStats, Histogram
from bridge.tools import ArgumentParser, add_dt, add_duration, add_json, add_spin_us, write_json

log = logging.getLogger("spikebridge.bench.stepped")

PARTS = ("lateness", "cost", "latency", "capacity")
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
# "Holds real time": bare Brian2 computes T simulated seconds in at most T wall seconds; the
# bridge (catch-up policy) skips no step and its lag at the end of the run (the median lateness
# of its last steps) is bounded: a bridge that cannot keep up is tens of ms behind after 2 s.
HOLD_LAG_US = 5000.0


# -- measurements -----------------------------------------------------------------------------


@dataclass
class Quantiles:
    """Percentiles of a sample in µs."""

    n: int
    p50: float
    p99: float
    p999: float
    max: float

    @classmethod
    def of_ns(cls, ns: npt.NDArray[Any]) -> Quantiles:
        """From samples in ns."""
        if ns.size == 0:
            return cls(0, *(float("nan"),) * 4)
        p = np.percentile(ns, [50, 99, 99.9]) / 1e3
        return cls(int(ns.size), float(p[0]), float(p[1]), float(p[2]), float(ns.max()) / 1e3)

    def text(self) -> str:
        """One line: p50/p99/p99.9/max in µs and the count."""
        return (f"p50 {self.p50:8.1f}  p99 {self.p99:8.1f}  p99.9 {self.p999:8.1f}  "
                f"max {self.max:9.1f} µs  (n={self.n})")


class RecordingHistogram(Histogram):
    """The engine's lateness histogram that also keeps every raw sample (bench only)."""

    __slots__ = ("filled", "samples")

    def __init__(self, edges_ns: tuple[int, ...], capacity: int) -> None:
        super().__init__(edges_ns)
        self.samples = np.zeros(capacity, dtype=np.int64)
        self.filled = 0

    def observe(self, ns: int) -> None:
        """Count as usual and keep the raw value while there is room."""
        super().observe(ns)
        if self.filled < self.samples.size:
            self.samples[self.filled] = ns
            self.filled += 1

    def values(self) -> npt.NDArray[np.int64]:
        """The samples kept so far."""
        return self.samples[: self.filled]


@contextlib.contextmanager
def realtime(priority: int, cpu: int | None) -> Iterator[list[str]]:
    """SCHED_FIFO and affinity for the calling thread; yields what was refused."""
    rt = Realtime(RealtimeSettings(priority=priority, cpus=(cpu,) if cpu is not None else ()))
    report = rt.apply()
    try:
        yield list(report.refused)
    finally:
        rt.release()


def free_port() -> int:
    """An unused UDP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class EngineRun:
    """One timed stepped run of the engine."""

    lateness: Quantiles
    realtime_factor: float
    steps: int
    skipped: int
    misses: int
    refused: list[str]
    final_lateness_us: float  # median lateness of the last 5% of steps: the lag at the end


def run_engine(doc: dict[str, Any], seconds: float, priority: int, cpu: int | None,
               on_progress: Callable[[str], None] = lambda _m: None) -> EngineRun:
    """Run a stepped Bridge from ``doc`` for ``seconds`` with raw lateness samples kept."""
    doc = {**doc, "bridge": {**doc["bridge"], "duration_s": seconds},
           "realtime": {"priority": priority, "cpus": [] if cpu is None else [cpu]}}
    cfg = build_config(doc, source="<bench>")
    stats = BridgeStats(cfg.miss_ns)
    capacity = int(seconds * 1e9 / cfg.dt_ns) + 16
    stats.step_lateness = RecordingHistogram(stats.step_lateness.edges_ns, capacity)
    bridge = Bridge(cfg, stats=stats)
    bridge.open(on_progress=on_progress)
    try:
        bridge.run()  # the loop thread applies [realtime] to itself
        refused = sorted(bridge.realtime.report.refused) if bridge.realtime else []
    finally:
        bridge.close()
    hist = stats.step_lateness
    assert isinstance(hist, RecordingHistogram)
    values = hist.values()
    tail = values[-max(1, values.size // 20):]
    return EngineRun(Quantiles.of_ns(values), stats.realtime_factor, stats.steps,
                     stats.steps_skipped, stats.deadline_misses, refused,
                     float(np.median(tail)) / 1e3 if tail.size else float("nan"))


def idle_doc(dt_ms: float, spin_us: float) -> dict[str, Any]:
    """A stepped relay bridge with one idle input: the engine's own timing, nothing else."""
    return {
        "bridge": {"mode": "stepped", "processor": "relay", "dt_ms": dt_ms, "spin_us": spin_us},
        "input": [f"udp://127.0.0.1:{free_port()}?format=native&neurons=16"],
    }


def cyclictest(seconds: float, interval_us: int, priority: int, cpu: int | None
               ) -> Quantiles | str:
    """cyclictest's wake-up latency samples on ``cpu``; a reason string when unavailable."""
    exe = shutil.which("cyclictest")
    if exe is None:
        return "cyclictest not found (Debian: apt-get install rt-tests)"
    loops = max(1, int(seconds * 1e6 / interval_us))
    cmd = [exe, "-m", "-q", "-v", "-N", "-t", "1", "-p", str(priority), "-i", str(interval_us),
           "-l", str(loops)]
    if cpu is not None:
        cmd += ["-a", str(cpu)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds * 3 + 30)
    except subprocess.TimeoutExpired:
        return "cyclictest did not finish"
    values = parse_cyclictest(done.stdout)
    if not values.size:
        return f"cyclictest gave no samples (exit {done.returncode}): {done.stderr.strip()[:200]}"
    return Quantiles.of_ns(values[1:])  # the first sample includes start-up


def parse_cyclictest(text: str) -> npt.NDArray[np.int64]:
    """The latencies of ``cyclictest -v -N`` output (``thread: loop: value`` lines), in ns."""
    values = []
    for line in text.splitlines():
        parts = line.split(":")
        if len(parts) == 3:
            with contextlib.suppress(ValueError):
                values.append(int(parts[2]))
    return np.array(values, dtype=np.int64)


# -- Brian2 parts ---------------------------------------------------------------------------


def _brian(cache_dir: str) -> Any:
    from bridge.processors.brian2 import import_brian

    b2 = import_brian()
    b2.prefs.codegen.target = "cython"
    b2.prefs.codegen.runtime.cython.cache_dir = cache_dir
    return b2


def _cuba_module() -> Any:
    from bridge.processors.brian2 import load_user_module

    return load_user_module(str(EXAMPLES / "cuba.py"))


def cuba_params(n: int, synapses: int) -> dict[str, Any]:
    """The CUBA example's params for a size; 100 inputs, 100 outputs."""
    return {"n": n, "synapses": synapses, "p_in": 0.05, "n_out": 100, "seed": 1}


def input_pattern(steps: int, inputs: int, rate_hz: float, dt_s: float, seed: int = 5
                  ) -> list[npt.NDArray[np.uint32]]:
    """Poisson input: per step, the ids of the ``inputs`` neurons that fire at ``rate_hz``."""
    rng = np.random.default_rng(seed)
    fire = rng.random((steps, inputs)) < rate_hz * dt_s
    return [np.flatnonzero(row).astype(np.uint32) for row in fire]


def bare_run(b2: Any, n: int, synapses: int, steps: int, dt_s: float,
             pattern: list[npt.NDArray[np.uint32]] | None) -> float:
    """Seconds of Brian's own run loop for ``steps`` steps of CUBA, inputs preloaded."""
    from brian2.devices.device import get_device

    mod = _cuba_module()
    b2.defaultclock.dt = dt_s * b2.second
    if pattern:
        idx = np.concatenate(pattern) if pattern else np.empty(0)
        when = np.concatenate([np.full(len(p), k) for k, p in enumerate(pattern)])
        gen = b2.SpikeGeneratorGroup(100, idx.astype(int), when * dt_s * b2.second)
    else:
        gen = b2.SpikeGeneratorGroup(100, [], [] * b2.second)
    built = mod.build(gen, b2.defaultclock.dt, cuba_params(n, synapses))
    net = b2.Network(gen, *built.objects)
    net.run(steps * dt_s * b2.second, namespace={})
    seconds: float = get_device()._last_run_time  # the loop alone, as in Network.run
    return seconds


def bridged_run(cache_dir: str, n: int, synapses: int, dt_s: float,
                pattern: list[npt.NDArray[np.uint32]]) -> float:
    """Seconds for the Brian2 processor to run ``len(pattern)`` steps of CUBA."""
    from bridge.processors.brian2 import Brian2Processor, Brian2Settings

    proc = Brian2Processor.from_spec(str(EXAMPLES / "cuba.py"))
    proc.configure(Brian2Settings(cache_dir=cache_dir))
    proc.setup(inputs=100, dt_ns=round(dt_s * 1e9), params=cuba_params(n, synapses))
    step = proc.step
    try:
        t0 = time.perf_counter()
        for ids in pattern:
            step(ids, 0)
        return time.perf_counter() - t0
    finally:
        proc.post_run()
        proc.close()


def brian_cost(cache_dir: str, n: int, dt_ms: float, steps: int, repeats: int,
               priority: int, cpu: int | None) -> dict[str, float]:
    """Per-step µs of CUBA, bridged and bare (best of ``repeats``, interleaved)."""
    b2 = _brian(cache_dir)
    dt_s = dt_ms / 1e3
    pattern = input_pattern(steps, 100, 20.0, dt_s)
    bare: list[float] = []
    bridged: list[float] = []
    bare_run(b2, n, 80, 10, dt_s, pattern[:10])  # compile outside the timing
    bridged_run(cache_dir, n, 80, dt_s, pattern[:10])
    for _ in range(repeats):
        with realtime(priority, cpu):
            bare.append(bare_run(b2, n, 80, steps, dt_s, pattern) / steps)
            bridged.append(bridged_run(cache_dir, n, 80, dt_s, pattern) / steps)
    return {"bare_us": min(bare) * 1e6, "bridged_us": min(bridged) * 1e6,
            "ratio": min(bridged) / min(bare), "neurons": n, "dt_ms": dt_ms,
            "input_spikes": int(sum(len(p) for p in pattern))}


def bare_holds(cache_dir: str, n: int, synapses: int, dt_ms: float, seconds: float,
               priority: int, cpu: int | None) -> tuple[bool, str]:
    """Whether bare Brian2 runs CUBA of ``n`` neurons at least as fast as real time."""
    b2 = _brian(cache_dir)
    steps = int(seconds * 1e3 / dt_ms)
    with realtime(priority, cpu):
        wall = bare_run(b2, n, synapses, steps, dt_ms / 1e3, None)
    return seconds / wall >= 1.0, f"simulated/wall {seconds / wall:.4f}"


def bridge_holds(cache_dir: str, n: int, synapses: int, dt_ms: float, seconds: float,
                 priority: int, cpu: int | None) -> tuple[bool, str]:
    """Whether the bridge keeps CUBA of ``n`` neurons on schedule for ``seconds``."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:
        sink.bind(("127.0.0.1", 0))  # the output goes somewhere real; nobody reads it
        doc = {
            "bridge": {"processor": f"brian2:{EXAMPLES / 'cuba.py'}", "dt_ms": dt_ms,
                       "policy": "catch-up"},
            "input": [f"udp://127.0.0.1:{free_port()}?format=native&neurons=100"],
            "output": [f"udp://127.0.0.1:{sink.getsockname()[1]}?format=native&neurons=100"],
            "processor": {"params": cuba_params(n, synapses)},
            "brian2": {"cache_dir": cache_dir},
        }
        run = run_engine(doc, seconds, priority, cpu)
    holds = run.skipped == 0 and run.final_lateness_us < HOLD_LAG_US
    return holds, (f"lag at the end {run.final_lateness_us:8.1f} µs, f {run.realtime_factor:.4f}, "
                   f"skipped {run.skipped}")


def largest_holding(holds: Callable[[int], bool], start: int, lo: int = 0, hi: int = 0,
                    resolution: float = 1.05, limit: int = 2_000_000) -> int:
    """The largest n for which ``holds(n)``: grow by 2x from ``start`` (unless a ``lo``..``hi``
    bracket is given), then bisect until hi / lo <= ``resolution``; 0 if none holds."""
    if not hi:
        n = start
        while n <= limit and holds(n):
            lo, n = n, n * 2
        hi = n
    else:
        while lo and not holds(lo):  # the bracket's floor must hold too
            lo, hi = lo // 2, lo
    while lo and hi > lo * resolution:
        mid = (lo + hi) // 2
        if holds(mid):
            lo = mid
        else:
            hi = mid
    return lo


# -- end-to-end latency through the daemon --------------------------------------------------

# Gaps between probes span whole steps (2 of them), so probes land at uniform phases of dt.
GAP_S = (0.002, 0.004)

ECHO_SOURCE = """\
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", int(sys.argv[1])))
dst = ("127.0.0.1", int(sys.argv[2]))
while True:
    s.sendto(s.recv(65536), dst)
"""


def _pinned(cmd: list[str], priority: int, cpu: int | None) -> list[str]:
    pre: list[str] = []
    if cpu is not None and shutil.which("taskset"):
        pre += ["taskset", "-c", str(cpu)]
    if priority and shutil.which("chrt"):
        pre += ["chrt", "-f", str(priority)]
    return pre + cmd


def _pingpong(rx: socket.socket, tx: socket.socket, dst: tuple[str, int], frames: list[bytes],
              gap_s: tuple[float, float], timeout: float) -> npt.NDArray[np.int64]:
    """Send each frame, wait for one answer, record the round trip in ns; random gaps."""
    rng = np.random.default_rng(11)
    rx.settimeout(timeout)
    out = []
    for frame in frames:
        with contextlib.suppress(BlockingIOError, OSError):
            rx.setblocking(False)
            while True:
                rx.recv(65536)
        rx.settimeout(timeout)
        t0 = time.perf_counter_ns()
        tx.sendto(frame, dst)
        try:
            rx.recv(65536)
        except TimeoutError:
            continue
        out.append(time.perf_counter_ns() - t0)
        time.sleep(rng.uniform(*gap_s))
    return np.array(out, dtype=np.int64)


def stepped_latency(cache_dir: str, frames: int, priority: int, cpu: int | None,
                    spin_us: float, workdir: Path) -> dict[str, Any]:
    """UDP in -> reflex answer out through ``spikebridge run`` at dt = 1 ms; and a bare echo."""
    from bridge.codecs.native import NativeCodec
    from bridge.frame import SpikeFrame

    pin, pout = free_port(), free_port()
    others = sorted(os.sched_getaffinity(0) - {cpu})
    probe_cpu = others[0] if others else cpu  # the sender/receiver, beside the daemon's CPU
    config = workdir / "reflex-bench.toml"
    config.write_text(
        "[bridge]\n"
        f'processor = "brian2:{EXAMPLES / "reflex.py"}"\n'
        f"dt_ms = 1.0\nspin_us = {spin_us}\n"
        f'[[input]]\nurl = "udp://127.0.0.1:{pin}?format=native&neurons=64"\n'
        f'[[output]]\nurl = "udp://127.0.0.1:{pout}?format=native&neurons=2"\n'
        "[processor.params]\nweight = 1.5\ninhibition = 0.0\nrefractory_ms = 0.0\n"
        f'[brian2]\ncache_dir = "{cache_dir}"\n'
        f"[realtime]\npriority = {priority}\ncpus = {[] if cpu is None else [cpu]}\n"
    )
    codec = NativeCodec(64)
    datagrams = [codec.encode(SpikeFrame.of([k % 64], source=3, seq=k))[0]
                 for k in range(frames)]
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", pout))
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    result: dict[str, Any] = {}
    cmd = [sys.executable, "-m", "bridge", "run", str(config), "--log-level", "warning"]
    daemon = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        rx.settimeout(1.0)
        deadline = time.monotonic() + 300  # a first start compiles the network
        while time.monotonic() < deadline and daemon.poll() is None:
            tx.sendto(datagrams[0], ("127.0.0.1", pin))
            with contextlib.suppress(TimeoutError):
                rx.recv(65536)
                break
        if daemon.poll() is not None:
            return {"error": f"daemon exited: {(daemon.stderr.read() if daemon.stderr else '')}"}
        time.sleep(0.5)
        with realtime(max(1, priority - 1), probe_cpu):  # the probe is timing-critical too
            rtt = _pingpong(rx, tx, ("127.0.0.1", pin), datagrams, GAP_S, 0.05)
        result["bridge"] = asdict(Quantiles.of_ns(rtt))
    finally:
        daemon.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            daemon.wait(20)
        if daemon.poll() is None:
            daemon.kill()
    epin = free_port()
    echo = subprocess.Popen(_pinned([sys.executable, "-c", ECHO_SOURCE, str(epin), str(pout)],
                                    priority, cpu))
    try:
        time.sleep(0.3)
        with realtime(max(1, priority - 1), probe_cpu):
            rtt = _pingpong(rx, tx, ("127.0.0.1", epin), datagrams, GAP_S, 0.05)
        result["echo"] = asdict(Quantiles.of_ns(rtt))
    finally:
        echo.kill()
        echo.wait()
        rx.close()
        tx.close()
    return result


# -- command --------------------------------------------------------------------------------


def default_cpu() -> int:
    """The highest CPU this process may use (often the least busy with interrupts)."""
    return max(os.sched_getaffinity(0))


def build_parser() -> ArgumentParser:
    """The command's argument parser (for main, the man page and shell completion)."""
    parser = ArgumentParser(prog="spikebridge bench stepped", description=__doc__.split("\n")[0],
                            epilog="example: spikebridge bench stepped --parts lateness "
                                   "--duration 10 --json stepped.json")
    parser.add_argument("--parts", default=",".join(PARTS),
                        help=f"comma-separated, from {', '.join(PARTS)} (default: all)")
    add_duration(parser, "length of the lateness / real-time-factor run", dest="seconds",
                 default=60.0)
    add_dt(parser, "engine step for the lateness run", default=1.0, old=())
    add_spin_us(parser, "spin before each deadline", dest="spin", default=100.0)
    parser.add_argument("--cpu", type=int, default=None, help="CPU to pin to (default: last)")
    parser.add_argument("--priority", type=int, default=80, help="SCHED_FIFO priority")
    parser.add_argument("--neurons", type=int, default=4000, help="CUBA size for 'cost'")
    parser.add_argument("--brian-dt", type=float, default=0.1, metavar="MS",
                        help="Brian dt for 'cost' and 'capacity'")
    parser.add_argument("--cost-steps", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--frames", type=int, default=2000, help="round trips for 'latency'")
    parser.add_argument("--capacity-seconds", type=float, default=2.0,
                        help="simulated seconds per capacity probe")
    parser.add_argument("--capacity-start", type=int, default=8000)
    parser.add_argument("--capacity-tries", type=int, default=2,
                        help="attempts per capacity probe; it holds if any attempt does")
    parser.add_argument("--cache-dir", default=None, help="Brian2 code cache (default: the "
                        "daemon's default cache)")
    add_json(parser, "the figures")
    return parser


def main(argv: Sequence[str]) -> int:
    """Run the chosen parts and print figures and ratios; exit 0 (1 if a part failed)."""
    parser = build_parser()
    args = parser.parse_args(list(argv))
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = set(parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown part(s) {', '.join(sorted(unknown))}; choose from "
                     f"{', '.join(PARTS)}")
    from bridge.processors.brian2 import default_cache_dir

    cache_dir = args.cache_dir or default_cache_dir()
    cpu = args.cpu if args.cpu is not None else default_cpu()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    figures: dict[str, Any] = {"cpu": cpu, "priority": args.priority}
    print(f"spikebridge bench stepped: CPU {cpu}, SCHED_FIFO {args.priority}, "
          f"parts {', '.join(parts)}", flush=True)
    failed = False

    if "lateness" in parts:
        dt_ns = round(args.dt * 1e6)
        run = run_engine(idle_doc(args.dt, args.spin), args.seconds, args.priority, cpu)
        floor = cyclictest(args.seconds, dt_ns // 1000, args.priority, cpu)
        print(f"\nstep wake-up lateness, dt {args.dt} ms, spin {args.spin} µs, "
              f"{args.seconds:g} s" + (f" (refused: {', '.join(run.refused)})"
                                       if run.refused else ""))
        print(f"  spikebridge  {run.lateness.text()}")
        if isinstance(floor, Quantiles):
            print(f"  cyclictest   {floor.text()}")
            ratio = run.lateness.p99 / floor.p99
            print(f"  p99 ratio {ratio:.2f}x cyclictest (target <= 2x)")
            figures["cyclictest"] = asdict(floor)
            figures["lateness_p99_ratio"] = ratio
        else:
            print(f"  cyclictest   {floor}")
        print(f"  real-time factor {run.realtime_factor:.6f} over {run.steps} steps "
              f"(|1 - f| = {abs(1 - run.realtime_factor) * 100:.4f}%, target <= 0.1%); "
              f"misses {run.misses}, skipped {run.skipped}")
        figures["lateness"] = asdict(run)

    if "cost" in parts:
        try:
            cost = brian_cost(cache_dir, args.neurons, args.brian_dt, args.cost_steps,
                              args.repeats, args.priority, cpu)
        except Exception as exc:  # a benchmark reports a broken part and goes on
            failed = True
            print(f"\nBrian2 step cost: failed: {exc!r}")
        else:
            print(f"\nBrian2 step cost, CUBA {cost['neurons']} neurons, dt {cost['dt_ms']} ms, "
                  f"{cost['input_spikes']} input spikes over {args.cost_steps} steps "
                  f"(best of {args.repeats})")
            print(f"  bare Network.run + SpikeGeneratorGroup  {cost['bare_us']:8.2f} µs/step")
            print(f"  spikebridge Brian2 processor           {cost['bridged_us']:8.2f} µs/step")
            print(f"  ratio {cost['ratio']:.3f}x bare (target <= 1.05x)")
            figures["cost"] = cost

    if "latency" in parts:
        with tempfile.TemporaryDirectory() as tmp:
            lat = stepped_latency(cache_dir, args.frames, args.priority, cpu, args.spin,
                                  Path(tmp))
        if "error" in lat:
            failed = True
            print(f"\nstepped end-to-end latency: {lat['error']}")
        else:
            bridge_q, echo_q = Quantiles(**lat["bridge"]), Quantiles(**lat["echo"])
            print("\nstepped end-to-end latency, UDP in -> reflex spikes out, dt 1 ms "
                  "(round trip seen by the sender)")
            print(f"  spikebridge  {bridge_q.text()}")
            print(f"  bare echo    {echo_q.text()}")
            print(f"  p99 = dt + {(bridge_q.p99 - 1000) / 1e3:.3f} ms (target <= dt + 0.3 ms)")
            figures["latency"] = lat

    if "capacity" in parts:
        try:
            dt_ms, secs = args.brian_dt, args.capacity_seconds
            print(f"\ncapacity: largest CUBA (100 synapses/neuron) holding real time, dt "
                  f"{dt_ms} ms, {secs:g} s probes", flush=True)

            def probe(name: str, holds: Callable[..., tuple[bool, str]]) -> Callable[[int], bool]:
                def attempt(n: int) -> bool:
                    # Best of --capacity-tries: other work on a shared machine only slows a run.
                    for _ in range(args.capacity_tries):
                        ok, why = holds(cache_dir, n, 100, dt_ms, secs, args.priority, cpu)
                        print(f"  {name:6} n={n:7d}  {'holds' if ok else 'falls behind'}: {why}",
                              flush=True)
                        if ok:
                            return True
                    return False
                return attempt

            bare, bridged = probe("bare", bare_holds), probe("bridge", bridge_holds)

            bare_cap = largest_holding(bare, args.capacity_start)
            if bare_cap and bridged(bare_cap):
                bridge_cap = bare_cap
            else:
                bridge_cap = largest_holding(bridged, 0, lo=bare_cap // 2, hi=bare_cap)
            ratio = bridge_cap / bare_cap if bare_cap else float("nan")
            print(f"  bare {bare_cap} neurons, bridge {bridge_cap} neurons: "
                  f"{ratio:.3f}x (target >= 0.9x)")
            figures["capacity"] = {"bare": bare_cap, "bridge": bridge_cap, "ratio": ratio,
                                   "dt_ms": dt_ms, "seconds": secs}
        except Exception as exc:
            failed = True
            print(f"  failed: {exc!r}")

    if args.json:
        write_json(args.json, figures, default=str)
    return 1 if failed else 0
