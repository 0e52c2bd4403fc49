"""``spikebridge bench serial``: an eDVS stream at line rate through the daemon, and codec rates.

Part 1 times the raw decoders (board and edvs) on in-memory streams fed in 4 KiB chunks, as
the loop feeds them, and the board encoder; the board rows run twice, with the ``cobs``
package the codec uses and with the hand-written COBS it replaced, and print their ratio.
Part 2 runs the eDVS emulator (its own process) at the 12 Mbaud line rate, 2-byte events
(about 600k events/s), into ``spikebridge run`` (its own process), relaying to a UDP sink here.
It reports the daemon's CPU use (from /proc/PID/stat, whole process, over the steady window)
and where every event went: delivered, or counted as dropped by the sensor, the daemon or the
sink's kernel buffer. It never asserts: it is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bridge.bench.cobs_py import PyCobsBoardCodec
from bridge.codecs.board import BoardCodec
from bridge.codecs.edvs import EdvsCodec, event_bytes
from bridge.codecs.native import NativeCodec
from bridge.errors import DecodeError
from bridge.frame import SpikeFrame
from bridge.tools import ArgumentParser, add_json, json_stream

CHUNK = 4096
NEURONS = 32768
SO_RXQ_OVFL = getattr(socket, "SO_RXQ_OVFL", 40)


# -- part 1: raw decode rates --------------------------------------------------------------


def _time_decode(make: Callable[[], Any], stream: bytes, repeat: int) -> tuple[float, int]:
    """Best-of-``repeat`` seconds to decode ``stream`` in CHUNK pieces; and spikes decoded."""
    best, spikes = float("inf"), 0
    for _ in range(repeat):
        codec = make()
        n = 0
        t0 = time.perf_counter()
        for i in range(0, len(stream), CHUNK):
            codec.feed(stream[i:i + CHUNK])
            while True:
                try:
                    frame = codec.next_frame()
                except DecodeError:
                    continue
                if frame is None:
                    break
                n += len(frame.ids)
        best = min(best, time.perf_counter() - t0)
        spikes = n
    return best, spikes


def codec_rates(seconds_of_data: float = 1.0, repeat: int = 3) -> list[dict[str, Any]]:
    """Decode rates of the stream codecs, one row per case."""
    rng = np.random.default_rng(0)
    rows = []
    n_ev = int(600_000 * seconds_of_data)
    for evsize in (2, 4, 6):
        x, y, p = rng.integers(0, 128, n_ev), rng.integers(0, 128, n_ev), rng.integers(0, 2, n_ev)
        ts = np.arange(n_ev) * 2 if evsize > 2 else None
        data = event_bytes(x, y, p, ts, evsize=evsize)
        secs, n = _time_decode(functools.partial(EdvsCodec, evsize=evsize), data, repeat)
        rows.append({"codec": "edvs", "case": f"{evsize}-byte events", "events": n,
                     "events_per_s": n / secs, "MB_per_s": len(data) / secs / 1e6})
    for per_frame in (16, 256):
        frames = max(1, n_ev // per_frame // 4)
        spikes = [SpikeFrame.of(rng.integers(0, 4096, per_frame)) for _ in range(frames)]
        for cobs_impl, make in (("cobs", BoardCodec), ("python", PyCobsBoardCodec)):
            data = b"".join(make().encode(f) for f in spikes)
            secs, n = _time_decode(make, data, repeat)
            rows.append({"codec": "board", "cobs": cobs_impl, "case": f"{per_frame} spikes/frame",
                         "events": n, "events_per_s": n / secs, "frames_per_s": frames / secs,
                         "MB_per_s": len(data) / secs / 1e6})
            secs = _time_encode(make, spikes, repeat)
            rows.append({"codec": "board", "cobs": cobs_impl,
                         "case": f"encode {per_frame} spikes/frame", "events": frames * per_frame,
                         "events_per_s": frames * per_frame / secs,
                         "frames_per_s": frames / secs, "MB_per_s": len(data) / secs / 1e6})
    return rows


def _time_encode(make: Callable[[], Any], frames: Sequence[SpikeFrame], repeat: int) -> float:
    """Best-of-``repeat`` seconds to encode ``frames`` with one codec."""
    best = float("inf")
    for _ in range(repeat):
        codec = make()
        t0 = time.perf_counter()
        for frame in frames:
            codec.encode(frame)
        best = min(best, time.perf_counter() - t0)
    return best


def cobs_ratios(rows: Sequence[dict[str, Any]]) -> list[tuple[str, float]]:
    """Per board case: the ``cobs`` package's rate over the hand-written COBS's (>1: faster)."""
    rate = {(r["case"], r["cobs"]): r["events_per_s"] for r in rows if "cobs" in r}
    return [(case, rate[(case, "cobs")] / rate[(case, "python")])
            for case, impl in rate if impl == "cobs" and (case, "python") in rate]


# -- part 2: through the daemon ------------------------------------------------------------


class Sink:
    """A UDP sink counting native frames and spikes on its own thread."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_RXQ_OVFL, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port: int = self.sock.getsockname()[1]
        self.codec = NativeCodec(NEURONS)
        self.frames = self.spikes = self.bad = self.kernel_drops = 0
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        buf = bytearray(65536)
        while not self._stop:
            try:
                n, anc, _, _ = self.sock.recvmsg_into([buf], 64)
            except TimeoutError:
                continue
            except OSError:
                return
            for level, kind, data in anc:
                if level == socket.SOL_SOCKET and kind == SO_RXQ_OVFL and len(data) >= 4:
                    self.kernel_drops = int.from_bytes(data[:4], sys.byteorder)
            try:
                _, _, _, spikes = self.codec.peek(memoryview(buf)[:n])
            except DecodeError:
                self.bad += 1
                continue
            self.frames += 1
            self.spikes += spikes

    def close(self) -> None:
        self._stop = True
        self._thread.join(2)
        self.sock.close()


