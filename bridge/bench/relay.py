"""``spikebridge bench relay``: relay latency and throughput, side by side with the floors.

In one run, on loopback, with the legacy 100-neuron frame, it measures:
ping-pong round trip (p50/p99/p99.9) and the highest offered rate still >= 99 % delivered, for
spikebridge in relay mode, for a bare recv->sendto Python relay (the floor) and, when the
reference programs are present, for a port of the predecessor's process-and-pipe relay. It
prints ratios
to the floor. It never asserts: it is a benchmark, not a test.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bridge.tools import ArgumentParser, add_duration, add_json, deprecated, write_json

NEURONS = 100
FRAME = bytes([0, 0, 0, 0, 0, 0, 0, 1]) + bytes(
    1 if i in (1, 7, 50) else 0 for i in range(NEURONS)
)
SO_RXQ_OVFL = getattr(socket, "SO_RXQ_OVFL", 40)

# The floor, used when the shared anchors are not beside the checkout: the same bare relay.
FLOOR_SOURCE = '''\
import socket, sys
src = ("127.0.0.1", int(sys.argv[1])); dst = ("127.0.0.1", int(sys.argv[2]))
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20); s.bind(src)
o = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
hdr = bytes([0,0,0,0,0,0,0,1])
while True:
    d = s.recv(65536)
    o.sendto(hdr + d[8:], dst)
'''

SENDER_SOURCE = '''\
import socket, sys, time
rate, secs, port = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
msg = bytes.fromhex(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
s.connect(("127.0.0.1", port))
send, clock = s.send, time.perf_counter
n = fails = 0
t0 = clock(); end = t0 + secs
if rate <= 0:
    while clock() < end:
        for _ in range(64):
            try:
                send(msg); n += 1
            except OSError:
                fails += 1
else:
    while True:
        now = clock()
        if now >= end:
            break
        due = int((now - t0) * rate)
        while n < due:
            try:
                send(msg); n += 1
            except OSError:
                fails += 1
                break
        time.sleep(0.0002)
print(n, fails, clock() - t0)
'''


@dataclass
class Result:
    """What one target achieved."""

    name: str
    rtt_us: dict[str, float] = field(default_factory=dict)
    rtt_lost: int = 0
    blast: dict[str, float] = field(default_factory=dict)
    throughput_fps: float = 0.0
    throughput_note: str = ""
    cpu_us_per_frame: float = float("nan")
    books: dict[str, int] = field(default_factory=dict)
    relayed: int = 0  # frames the relay sent on during the blasts (delivered + receiver drops)


def free_port() -> int:
    """An unused UDP port on 127.0.0.1 (bound and released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def anchors_dir(explicit: str | None) -> Path | None:
    """The shared anchors directory: --anchors, else ../shared/anchors beside the checkout."""
    if explicit:
        return Path(explicit)
    here = Path(__file__).resolve()
    for parent in here.parents:
        cand = parent.parent / "shared" / "anchors"
        if (parent / "pyproject.toml").exists() and cand.is_dir():
            return cand
    return None


class Receiver:
    """Counts datagrams arriving on a bound socket in a background thread."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.count = 0
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.sock.settimeout(0.05)
        recv = self.sock.recv
        while not self._stop:
            try:
                recv(65536)
            except (TimeoutError, BlockingIOError):
                continue
            except OSError:
                return
            self.count += 1

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop = True
        self._thread.join()


def overflow(sock: socket.socket) -> int:
    """Kernel drops on ``sock`` so far, read from a zero-length peek's ancillary data."""
    sock.setblocking(False)
    try:
        _, anc, _, _ = sock.recvmsg(0, 64, socket.MSG_PEEK)
    except OSError:
        return 0
    finally:
        sock.setblocking(True)
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == SO_RXQ_OVFL:
            return int.from_bytes(data[:4], sys.byteorder)
    return 0


def pingpong(sock: socket.socket, in_port: int, n: int, warmup: int, timeout: float
             ) -> tuple[np.ndarray, int]:
    """Round-trip times (ns) of ``n`` one-at-a-time frames; and how many got no answer."""
    sock.settimeout(timeout)
    dst = ("127.0.0.1", in_port)
    rtts: list[int] = []
    lost = 0
    clock = time.perf_counter_ns
    for i in range(n + warmup):
        sock.setblocking(False)
        with contextlib.suppress(OSError):
            while True:
                sock.recv(65536)
        sock.settimeout(timeout)
        t0 = clock()
        sock.sendto(FRAME, dst)
        try:
            sock.recv(65536)
        except TimeoutError:
            lost += 1
            continue
        if i >= warmup:
            rtts.append(clock() - t0)
    return np.asarray(rtts, dtype=np.int64), lost


def blast(sock: socket.socket, in_port: int, rate: float, seconds: float
          ) -> dict[str, float]:
    """Send at ``rate`` (0: as fast as one sender can) for ``seconds``; count what came back."""
    before = overflow(sock)
    with Receiver(sock) as rx:
        proc = subprocess.run(
            [sys.executable, "-c", SENDER_SOURCE, str(rate), str(seconds), str(in_port),
             FRAME.hex()],
            capture_output=True, text=True, check=True, timeout=seconds + 30,
        )
        sent_s, fails_s, elapsed_s = proc.stdout.split()
        quiet_since, last = time.monotonic(), -1
        while time.monotonic() - quiet_since < 0.3:
            if rx.count != last:
                last, quiet_since = rx.count, time.monotonic()
            time.sleep(0.02)
    sent, elapsed = int(sent_s), float(elapsed_s)
    return {
        "offered_fps": sent / elapsed, "sent": sent, "send_refused": int(fails_s),
        "delivered": rx.count, "fraction": rx.count / sent if sent else 0.0,
        "receiver_overflow": overflow(sock) - before,
    }


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of ``pid`` and its children so far (from /proc)."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    pids = [pid]
    with contextlib.suppress(OSError):
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(c) for c in children]
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def scrape(port: int) -> dict[str, float]:
    """The spikebridge_frames_* counters of a running daemon per name and endpoint ({} if none)."""
    out: dict[str, float] = {}
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except OSError as exc:
        print(f"  (no metrics from 127.0.0.1:{port}: {exc}; books not read)", file=sys.stderr)
        return out
    for line in text.splitlines():
        if not line.startswith("spikebridge_frames_"):
            continue
        name_labels, _, value = line.rpartition(" ")
        name, _, labels = name_labels.partition("{")
        endpoint = ""
        for part in labels.rstrip("}").split(","):
            k, _, v = part.partition("=")
            if k == "endpoint":
                endpoint = v.strip('"')
        key = f"{name}:{endpoint}"
        out[key] = out.get(key, 0.0) + float(value)
    return out


