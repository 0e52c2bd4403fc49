"""``spikebridge bench events``: camera events per second and CPU per event, beside aestream.

In one run, on loopback, for each path it finds the highest offered event rate still >= 99 %
delivered (an unpaced blast, then a bisection below it), the CPU time per event of the process
doing the job, and then offers 0.7x that rate and checks the books: every event sent is
delivered or counted as a drop by reason (``uncounted`` must be 0). Paths and their peers:

- ``spif-relay``: spif -> spif relay (512-byte datagrams, 128 events); peer: aestream's own
  UDP input (``aestream.UDPInput``, receiving and decoding the same datagrams into a tensor;
  aestream 0.6.4 has no UDP input on its command line, so it cannot relay);
- ``t64-native``: Faery ``t64_x16_y16_on8`` -> native (100 events a datagram, Faery's
  default); peer: Faery's own UDP input (``events_stream_from_udp``); aestream reads no Faery
  layout;
- ``aedat4-replay``: an AEDAT4 recording replayed to UDP; peer: ``aestream input file ...
  output udp``. Run only when this checkout's ``replay`` reads AEDAT4 (else reported pending).

The sides do not do the same work: spikebridge's relay receives and sends every datagram,
aestream's UDPInput and Faery's input only receive (aestream has no UDP relay to compare with);
the output says so per path, and prints the unpaced sender's own rate beside each maximum so a
maximum at the generator's ceiling is read as sender-bound. Ratios are spikebridge's over the
peer's, measured in the same run. It never asserts: it is a
benchmark, not a test.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bridge.bench.relay import (
    SENDER_SOURCE,
    SO_RXQ_OVFL,
    Receiver,
    cpu_seconds,
    free_port,
    overflow,
    scrape,
)
from bridge.tools import ArgumentParser, add_duration, add_json, write_json

W, H = 346, 260  # a DAVIS346
NEURONS = 2 * W * H

# A peer's receiver in a child process: it counts events and prints the total on each stdin line.
AESTREAM_RX = f'''\
import select, sys, time
import numpy as np, aestream
port = int(sys.argv[1])
total = 0
with aestream.UDPInput(({W}, {H}), device="cpu", port=port) as s:
    print("ready", flush=True)
    while True:
        r, _, _ = select.select([sys.stdin], [], [], 0.005)
        total += int(np.asarray(s.read()).sum())
        if r:
            if not sys.stdin.readline():
                break
            total += int(np.asarray(s.read()).sum())
            print(total, flush=True)
'''

FAERY_RX = f'''\
import sys, threading
import faery
port = int(sys.argv[1])
total = 0
def run():
    global total
    for ev in faery.events_stream_from_udp(dimensions=({W}, {H}), address=("127.0.0.1", port),
                                           format="t64_x16_y16_on8"):
        total += len(ev)
threading.Thread(target=run, daemon=True).start()
print("ready", flush=True)
for line in sys.stdin:
    print(total, flush=True)
'''


@dataclass
class Side:
    """One implementation of one path: what it achieved."""

    name: str
    max_eps: float = 0.0
    sender_eps: float = 0.0  # what the one unpaced sender offered: the generator's own ceiling
    note: str = ""
    cpu_us_per_event: float = float("nan")
    at_07: dict[str, float] = field(default_factory=dict)
    error: str = ""


def spif_datagram(rng: np.random.Generator) -> tuple[bytes, int]:
    """One full default spif datagram (512 bytes, 128 events) and its event count."""
    from bridge.codecs.spif import SpifCodec

    codec = SpifCodec(0, width=W, height=H)
    ids = rng.integers(0, NEURONS, 128).astype(np.uint32)
    from bridge.frame import SpikeFrame

    [data] = codec.encode(SpikeFrame(0, -1, 0, ids))
    return data, 128


def t64_datagram(rng: np.random.Generator) -> tuple[bytes, int]:
    """One Faery t64_x16_y16_on8 datagram of 100 events (Faery's default packet)."""
    from bridge.codecs.faery_udp import T64X16Y16On8Codec

    codec = T64X16Y16On8Codec(0, width=W, height=H)
    x, y = rng.integers(0, W, 100), rng.integers(0, H, 100)
    on = rng.integers(0, 2, 100)
    # One instant for all: the blaster repeats this datagram, and Faery's receiver drops a
    # datagram whose first time is below the last one it took (out of order).
    t = np.full(100, 1_000_000, dtype=np.uint64)
    [data] = codec.encode_events(t, x, y, on)
    return data, 100


class Target:
    """A process doing one path's job, fed by the blaster, its output counted."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.proc: subprocess.Popen[str] | None = None

    def start(self, in_port: int) -> None:
        raise NotImplementedError

    def delivered(self) -> int:
        raise NotImplementedError

    def books(self) -> dict[str, int]:
        return {}

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Spikebridge(Target):
    """``spikebridge run`` relaying IN_URL to OUT_URL; the output counted on our socket."""

    def __init__(self, name: str, in_q: str, out_q: str, probe: bytes, per_out: int,
                 log: Path) -> None:
        super().__init__(name)
        self.in_q, self.out_q, self.probe, self.per_out, self.log = in_q, out_q, probe, \
            per_out, log
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.sock.bind(("127.0.0.1", 0))
        self.metrics = free_tcp_port()
        self.rx: Receiver | None = None

    def start(self, in_port: int) -> None:
        out = self.sock.getsockname()[1]
        argv = [sys.executable, "-m", "bridge", "run",
                "--in", f"udp://127.0.0.1:{in_port}?{self.in_q}",
                "--out", f"udp://127.0.0.1:{out}?{self.out_q}",
                "--metrics", f"127.0.0.1:{self.metrics}", "--log-level", "warning"]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, text=True)
        self.sock.settimeout(0.1)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            for _ in range(100):
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited; see {self.log}")
                tx.sendto(self.probe, ("127.0.0.1", in_port))
                try:
                    self.sock.recv(65536)
                    break
                except TimeoutError:
                    continue
            else:
                raise RuntimeError(f"{self.name} relayed nothing within 10 s; see {self.log}")
        time.sleep(0.2)
        self.sock.setblocking(False)
        with contextlib.suppress(OSError):
            while True:
                self.sock.recv(65536)
        self.rx = Receiver(self.sock).__enter__()

    def delivered(self) -> int:
        assert self.rx is not None
        return self.rx.count * self.per_out

    def books(self) -> dict[str, int]:
        got = scrape(self.metrics)
        return {"received": int(got.get("spikebridge_frames_received_total:in0", 0)),
                "dropped_in": int(got.get("spikebridge_frames_dropped_total:in0", 0)),
                "sent": int(got.get("spikebridge_frames_sent_total:out0", 0)),
                "dropped_out": int(got.get("spikebridge_frames_dropped_total:out0", 0))}

    def stop(self) -> None:
        if self.rx is not None:
            self.rx.__exit__()
        super().stop()
        self.sock.close()


def free_tcp_port() -> int:
    """An unused TCP port on 127.0.0.1 (for the metrics server; a free UDP port may not be)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ChildReceiver(Target):
    """A peer's own UDP input in a child process that reports its event total on request."""

    def __init__(self, name: str, source: str, log: Path) -> None:
        super().__init__(name)
        self.source, self.log = source, log

    def start(self, in_port: int) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", self.source, str(in_port)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=open(self.log, "wb"), text=True)  # noqa: SIM115
        line = self._line(30)
        if line != "ready":
            raise RuntimeError(f"{self.name} did not start ({line!r}); see {self.log}")
        time.sleep(0.3)  # its socket is bound by now; aestream gives no signal

    def _line(self, timeout: float) -> str:
        assert self.proc is not None and self.proc.stdout is not None
        r, _, _ = select.select([self.proc.stdout], [], [], timeout)
        return self.proc.stdout.readline().strip() if r else ""

    def delivered(self) -> int:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write("n\n")
        self.proc.stdin.flush()
        line = self._line(10)
        if not line:
            raise RuntimeError(f"{self.name} stopped answering; see {self.log}")
        return int(line)


def blast(target: Target, in_port: int, msg: bytes, per: int, rate_eps: float,
          seconds: float) -> dict[str, float]:
    """Offer ``rate_eps`` events/s (0: as fast as one sender can); count what was delivered."""
    before = target.delivered()
    books0 = target.books()
    proc = subprocess.run(
        [sys.executable, "-c", SENDER_SOURCE, str(rate_eps / per), str(seconds), str(in_port),
         msg.hex()], capture_output=True, text=True, check=True, timeout=seconds + 30)
    sent_s, fails_s, elapsed_s = proc.stdout.split()
    quiet_since, last = time.monotonic(), -1
    while time.monotonic() - quiet_since < 0.4:
        now = target.delivered()
        if now != last:
            last, quiet_since = now, time.monotonic()
        time.sleep(0.03)
    sent, elapsed = int(sent_s) * per, float(elapsed_s)
    got = last - before
    out: dict[str, float] = {"offered_eps": sent / elapsed, "sent": sent, "delivered": got,
                             "fraction": got / sent if sent else 0.0,
                             "send_refused": int(fails_s) * per}
    books1 = target.books()
    if books0 and books1:
        # spikebridge's books, in events (one datagram in gives one out on these paths):
        # sent = received (kernel overflow included) and received = dropped + sent on.
        d = {k: (books1[k] - books0[k]) * per for k in books1}
        counted = d["dropped_in"] + d["dropped_out"]
        out["received"] = d["received"]
        out["counted_drops"] = counted
        out["sent_on"] = d["sent"]
        out["uncounted"] = (sent - d["received"]) + (d["received"] - counted - d["sent"])
        out["lost_by_our_counter"] = d["sent"] - got  # our counting socket's, not the relay's
    else:
        out["uncounted"] = sent - got  # the peer keeps no books: every loss is uncounted
    return out


def measure(target: Target, msg: bytes, per: int, args: Any) -> Side:
    """Highest rate >= 99 % delivered; then at 0.7x of it the books and the CPU per event."""
    side = Side(target.name)
    in_port = free_port()
    try:
        target.start(in_port)
        first = blast(target, in_port, msg, per, 0, args.seconds)
        side.sender_eps = first["offered_eps"]
        if first["fraction"] >= 0.99:
            side.max_eps = first["offered_eps"]
            side.note = "sender-bound: >= 99 % delivered at the fastest one sender offers"
        else:
            # What it delivered under overload is where the edge lies: try that first, then
            # bisect between the best rate kept whole and the lowest one that was not.
            lo, hi = 0.0, first["offered_eps"]
            guess = first["delivered"] / args.seconds
            for _ in range(args.steps):
                got = blast(target, in_port, msg, per, guess, args.seconds)
                if got["fraction"] >= 0.99:
                    lo = max(lo, got["offered_eps"])
                else:
                    hi = min(hi, guess)
                guess = (lo + hi) / 2 if lo else hi / 2
            side.max_eps = lo
            side.note = f"search, {args.steps} steps below the unpaced blast"
        if side.max_eps > 0:
            assert target.proc is not None
            cpu0 = cpu_seconds(target.proc.pid)
            side.at_07 = blast(target, in_port, msg, per, 0.7 * side.max_eps, args.seconds)
            side.cpu_us_per_event = ((cpu_seconds(target.proc.pid) - cpu0) * 1e6
                                     / max(1, side.at_07["delivered"]))
    except (RuntimeError, OSError, subprocess.SubprocessError, ValueError) as exc:
        side.error = str(exc)
    finally:
        target.stop()
    return side


class Counter:
    """Counts datagrams and bytes on a bound socket, with the first and last arrival times."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 << 20)
        with contextlib.suppress(OSError):
            self.sock.setsockopt(socket.SOL_SOCKET, SO_RXQ_OVFL, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.datagrams = self.bytes = 0
        self.first = self.last = 0.0
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self.sock.settimeout(0.05)
        buf = bytearray(65536)
        recv, clock = self.sock.recv_into, time.perf_counter
        while not self._stop:
            try:
                n = recv(buf)
            except TimeoutError:
                continue
            self.last = clock()
            if not self.datagrams:
                self.first = self.last
            self.datagrams += 1
            self.bytes += n

    def settle(self, quiet: float = 0.5, limit: float = 120) -> None:
        """Wait until nothing has arrived for ``quiet`` seconds."""
        end = time.monotonic() + limit
        last = -1
        since = time.monotonic()
        while time.monotonic() < end and time.monotonic() - since < quiet:
            if self.datagrams != last:
                last, since = self.datagrams, time.monotonic()
            time.sleep(0.02)

    def close(self) -> int:
        """Stop; the kernel's count of datagrams dropped at this socket."""
        self._stop = True
        self._thread.join()
        dropped = overflow(self.sock)
        self.sock.close()
        return dropped


def run_child(argv: list[str], log: Path, timeout: float = 600) -> tuple[int, float, float]:
    """Run ``argv`` to the end: exit code, wall seconds, user+system CPU seconds."""
    t0 = time.perf_counter()
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            proc.kill()
        time.sleep(0.01)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, time.perf_counter() - t0, usage.ru_utime + usage.ru_stime


def write_aedat4(path: Path, n: int, seconds: float) -> None:
    """An AEDAT4 recording of ``n`` events over ``seconds``, written by Faery (aedat crate)."""
    import faery

    rng = np.random.default_rng(2)
    ev = np.zeros(n, dtype=faery.EVENTS_DTYPE)
    ev["t"] = np.sort(rng.integers(0, int(seconds * 1e6), n)).astype(np.uint64)
    ev["x"] = rng.integers(0, W, n)
    ev["y"] = rng.integers(0, H, n)
    ev["on"] = rng.integers(0, 2, n).astype(bool)
    # In packets of 4096 events: aestream 0.6.4 reads nothing from a file whose one packet is
    # 500,000 events (300,000 still pass). Faery 0.7.1's own .chunks() never ends (it does not
    # update the remaining length), so the array is cut here.
    from faery.events_stream import Array

    class Packets(Array):
        def __iter__(self) -> Any:
            for i in range(0, len(self.events), 4096):
                yield self.events[i:i + 4096].copy()

    Packets(ev, (W, H)).to_file(str(path))


def replay_path(args: Any, tmp: Path) -> dict[str, Side] | str:
    """(c): AEDAT4 to UDP, spikebridge replay beside aestream; a reason string if pending."""
    small, big = tmp / "small.aedat4", tmp / "big.aedat4"
    write_aedat4(small, 10, 0.01)
    write_aedat4(big, args.replay_events, args.replay_seconds)
    url = f"udp://127.0.0.1:{{port}}?format=spif&width={W}&height={H}&neurons={NEURONS}"
    sides = {
        "spikebridge": lambda f, p, *extra: [
            sys.executable, "-m", "bridge", "replay", str(f), url.format(port=p),
            "--ignore-timing", "-q", *extra],
        "aestream": lambda f, p, *extra: [
            aestream_cli(), "input", "file", str(f), "output", "udp", "127.0.0.1", str(p)],
    }
    probe = Counter()
    code, _, _ = run_child(sides["spikebridge"](small, probe.port), tmp / "probe.log")
    probe.close()
    if code != 0:
        why = (tmp / "probe.log").read_text().strip().splitlines()
        return f"spikebridge replay cannot read AEDAT4 here ({why[-1] if why else code})"
    out: dict[str, Side] = {}
    for name, make in sides.items():
        side = Side(name)
        base = Counter()
        code0, _, cpu_small = run_child(make(small, base.port), tmp / f"{name}-small.log")
        base.close()
        rx = Counter()
        code, wall, cpu_big = run_child(make(big, rx.port), tmp / f"{name}.log")
        rx.settle()
        kernel = rx.close()
        events = rx.bytes // 4
        if code or code0:
            side.error = f"exit {code or code0}; see {tmp / name}.log"
        span = rx.last - rx.first
        side.max_eps = events / span if span > 0 else 0.0
        side.cpu_us_per_event = (cpu_big - cpu_small) * 1e6 / max(1, events)
        side.note = (f"as fast as it goes: {events} of {args.replay_events} events arrived, "
                     f"{kernel} datagrams dropped at our socket, {wall:.2f} s wall with start-up")
        if name == "spikebridge" and side.max_eps > 0:
            speed = 0.7 * side.max_eps * args.replay_seconds / args.replay_events
            rx = Counter()
            code, _, _ = run_child([*make(big, rx.port)[:-2], "-q", "--speed", f"{speed:.6g}"],
                                   tmp / "spikebridge-07.log")
            rx.settle()
            kernel = rx.close()
            got = rx.bytes // 4
            # replay keeps no drop counters: what did not arrive is uncounted.
            side.at_07 = {"sent": args.replay_events, "delivered": got,
                          "our_receiver_overflow": kernel,
                          "uncounted": args.replay_events - got}
        out[name] = side
    return out


def aestream_cli() -> str:
    """aestream's command line: on PATH, else beside this Python."""
    import shutil

    return shutil.which("aestream") or str(Path(sys.executable).parent / "aestream")


def main(argv: Sequence[str]) -> int:
    """Run the event-rate benchmark and print the comparison."""
    parser = ArgumentParser(prog="spikebridge bench events", description=__doc__,
                            epilog="example: spikebridge bench events --duration 1 --json ev.json")
    add_duration(parser, "length of each blast", dest="seconds", default=1.0)
    parser.add_argument("--steps", type=int, default=5, help="bisection steps per side")
    parser.add_argument("--paths", default="spif-relay,t64-native,aedat4-replay",
                        help="comma-separated paths to run")
    parser.add_argument("--replay-events", type=int, default=2_000_000,
                        help="events in the AEDAT4 recording replayed")
    parser.add_argument("--replay-seconds", type=float, default=10.0,
                        help="the recording's duration")
    add_json(parser)
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="spikebridge-bench-events-"))
    rng = np.random.default_rng(1)
    spif, spif_n = spif_datagram(rng)
    t64, t64_n = t64_datagram(rng)
    geo = f"width={W}&height={H}&neurons={NEURONS}"
    paths: dict[str, tuple[bytes, int, list[Callable[[], Target]]]] = {
        "spif-relay": (spif, spif_n, [
            lambda: Spikebridge("spikebridge", f"format=spif&{geo}", f"format=spif&{geo}",
                                spif, spif_n, tmp / "sb-spif.log"),
            lambda: ChildReceiver("aestream UDPInput", AESTREAM_RX, tmp / "aestream.log"),
        ]),
        "t64-native": (t64, t64_n, [
            lambda: Spikebridge("spikebridge", f"format=t64_x16_y16_on8&{geo}",
                                f"format=native&neurons={NEURONS}", t64, t64_n,
                                tmp / "sb-t64.log"),
            lambda: ChildReceiver("Faery UDP input", FAERY_RX, tmp / "faery.log"),
        ]),
    }
    wanted = [p.strip() for p in args.paths.split(",") if p.strip()]
    print(f"spikebridge bench events: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
          f"{W}x{H} events on 127.0.0.1, {args.seconds:g} s blasts; logs in {tmp}", flush=True)
    results: dict[str, dict[str, Side]] = {}
    for path in wanted:
        if path == "aedat4-replay":
            print(f"  {path}: measuring spikebridge replay and aestream input file ...",
                  flush=True)
            got = replay_path(args, tmp)
            if isinstance(got, str):
                print(f"\naedat4-replay: pending: {got}", flush=True)
            else:
                results[path] = got
            continue
        if path not in paths:
            print(f"spikebridge bench events: unknown path {path!r}", file=sys.stderr)
            return 2
        msg, per, makers = paths[path]
        results[path] = {}
        for make in makers:
            target = make()
            print(f"  {path}: measuring {target.name} ...", flush=True)
            results[path][target.name] = measure(target, msg, per, args)
    report(results)
    if args.json:
        write_json(args.json,
                   {p: {k: asdict(v) for k, v in sides.items()} for p, sides in results.items()})
    ok = all(not s.error for sides in results.values() for s in sides.values())
    return 0 if ok else 1