def _cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime (fields 14 and 15)


def _scrape(port: int) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            ep = s.labels.get("endpoint", "")
            reason = s.labels.get("reason", "")
            key = s.name + (f"{{{ep}}}" if ep else "") + (f"[{reason}]" if reason else "")
            out[key] = out.get(key, 0.0) + s.value
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def through_daemon(
    rate: float, baud: int, window: float, reader: str, evsize: int = 2,
) -> dict[str, Any]:
    """Run emulator -> daemon -> UDP sink; return the figures."""
    tmp = Path(tempfile.mkdtemp(prefix="sb-bench-serial-"))
    link = tmp / "edvs"
    py = sys.executable
    warmup = 1.5
    emu = subprocess.Popen(
        [py, "-m", "bridge", "emulate", "edvs", "--link", str(link), "--pattern", "random",
         "--rate", str(rate), "--baud", str(baud), "--duration", str(warmup + window + 3),
         "--stats"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert emu.stdout is not None
    emu.stdout.readline()  # the path: the pty exists now
    sink = Sink()
    mport = _free_port()
    url = (f"serial:{link}?format=edvs&baud={baud}&neurons={NEURONS}&evsize={evsize}"
           f"&reader={reader}")
    daemon = subprocess.Popen(
        [py, "-m", "bridge", "run", "--in", url,
         "--out", f"udp://127.0.0.1:{sink.port}?format=native&neurons={NEURONS}",
         "--metrics", f"127.0.0.1:{mport}", "--log-level", "warning"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        time.sleep(warmup)
        tick = os.sysconf("SC_CLK_TCK")
        c0, t0, s0 = _cpu_ticks(daemon.pid), time.monotonic(), sink.spikes
        time.sleep(window)
        c1, t1, s1 = _cpu_ticks(daemon.pid), time.monotonic(), sink.spikes
        stats_line, _ = emu.communicate(timeout=warmup + window + 20)
        stats = json.loads(stats_line.strip().splitlines()[-1])
        time.sleep(0.5)  # the daemon forwards the last bytes
        m = _scrape(mport)
    finally:
        daemon.terminate()
        out, _ = daemon.communicate(timeout=20)
        if emu.poll() is None:
            emu.kill()
        sink.close()
    received = m.get("spikebridge_spikes_received_total{in0}", 0.0)
    sent = m.get("spikebridge_spikes_sent_total{out0}", 0.0)
    in_drops = {k.split("[")[1][:-1]: v for k, v in m.items()
                if k.startswith("spikebridge_frames_dropped_total{in0}") and v}
    out_drops = {k.split("[")[1][:-1]: v for k, v in m.items()
                 if k.startswith("spikebridge_frames_dropped_total{out0}") and v}
    events_out = stats["events_sent"]  # left the sensor's buffer (it drains before exit)
    return {
        "reader": reader, "rate_target": rate, "baud": baud, "evsize": evsize,
        "window_s": round(t1 - t0, 2),
        "daemon_cpu_pct_of_one_core": round(100 * (c1 - c0) / tick / (t1 - t0), 1),
        "delivered_events_per_s": round((s1 - s0) / (t1 - t0)),
        "sensor_events_sent": events_out,
        "sensor_fifo_overflow_events": stats["events_dropped"],
        "sensor_fifo_pending_bytes": stats["fifo_pending"],
        "daemon_spikes_received": received,
        "daemon_input_drops": in_drops,
        "daemon_spikes_sent": sent,
        "daemon_output_drops": out_drops,
        "sink_spikes": sink.spikes, "sink_kernel_drops": sink.kernel_drops,
        "uncounted_in": events_out - received,
        "uncounted_out": sent - sink.spikes,
        "daemon_exit": daemon.returncode, "daemon_log_tail": out.strip().splitlines()[-3:],
    }


def round_trips(reader: str, count: int = 500) -> dict[str, Any]:
    """Ping-pong one spike frame with the board emulator (echo, own process) through a serial
    endpoint read the ``reader`` way; round-trip percentiles in µs."""
    import selectors

    from bridge.endpoints import endpoint_spec, open_endpoint

    tmp = Path(tempfile.mkdtemp(prefix="sb-bench-rtt-"))
    link = tmp / "board"
    board = subprocess.Popen(
        [sys.executable, "-m", "bridge", "emulate", "board", "--link", str(link),
         "--heartbeat", "0", "--autostart"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert board.stdout is not None
    board.stdout.readline()
    url = f"serial:{link}?format=board&baud=4000000&neurons=256&reader={reader}&start=0"
    ep = open_endpoint(endpoint_spec(url, "in"))
    rx, tx = BoardCodec(256), BoardCodec(256)
    sel = selectors.DefaultSelector()
    sel.register(ep.fileno(), selectors.EVENT_READ)
    frame = tx.encode(SpikeFrame.of([1, 2, 3]))
    rtts = []
    try:
        for i in range(count + 20):
            t0 = time.perf_counter_ns()
            ep.send(frame)
            got = None
            while got is None:
                if not sel.select(1.0):
                    raise TimeoutError("the board emulator did not answer")
                chunk = ep.recv()
                if chunk is not None:
                    rx.feed(bytes(chunk[0]))
                    got = rx.next_frame()
            if i >= 20:  # warm-up excluded
                rtts.append((time.perf_counter_ns() - t0) / 1e3)
    finally:
        sel.close()
        ep.close()
        board.terminate()
        board.communicate(timeout=10)
    arr = np.asarray(rtts)
    return {"reader": reader, "round_trips": len(arr), "p50_us": round(float(np.median(arr))),
            "p99_us": round(float(np.percentile(arr, 99))), "max_us": round(float(arr.max()))}


def build_parser() -> argparse.ArgumentParser:
    """The command's argument parser (for main, the man page and shell completion)."""
    p = ArgumentParser(prog="spikebridge bench serial", description=__doc__,
                       epilog="example: spikebridge bench serial --codecs-only")
    p.add_argument("--window", type=float, default=5.0, help="measured seconds")
    p.add_argument("--rate", type=float, default=600_000.0,
                   help="events/s offered by the sensor")
    p.add_argument("--baud", type=int, default=12_000_000, help="line rate")
    p.add_argument("--reader", choices=("fd", "thread", "both"), default="fd",
                   help="how the daemon reads the port (both: run twice and compare)")
    p.add_argument("--codecs-only", action="store_true", help="only part 1")
    add_json(p, "one object per line, instead of a table,")
    return p


def main(argv: Sequence[str]) -> int:
    """Print codec rates and the through-daemon figures (JSON lines with --json)."""
    p = build_parser()
    args = p.parse_args(list(argv))
    sink = json_stream(args.json) if args.json else sys.stdout

    def print_json(obj: object) -> None:
        print(json.dumps(obj), file=sink, flush=True)

    rows = codec_rates()
    for row in rows:
        if args.json:
            print_json({"part": "codec", **row})
        else:
            extra = f", {row['frames_per_s']:,.0f} frames/s" if "frames_per_s" in row else ""
            name = f"{row['codec']}/{row['cobs']}" if "cobs" in row else row["codec"]
            case = row["case"] if row["case"].startswith("encode") else "decode " + row["case"]
            print(f"{name:12} {case:29} {row['events_per_s']:>12,.0f} "
                  f"events/s  {row['MB_per_s']:6.1f} MB/s{extra}")
    for case, ratio in cobs_ratios(rows):
        if args.json:
            print_json({"part": "cobs_ratio", "case": case, "cobs_over_python": ratio})
        else:
            what = case if case.startswith("encode") else f"decode {case}"
            print(f"board {what}: cobs package / hand-written COBS = {ratio:.2f}x")
    if args.codecs_only:
        return 0
    readers = ("fd", "thread") if args.reader == "both" else (args.reader,)
    for reader in readers:
        rtt = round_trips(reader)
        if args.json:
            print_json({"part": "rtt", **rtt})
        else:
            print(f"serial round trip via the board emulator (reader={reader}): "
                  f"p50 {rtt['p50_us']} µs, p99 {rtt['p99_us']} µs, max {rtt['max_us']} µs "
                  f"over {rtt['round_trips']}")
    for reader in readers:
        res = through_daemon(args.rate, args.baud, args.window, reader)
        if args.json:
            print_json({"part": "daemon", **res})
            continue
        print(f"\nthrough the daemon (reader={reader}, {args.baud} baud, offered "
              f"{args.rate:,.0f} events/s, {res['window_s']} s window):")
        for key in ("daemon_cpu_pct_of_one_core", "delivered_events_per_s",
                    "sensor_events_sent", "sensor_fifo_overflow_events",
                    "daemon_spikes_received", "daemon_input_drops", "daemon_spikes_sent",
                    "daemon_output_drops", "sink_spikes", "sink_kernel_drops",
                    "uncounted_in", "uncounted_out"):
            print(f"  {key:30} {res[key]}")
    return 0
