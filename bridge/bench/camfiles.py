"""``spikebridge bench camfiles``: read speed and correctness of the event-camera file libraries.

Writes one synthetic recording (random pixels, rising µs timestamps) in every format with the
format's own library where one is installable (AEDAT4: dv-processing; ES, EVT2, EVT3, DAT, CSV:
Faery), reads each file back with every candidate library that is installed (faery, aedat,
dv-processing, evlib), checks the events against what was written and prints events/s (best of
``--repeat``). Then it times spikebridge's own path (Faery plus grouping into 1 ms frames), and
measures two properties of dv-processing's network classes that decided how dv+tcp works: the
CPU an idle NetworkWriter burns, and how long a NetworkReader's connect keeps other Python
threads from running. A benchmark: it never asserts, and it runs its child processes on
127.0.0.1 only.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bridge.tools import ArgumentParser

W, H = 640, 480


def _events(n: int, faery: Any) -> Any:
    rng = np.random.default_rng(1)
    ev = np.zeros(n, dtype=faery.EVENTS_DTYPE)
    ev["t"] = 1_000_000 + np.cumsum(rng.integers(0, 3, n))
    ev["x"], ev["y"] = rng.integers(0, W, n), rng.integers(0, H, n)
    ev["on"] = rng.integers(0, 2, n).astype(bool)
    return ev


def _write_all(d: Path, ev: Any, faery: Any) -> dict[str, tuple[Path, str]]:
    files: dict[str, tuple[Path, str]] = {}
    try:
        import dv_processing as dv

        path = d / "dv.aedat4"
        cfg = dv.io.MonoCameraWriter.EventOnlyConfig("bench", (W, H))
        writer = dv.io.MonoCameraWriter(str(path), cfg)
        cols = [ev[k].tolist() for k in ("t", "x", "y", "on")]
        for a in range(0, len(ev), 10_000):
            store = dv.EventStore()
            for t, x, y, p in zip(*(c[a:a + 10_000] for c in cols), strict=True):
                store.push_back(t, x, y, p)
            writer.writeEvents(store)
        del writer
        files["AEDAT4"] = (path, "dv-processing")
    except ImportError:
        pass
    for name, suffix, version in (("EVT3", ".raw", "evt3"), ("EVT2", "_2.raw", "evt2"),
                                  ("DAT", ".dat", None), ("ES", ".es", None),
                                  ("CSV", ".csv", None)):
        path = d / f"faery{suffix}"
        kw: dict[str, Any] = {} if name == "CSV" else {"zero_t0": False}
        if version:
            kw["version"] = version
        faery.events_stream_from_array(ev.copy(), dimensions=(W, H)).to_file(str(path), **kw)
        files[name] = (path, "faery")
    return files


def _readers() -> dict[str, Callable[[Path], tuple[Any, Any, Any, Any]]]:
    out: dict[str, Callable[[Path], tuple[Any, Any, Any, Any]]] = {}
    try:
        import faery

        def read_faery(p: Path) -> tuple[Any, Any, Any, Any]:
            ev = np.concatenate(list(faery.file_decoder.Decoder(p, dimensions_fallback=(W, H))))
            return ev["t"], ev["x"], ev["y"], ev["on"]

        out["faery"] = read_faery
    except ImportError:
        pass
    try:
        import aedat

        def read_aedat(p: Path) -> tuple[Any, Any, Any, Any]:
            if p.suffix != ".aedat4":
                raise NotImplementedError
            ev = np.concatenate([pk["events"] for pk in aedat.Decoder(p) if "events" in pk])
            return ev["t"], ev["x"], ev["y"], ev["on"]

        out["aedat"] = read_aedat
    except ImportError:
        pass
    try:
        import dv_processing as dv

        def read_dv(p: Path) -> tuple[Any, Any, Any, Any]:
            if p.suffix != ".aedat4":
                raise NotImplementedError
            rec = dv.io.MonoCameraRecording(str(p))
            parts = []
            while rec.isRunning():
                b = rec.getNextEventBatch()
                if b is not None:
                    parts.append(b.numpy())
            ev = np.concatenate(parts)
            return ev["timestamp"], ev["x"], ev["y"], ev["polarity"]

        out["dv-processing"] = read_dv
    except ImportError:
        pass
    try:
        import evlib

        def read_evlib(p: Path) -> tuple[Any, Any, Any, Any]:
            df = evlib.load_events(str(p)).collect()
            t = df["t"].dt.total_microseconds().to_numpy()
            return t, df["x"].to_numpy(), df["y"].to_numpy(), df["polarity"].to_numpy() > 0

        out["evlib"] = read_evlib
    except ImportError:
        pass
    return out


def _check(ev: Any, got: tuple[Any, Any, Any, Any]) -> str:
    t, x, y, p = got
    if len(t) != len(ev):
        return f"wrong: {len(t)} of {len(ev)} events"
    bad = []
    if not np.array_equal(np.asarray(t, dtype=np.int64), ev["t"].astype(np.int64)):
        same = np.array_equal(np.asarray(t, np.int64) - int(t[0]), ev["t"].astype(np.int64)
                              - int(ev["t"][0]))
        bad.append("t (offset lost)" if same else "t")
    if not (np.array_equal(x, ev["x"]) and np.array_equal(y, ev["y"])):
        bad.append("x/y")
    if not np.array_equal(np.asarray(p).astype(bool), ev["on"]):
        bad.append("polarity")
    return "exact" if not bad else "wrong " + ", ".join(bad)


def _bind(fn: Callable[[Path], Any], path: Path) -> Callable[[], Any]:
    return lambda: fn(path)


def _time(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


IDLE_WRITER = """
import time, dv_processing as dv
s = dv.io.Stream.EventStream(0, "events", "bench", (64, 48))
w = dv.io.NetworkWriter("127.0.0.1", 0 or {port}, s)
time.sleep(0.2)
t0, c0 = time.monotonic(), time.process_time()
time.sleep({secs})
print((time.process_time() - c0) / (time.monotonic() - t0), flush=True)
import os; os._exit(0)
"""

SLOW_SERVER = """
import socket, sys, time
from bridge.codecs.dvstream import io_header
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
print(srv.getsockname()[1], flush=True)
c, _ = srv.accept(); time.sleep({delay}); c.sendall(io_header(64, 48)); time.sleep(2)
"""

GIL_PROBE = """
import sys, threading, time, dv_processing as dv
gaps, stop = [], False
def tick():
    last = time.perf_counter()
    while not stop:
        time.sleep(0.001)
        now = time.perf_counter(); gaps.append(now - last); last = now
