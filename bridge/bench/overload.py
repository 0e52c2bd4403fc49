"""``spikebridge bench overload``: the daemon at twice its relay throughput, as systemd runs it.

In one run, on loopback, with the legacy 100-neuron frame of ``bench relay``: start the daemon
under a fake service manager (NOTIFY_SOCKET, WATCHDOG_USEC), measure its relay throughput the
way ``bench relay`` does (the highest rate still >= 99 % delivered), then offer ``--factor``
times that for ``--seconds`` and report, against the reliability targets:

- it stays up, and the watchdog pings never stop (longest gap < WATCHDOG_USEC);
- the books balance exactly per endpoint, read from its metrics (input: received = accepted +
  dropped{reason}; output: accepted = sent + dropped), and every datagram the senders handed
  to the kernel is in them (nothing lost uncounted);
- resident memory grows by less than 5 MB over the overload;
- full delivery returns within 1 s after the load stops (probe frames every 5 ms).

Prints the figures; exit 0 when every target is met, 1 otherwise. Measures; never tunes.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bridge.bench.probe import Blaster, Metrics, ServiceProcess, free_tcp_port, max_gap, rss_bytes
from bridge.bench.relay import FRAME, NEURONS, Result, free_port, throughput
from bridge.tools import ArgumentParser, add_duration, add_json, write_json

SO_MEMINFO = getattr(socket, "SO_MEMINFO", 55)
PROBE_MARK = 99                      # a probe frame sets this neuron; load frames never do
PROBE_BITS = range(70, 90)           # and carries its index in these neurons, LSB first
PROBE_EVERY_S = 0.005
PROBE_FOR_S = 2.0
RSS_LIMIT = 5_000_000
RECOVERY_LIMIT_S = 1.0


def probe_frame(index: int) -> bytes:
    """A legacy frame that carries ``index`` (unlike the load frames, which never set 70-99)."""
    body = bytearray(NEURONS)
    body[PROBE_MARK] = 1
    for k, n in enumerate(PROBE_BITS):
        body[n] = (index >> k) & 1
    return FRAME[:8] + bytes(body)


def probe_index(data: bytes | memoryview) -> int | None:
    """The index of a probe frame, or None for a load frame."""
    if len(data) != 8 + NEURONS or not data[8 + PROBE_MARK]:
        return None
    return sum(data[8 + n] << k for k, n in enumerate(PROBE_BITS))


def kernel_drops(sock: socket.socket) -> int:
    """Datagrams the kernel dropped on ``sock`` (SO_MEMINFO), 0 where unknown."""
    with contextlib.suppress(OSError):
        info = sock.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, 36)
        return int(struct.unpack("=9I", info)[8])
    return 0


class Sink:
    """Counts what the daemon sends on, and when each probe frame arrives (its own thread)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.count = 0
        self.probes: dict[int, float] = {}
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="sink", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        buf = bytearray(65536)
        view = memoryview(buf)
        self.sock.settimeout(0.05)
        recv = self.sock.recv_into
        while not self._stop:
            try:
                n = recv(buf)
            except (TimeoutError, BlockingIOError):
                continue
            except OSError:
                return
            self.count += 1
            if n == 8 + NEURONS and buf[8 + PROBE_MARK]:
                index = probe_index(view[:n])
                if index is not None:
                    self.probes.setdefault(index, time.monotonic())

    def close(self) -> None:
        self._stop = True
        self._thread.join(2)


@dataclass
class Figures:
    """What one overload run measured."""

    relay_fps: float = 0.0
    relay_note: str = ""
    offered_fps: float = 0.0
    seconds: float = 0.0
    senders: int = 0
    offered: int = 0
    refused_by_sender_kernel: int = 0
    alive: bool = False
    watchdog_usec: int = 0
    pings: int = 0
    max_ping_gap_s: float = 0.0
    books: dict[str, str] = field(default_factory=dict)
    balanced: bool = False
    uncounted: int = 0
    delivered: int = 0
    sink_kernel_drops: int = 0
    rss_start: int = 0
    rss_end: int = 0
    rss_peak: int = 0
    probes_sent: int = 0
    probes_delivered: int = 0
    recovery_s: float = float("inf")
    probe_delay_first_s: float = float("nan")
    probe_delay_max_s: float = float("nan")
    exit_code: int | None = None
    exit_s: float = 0.0
    verdicts: dict[str, bool] = field(default_factory=dict)


def _delta(after: Metrics, before: Metrics, name: str, **labels: str) -> int:
    return int(after.get(name, 0.0, **labels) - before.get(name, 0.0, **labels))


def _drops(after: Metrics, before: Metrics, endpoint: str) -> dict[str, int]:
    a, b = after.dropped(endpoint), before.dropped(endpoint)
    return {r: n - b.get(r, 0) for r, n in a.items() if n - b.get(r, 0)}