# What each side does per event, so the ratios are read as what they are: not the same work.
JOBS = {
    "spif-relay": "spikebridge receives, validates and sends each datagram on (two system "
                  "calls); aestream's UDPInput only receives and sums into a tensor (one)",
    "t64-native": "spikebridge receives, decodes to ids, encodes native and sends; Faery's "
                  "input receives and decodes into a numpy array",
    "aedat4-replay": "both read the file (Faery's reader for spikebridge) and send UDP; "
                     "spikebridge also cuts the events into 1 ms frames on the way",
}


def report(results: dict[str, dict[str, Side]]) -> None:
    """Print per path: events/s, CPU per event, the 0.7x books, and the ratio to the peer."""
    for path, sides in results.items():
        print(f"\n{path}")
        print(f"  {'side':<20} {'max events/s':>14} {'cpu us/event':>13} {'at 0.7x: sent':>14} "
              f"{'delivered':>10} {'counted':>8} {'uncounted':>10}")
        for s in sides.values():
            if s.error:
                print(f"  {s.name:<20} failed: {s.error}")
                continue
            a = s.at_07

            def cell(key: str, width: int, a: dict[str, float] = a) -> str:
                return f"{int(a[key]):{width}d}" if key in a else f"{'-':>{width}}"

            print(f"  {s.name:<20} {s.max_eps:14.0f} {s.cpu_us_per_event:13.3f} "
                  f"{cell('sent', 14)} {cell('delivered', 10)} {cell('counted_drops', 8)} "
                  f"{cell('uncounted', 10)}")
            if s.sender_eps:
                print(f"  {'':<20} (the unpaced sender offered {s.sender_eps:.0f} events/s: "
                      f"max is {s.max_eps / s.sender_eps:.2f} of the generator's own rate)")
        if path in JOBS:
            print(f"  jobs: {JOBS[path]}")
        sb = sides.get("spikebridge")
        peers = [s for n, s in sides.items() if n != "spikebridge"]
        for peer in peers:
            if sb is None or sb.error or peer.error or not peer.max_eps:
                continue
            cpu = sb.cpu_us_per_event / peer.cpu_us_per_event
            print(f"  ratio spikebridge / {peer.name}: events/s {sb.max_eps / peer.max_eps:5.2f}x "
                  f"(target >= 1), cpu per event {cpu:5.2f}x   "
                  f"[spikebridge: {sb.note}; {peer.name}: {peer.note}]")