th = threading.Thread(target=tick); th.start(); time.sleep(0.1)
t0 = time.perf_counter(); r = dv.io.NetworkReader("127.0.0.1", int(sys.argv[1]))
took = time.perf_counter() - t0; time.sleep(0.05); stop = True; th.join()
print(took, max(gaps), flush=True)
import os; os._exit(0)
"""


def _dv_figures(secs: float) -> list[str]:
    lines = []
    try:
        import dv_processing  # noqa: F401
    except ImportError:
        return ["dv-processing not installed: network figures skipped"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = subprocess.run([sys.executable, "-c", IDLE_WRITER.format(port=port, secs=secs)],
                         capture_output=True, text=True, timeout=60)
    if out.returncode == 0:
        lines.append(f"dv-processing NetworkWriter, idle, no client: {float(out.stdout):.2f} "
                     "CPU-seconds per second")
    delay = 0.2
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    srv = subprocess.Popen([sys.executable, "-c", SLOW_SERVER.format(delay=delay)],
                           stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert srv.stdout is not None
        sport = srv.stdout.readline().strip()
        probe = subprocess.run([sys.executable, "-c", GIL_PROBE, sport], capture_output=True,
                               text=True, timeout=60)
        if probe.returncode == 0:
            took, gap = (float(v) for v in probe.stdout.split())
            lines.append(f"dv-processing NetworkReader connect to a server that sends its header "
                         f"after {delay * 1000:.0f} ms: took {took * 1000:.0f} ms; a 1 ms ticker "
                         f"thread's longest gap meanwhile {gap * 1000:.0f} ms")
    finally:
        srv.kill()
        srv.wait()
    return lines


def build_parser() -> ArgumentParser:
    """The command's argument parser (for main, the man page and shell completion)."""
    parser = ArgumentParser(prog="spikebridge bench camfiles", description=__doc__,
                            epilog="example: spikebridge bench camfiles --events 100000")
    parser.add_argument("--events", type=int, default=1_000_000, help="events per file")
    parser.add_argument("--repeat", type=int, default=3, help="reads per figure (best is kept)")
    parser.add_argument("--idle-s", type=float, default=2.0,
                        help="seconds the idle NetworkWriter is watched")
    return parser


def main(argv: Sequence[str]) -> int:
    """Run the benchmark and print its tables."""
    args = build_parser().parse_args(argv)
    try:
        import faery
    except ImportError:
        print("spikebridge bench camfiles: needs faery: pip install 'spikebridge[events]'",
              file=sys.stderr)
        return 2
    from bridge.record.camera import CameraFile, CameraOptions

    ev = _events(args.events, faery)
    readers = _readers()
    print(f"{args.events} events, {W}x{H}, best of {args.repeat}; "
          f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    print(f"{'format':<7} {'written by':<14} {'reader':<14} {'Mevents/s':>10}  check")
    with tempfile.TemporaryDirectory() as tmp:
        files = _write_all(Path(tmp), ev, faery)
        for fmt, (path, writer) in files.items():
            for name, read in readers.items():
                try:
                    secs, got = _time(_bind(read, path), args.repeat)
                except NotImplementedError:
                    continue
                except Exception as exc:
                    print(f"{fmt:<7} {writer:<14} {name:<14} {'-':>10}  fails: "
                          f"{str(exc).splitlines()[0][:60]}")
                    continue
                print(f"{fmt:<7} {writer:<14} {name:<14} {len(ev) / secs / 1e6:>10.1f}  "
                      f"{_check(ev, got)}")
            def frames(path: Path = path,
                       opts: CameraOptions = CameraOptions(window_us=1000)) -> int:  # noqa: B008
                return sum(len(f.ids) for _, f in CameraFile(path, opts).frames())

            secs, n = _time(frames, args.repeat)
            print(f"{fmt:<7} {writer:<14} {'spikebridge':<14} {n / secs / 1e6:>10.1f}  "
                  f"faery + 1 ms frames, {n} events")
    for line in _dv_figures(args.idle_s):
        print(line)
    return 0