def run(args: argparse.Namespace, log_dir: Path) -> Figures:
    """One overload run; the figures (the daemon is stopped at the end)."""
    fig = Figures(watchdog_usec=args.watchdog_ms * 1000, senders=args.senders)
    in_port, out_port = free_port(), free_port()
    url = f"format=legacy&neurons={NEURONS}"
    out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    out.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    out.bind(("127.0.0.1", out_port))
    daemon = ServiceProcess(
        ["--in", f"udp://127.0.0.1:{in_port}?{url}&name=in0",
         "--out", f"udp://127.0.0.1:{out_port}?{url}&name=out0", "--log-level", "warning"],
        watchdog_usec=fig.watchdog_usec, metrics=("127.0.0.1", free_tcp_port()),
        log_path=log_dir / "daemon.log")
    sink: Sink | None = None
    try:
        daemon.wait_ready()
        if args.rate:
            fig.relay_fps, fig.relay_note = args.rate, "given with --rate"
        else:
            r = Result("spikebridge")
            throughput(out, in_port, args.relay_seconds, args.steps, r)
            fig.relay_fps, fig.relay_note = r.throughput_fps, r.throughput_note
        print(f"  relay throughput {fig.relay_fps:.0f} frames/s ({fig.relay_note})", flush=True)
        sink = Sink(out)
        time.sleep(0.5)  # let the measurement's tail drain before the baseline
        before = daemon.scrape()
        fig.rss_start = fig.rss_peak = rss_bytes(daemon.pid)
        target = args.factor * fig.relay_fps
        print(f"  offering {args.factor:g} x = {target:.0f} frames/s for {args.seconds:g} s "
              f"from {args.senders} senders", flush=True)
        blasters = [Blaster("127.0.0.1", in_port, [FRAME], rate=target / args.senders,
                            seconds=args.seconds) for _ in range(args.senders)]
        t_load = time.monotonic()  # every sender is sending now, and stops by t_end
        t_end = t_load + args.seconds
        next_report = t_load + 10
        while (now := time.monotonic()) < t_end and daemon.alive():
            time.sleep(min(0.5, t_end - now))
            fig.rss_peak = max(fig.rss_peak, rss_bytes(daemon.pid))
            if time.monotonic() >= next_report:
                next_report += 10
                m = daemon.scrape()
                print(f"    {time.monotonic() - t_load:5.1f} s: in0 received "
                      f"{_delta(m, before, 'spikebridge_frames_received_total', endpoint='in0')}"
                      f", RSS {rss_bytes(daemon.pid) / 1e6:.1f} MB", flush=True)
        t_stop = time.monotonic()
        fig.alive = daemon.alive()
        if fig.alive:
            fig.rss_end = rss_bytes(daemon.pid)
            fig.rss_peak = max(fig.rss_peak, fig.rss_end)
        # Probes from the moment the load stops: when does every frame get through again?
        sent_at: list[float] = []
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            while (now := time.monotonic()) < t_stop + PROBE_FOR_S:
                tx.sendto(probe_frame(len(sent_at)), ("127.0.0.1", in_port))
                sent_at.append(now)
                time.sleep(PROBE_EVERY_S)
        for b in blasters:
            b.wait(30)
        fig.seconds = max(b.seconds for b in blasters)
        fig.offered = sum(b.sent for b in blasters)
        fig.refused_by_sender_kernel = sum(b.refused for b in blasters)
        fig.offered_fps = fig.offered / fig.seconds if fig.seconds else 0.0
        time.sleep(1.0)
        fig.probes_sent = len(sent_at)
        fig.probes_delivered = len(sink.probes)
        missing = [i for i in range(len(sent_at)) if i not in sink.probes]
        if not missing:
            fig.recovery_s = 0.0
        elif missing[-1] < len(sent_at) - 1:
            fig.recovery_s = sent_at[missing[-1] + 1] - t_stop
        delays = [sink.probes[i] - t for i, t in enumerate(sent_at) if i in sink.probes]
        if delays:
            fig.probe_delay_first_s = delays[0]
            fig.probe_delay_max_s = max(delays)
        fig.pings = len(daemon.notify.times("WATCHDOG=1"))
        ready = daemon.notify.times("READY=1")[0]
        fig.max_ping_gap_s = max_gap(daemon.notify.times("WATCHDOG=1"), max(ready, t_load),
                                     time.monotonic())
        after = daemon.scrape()
        books = after.books("in0")
        received = _delta(after, before, "spikebridge_frames_received_total", endpoint="in0")
        accepted = _delta(after, before, "spikebridge_frames_accepted_total", endpoint="in0")
        in_drops = _drops(after, before, "in0")
        sent = _delta(after, before, "spikebridge_frames_sent_total", endpoint="out0")
        out_drops = _drops(after, before, "out0")
        fig.books = {
            "in0 (whole run)": str(books),
            "in0 (overload)": f"received {received} = accepted {accepted} + dropped {in_drops}",
            "out0 (overload)": f"accepted {accepted} = sent {sent} + dropped {out_drops}",
        }
        fig.balanced = (books.balanced and received == accepted + sum(in_drops.values())
                        and accepted == sent + sum(out_drops.values()))
        fig.uncounted = fig.offered + fig.probes_sent - received
        fig.sink_kernel_drops = kernel_drops(out)
        fig.delivered = sink.count
        fig.exit_code, fig.exit_s = daemon.stop()
    finally:
        if sink is not None:
            sink.close()
        daemon.close()
        out.close()
    fig.verdicts = {
        f"offered >= {0.95 * args.factor:g} x the relay throughput":
            fig.offered_fps >= 0.95 * args.factor * fig.relay_fps,
        "stayed up": fig.alive,
        f"watchdog pings never stopped (longest gap < {fig.watchdog_usec / 1e6:g} s)":
            fig.max_ping_gap_s < fig.watchdog_usec / 1e6,
        "books balance per endpoint": fig.balanced,
        "every datagram sent is in the books": fig.uncounted == 0,
        f"RSS grew < {RSS_LIMIT / 1e6:g} MB": fig.rss_end - fig.rss_start < RSS_LIMIT,
        f"full delivery within {RECOVERY_LIMIT_S:g} s after the load":
            fig.recovery_s <= RECOVERY_LIMIT_S,
        "SIGTERM: exit 0": fig.exit_code == 0,
    }
    return fig