def throughput(sock: socket.socket, in_port: int, seconds: float, steps: int,
               r: Result) -> None:
    """Highest offered rate with >= 99 % delivered: a blast, then a bisection below it."""
    first = blast(sock, in_port, 0, seconds)
    r.blast = first
    r.relayed += int(first["delivered"] + first["receiver_overflow"])
    if first["fraction"] >= 0.99:
        r.throughput_fps = first["offered_fps"]
        r.throughput_note = "sender-bound: delivered >= 99 % at the fastest one sender can offer"
        return
    lo, hi = 0.0, first["offered_fps"]
    for _ in range(steps):
        mid = (lo + hi) / 2
        got = blast(sock, in_port, mid, seconds)
        r.relayed += int(got["delivered"] + got["receiver_overflow"])
        if got["fraction"] >= 0.99:
            lo = got["offered_fps"]
        else:
            hi = mid
    r.throughput_fps = lo
    r.throughput_note = f"bisection, {steps} steps below the unpaced blast"


def run_target(name: str, argv: list[str], in_port: int, out_port: int, args: Any,
               metrics_port: int | None, log_path: Path) -> Result:
    """Start one relay, measure it, stop it."""
    r = Result(name)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, SO_RXQ_OVFL, 1)
    sock.bind(("127.0.0.1", out_port))
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        ready = False
        for _ in range(100):  # up to 10 s to come up: wait for a frame to make it through
            time.sleep(0.1)
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}; see {log_path}")
            _, lost = pingpong(sock, in_port, 1, 0, 0.1)
            if not lost:
                ready = True
                break
        if not ready:
            raise RuntimeError(f"{name} did not relay a frame within 10 s; see {log_path}")
        n = args.pings
        slow = name == "ancestor"
        rtts, r.rtt_lost = pingpong(sock, in_port, max(200, n // 5) if slow else n, 50, 0.2)
        if rtts.size:
            r.rtt_us = {f"p{q}": float(np.percentile(rtts, q)) / 1000 for q in (50, 99, 99.9)}
        before = scrape(metrics_port) if metrics_port else {}
        cpu0 = cpu_seconds(proc.pid)
        throughput(sock, in_port, args.seconds, args.steps, r)
        cpu1 = cpu_seconds(proc.pid)
        r.cpu_us_per_frame = (cpu1 - cpu0) * 1e6 / max(1, r.relayed)
        if metrics_port and before:
            after = scrape(metrics_port)
            delta = {k: int(after.get(k, 0) - before.get(k, 0)) for k in after}
            r.books = {
                "received_in0": delta.get("spikebridge_frames_received_total:in0", 0),
                "dropped_in0": delta.get("spikebridge_frames_dropped_total:in0", 0),
                "sent_out0": delta.get("spikebridge_frames_sent_total:out0", 0),
                "dropped_out0": delta.get("spikebridge_frames_dropped_total:out0", 0),
            }
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        sock.close()
    return r


def build_parser() -> ArgumentParser:
    """The command's argument parser (for main, the man page and shell completion)."""
    parser = ArgumentParser(prog="spikebridge bench relay", description=__doc__,
                            epilog="example: spikebridge bench relay --duration 1 "
                                   "--json relay.json")
    parser.add_argument("--pings", type=int, default=5000, help="ping-pong samples per target")
    add_duration(parser, "length of each blast", dest="seconds", default=1.0)
    parser.add_argument("--steps", type=int, default=6, help="bisection steps for throughput")
    parser.add_argument("--reference-dir", dest="anchors", metavar="DIR",
                        help="directory with the reference programs udp_echo.py and "
                             "seed_port.py (default: found beside the checkout)")
    parser.add_argument("--no-predecessor", dest="no_ancestor", action="store_true",
                        help="skip the predecessor's process-and-pipe relay")
    deprecated(parser, "--anchors", "--reference-dir", "anchors")
    deprecated(parser, "--no-ancestor", "--no-predecessor", "no_ancestor", nargs=0, const=True)
    add_json(parser)
    return parser


def main(argv: Sequence[str]) -> int:
    """Run the relay benchmark and print the comparison."""
    parser = build_parser()
    args = parser.parse_args(argv)
    anchors = anchors_dir(args.anchors)
    tmp = Path(tempfile.mkdtemp(prefix="spikebridge-bench-"))
    floor_script = anchors / "udp_echo.py" if anchors and (anchors / "udp_echo.py").exists() \
        else None
    if floor_script is None:
        floor_script = tmp / "udp_echo.py"
        floor_script.write_text(FLOOR_SOURCE)
    url = f"format=legacy&neurons={NEURONS}"
    targets: list[tuple[str, object]] = [
        ("floor", lambda i, o, m: [sys.executable, str(floor_script), str(i), str(o)]),
        ("spikebridge", lambda i, o, m: [
            sys.executable, "-m", "bridge", "run", "--in", f"udp://127.0.0.1:{i}?{url}",
            "--out", f"udp://127.0.0.1:{o}?{url}", "--metrics", f"127.0.0.1:{m}",
            "--log-level", "warning"]),
    ]
    seed = anchors / "seed_port.py" if anchors else None
    if seed is not None and seed.exists() and not args.no_ancestor:
        targets.append(("ancestor", lambda i, o, m: [
            sys.executable, str(seed), str(i), str(o), str(NEURONS), "1"]))
    print(f"spikebridge bench relay: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
          f"legacy {NEURONS}-neuron frames on 127.0.0.1; logs in {tmp}", flush=True)
    results: dict[str, Result] = {}
    for name, make in targets:
        i, o = free_port(), free_port()
        m = free_port() if name == "spikebridge" else None
        argv_t = make(i, o, m)  # type: ignore[operator]
        print(f"  measuring {name} ...", flush=True)
        try:
            results[name] = run_target(name, argv_t, i, o, args, m, tmp / f"{name}.log")
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            print(f"  {name}: failed: {exc}", file=sys.stderr)
    report(results)
    if args.json:
        write_json(args.json, {k: asdict(v) for k, v in results.items()})
    return 0 if "floor" in results and "spikebridge" in results else 1


def report(results: dict[str, Result]) -> None:
    """Print the table and the ratios to the floor."""
    print()
    print(f"{'target':<12} {'p50 us':>9} {'p99 us':>9} {'p99.9 us':>9} {'lost':>5} "
          f"{'blast offered/s':>16} {'delivered':>10} {'>=99% at /s':>12} {'cpu us/fr':>10}")
    for r in results.values():
        q = r.rtt_us
        print(f"{r.name:<12} {q.get('p50', float('nan')):9.1f} {q.get('p99', float('nan')):9.1f} "
              f"{q.get('p99.9', float('nan')):9.1f} {r.rtt_lost:5d} "
              f"{r.blast.get('offered_fps', 0):16.0f} "
              f"{int(r.blast.get('delivered', 0)):>10d} {r.throughput_fps:12.0f} "
              f"{r.cpu_us_per_frame:10.2f}")
    floor = results.get("floor")
    if floor is None or not floor.rtt_us:
        return
    print("\nratios to the floor measured in this run (targets: p50 <= 1.3, p99 <= 1.5, "
          "throughput >= 0.7):")
    for r in results.values():
        if r.name == "floor" or not r.rtt_us:
            continue
        p50 = r.rtt_us["p50"] / floor.rtt_us["p50"]
        p99 = r.rtt_us["p99"] / floor.rtt_us["p99"]
        thr = r.throughput_fps / floor.throughput_fps if floor.throughput_fps else float("nan")
        cpu = r.cpu_us_per_frame / floor.cpu_us_per_frame
        print(f"  {r.name:<12} p50 {p50:5.2f}x   p99 {p99:5.2f}x   throughput {thr:5.2f}x   "
              f"cpu per frame {cpu:5.2f}x   ({r.throughput_note})")
    sb = results.get("spikebridge")
    if sb is not None and sb.books:
        b = sb.books
        print(f"\nspikebridge books over the throughput runs: in0 received {b['received_in0']} "
              f"(dropped {b['dropped_in0']}, counted by reason), out0 sent {b['sent_out0']} "
              f"(dropped {b['dropped_out0']})")