def report(fig: Figures) -> None:
    """Print the figures and the verdicts."""
    print(f"\n  offered {fig.offered} frames in {fig.seconds:.1f} s = {fig.offered_fps:.0f}/s "
          f"({fig.offered_fps / fig.relay_fps:.2f} x the relay's {fig.relay_fps:.0f}/s); "
          f"sender kernels refused {fig.refused_by_sender_kernel}")
    for name, text in fig.books.items():
        print(f"  books {name}: {text}")
    print(f"  uncounted: {fig.uncounted}; the sink got {fig.delivered} "
          f"(its own kernel dropped {fig.sink_kernel_drops})")
    print(f"  watchdog: {fig.pings} pings, longest gap {fig.max_ping_gap_s:.3f} s "
          f"(WATCHDOG_USEC {fig.watchdog_usec})")
    print(f"  RSS {fig.rss_start / 1e6:.1f} MB -> {fig.rss_end / 1e6:.1f} MB "
          f"(+{(fig.rss_end - fig.rss_start) / 1e6:.2f} MB, peak {fig.rss_peak / 1e6:.1f} MB)")
    print(f"  probes after the load: {fig.probes_delivered}/{fig.probes_sent} delivered; full "
          f"delivery {fig.recovery_s:.3f} s after the load stopped; probe delay first "
          f"{fig.probe_delay_first_s * 1e3:.2f} ms, max {fig.probe_delay_max_s * 1e3:.2f} ms")
    print(f"  SIGTERM: exit {fig.exit_code} in {fig.exit_s:.2f} s\n")
    for what, ok in fig.verdicts.items():
        print(f"  {'PASS' if ok else 'FAIL'}  {what}")


def build_parser() -> ArgumentParser:
    """The command's argument parser (for main, the man page and shell completion)."""
    parser = ArgumentParser(prog="spikebridge bench overload", description=__doc__,
                            epilog="example: spikebridge bench overload --duration 20")
    add_duration(parser, "length of the overload", dest="seconds", default=60.0)
    parser.add_argument("--factor", type=float, default=2.0,
                        help="offered load as a multiple of the measured relay throughput")
    parser.add_argument("--rate", type=float, default=0.0,
                        help="the relay throughput in frames/s (default: measure it)")
    parser.add_argument("--relay-seconds", type=float, default=1.0,
                        help="length of each throughput probe blast (as bench relay --duration)")
    parser.add_argument("--steps", type=int, default=6, help="bisection steps for throughput")
    parser.add_argument("--senders", type=int, default=2, help="sender processes")
    parser.add_argument("--watchdog-ms", type=int, default=1000, help="WATCHDOG_USEC / 1000")
    add_json(parser, "the figures")
    return parser


def main(argv: Sequence[str]) -> int:
    """Run the overload benchmark; 0 when every target is met."""
    parser = build_parser()
    args = parser.parse_args(argv)
    log_dir = Path(tempfile.mkdtemp(prefix="spikebridge-overload-"))
    print(f"spikebridge bench overload: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
          f"legacy {NEURONS}-neuron frames on 127.0.0.1; daemon log in {log_dir}", flush=True)
    fig = run(args, log_dir)
    report(fig)
    if args.json:
        write_json(args.json, asdict(fig))
    return 0 if all(fig.verdicts.values()) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
