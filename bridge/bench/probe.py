"""Watch a running daemon from outside, as systemd and Prometheus do, for benchmarks and tests.

A fake service manager (a NOTIFY_SOCKET that records READY/WATCHDOG/STOPPING with arrival
times), a metrics scraper that turns the exposition into numbers and per-endpoint books
(``received = accepted + dropped{reason}``), resident memory from /proc, and the daemon as a
subprocess wired to all three. ``via`` runs the daemon and the scrapes under a command prefix
such as ``ip netns exec NAME``.

Never imported by the daemon; never sends anything to the daemon's endpoints itself.
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families


def free_tcp_port(host: str = "127.0.0.1") -> int:
    """An unused TCP port on ``host`` (bound and released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


class NotifyListener:
    """A fake NOTIFY_SOCKET: a thread reads every datagram at once and keeps (time, message)."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        if path is None:
            self._dir: str | None = tempfile.mkdtemp(prefix="spikebridge-notify-")
            path = os.path.join(self._dir, "notify.sock")
        else:
            self._dir = None
        self.path = str(path)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(self.path)
        self._sock.settimeout(0.1)
        self.log: list[tuple[float, str]] = []  # (time.monotonic(), message)
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="notify", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                msg = self._sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            self.log.append((time.monotonic(), msg.decode(errors="replace")))

    def times(self, field: str) -> list[float]:
        """Arrival times of the messages that hold ``field`` (e.g. ``WATCHDOG=1``)."""
        return [t for t, m in list(self.log) if field in m.split("\n")]

    def wait_for(self, field: str, timeout: float, after: float = 0.0) -> float | None:
        """The arrival time of the first ``field`` message after ``after``; None on timeout."""
        end = time.monotonic() + timeout
        while True:
            for t in self.times(field):
                if t >= after:
                    return t
            if time.monotonic() >= end:
                return None
            time.sleep(0.01)

    def close(self) -> None:
        """Stop reading and remove the socket; idempotent."""
        self._stop = True
        self._thread.join(1)
        self._sock.close()
        if os.path.exists(self.path):
            os.unlink(self.path)
        if self._dir is not None:
            os.rmdir(self._dir)
            self._dir = None


def max_gap(times: Sequence[float], start: float, end: float) -> float:
    """The longest stretch in [start, end] without an event (including both edges)."""
    points = [start, *(t for t in times if start < t < end), end]
    return max(b - a for a, b in itertools.pairwise(points))


@dataclass
class Books:
    """One input endpoint's books, read from the metrics."""

    endpoint: str
    received: int
    accepted: int
    dropped: dict[str, int] = field(default_factory=dict)

    @property
    def balanced(self) -> bool:
        """received = accepted + every counted drop."""
        return self.received == self.accepted + sum(self.dropped.values())

    def __str__(self) -> str:
        drops = ", ".join(f"{r} {n}" for r, n in sorted(self.dropped.items()) if n) or "none"
        verdict = "balanced" if self.balanced else "NOT BALANCED"
        return (f"{self.endpoint}: received {self.received} = accepted {self.accepted} + "
                f"dropped ({drops}): {verdict}")


class Metrics:
    """One scrape: sample values by name and labels."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                self.samples[(s.name, frozenset(s.labels.items()))] = s.value

    def get(self, name: str, default: float | None = None, **labels: str) -> float:
        """The value of sample ``name`` with exactly ``labels``; KeyError unless ``default``."""
        key = (name, frozenset(labels.items()))
        if key in self.samples:
            return self.samples[key]
        if default is not None:
            return default
        raise KeyError(f"no sample {name}{labels or ''}")

    def matching(self, name: str, **labels: str) -> dict[frozenset[tuple[str, str]], float]:
        """Every sample ``name`` whose labels include ``labels``."""
        want = set(labels.items())
        return {lab: v for (n, lab), v in self.samples.items() if n == name and want <= lab}

    def dropped(self, endpoint: str) -> dict[str, int]:
        """frames_dropped_total of ``endpoint`` by reason."""
        out = {}
        for lab, v in self.matching("spikebridge_frames_dropped_total", endpoint=endpoint).items():
            out[dict(lab)["reason"]] = int(v)
        return out

    def books(self, endpoint: str) -> Books:
        """The input ``endpoint``'s received, accepted and dropped counts."""
        return Books(
            endpoint,
            int(self.get("spikebridge_frames_received_total", endpoint=endpoint)),
            int(self.get("spikebridge_frames_accepted_total", endpoint=endpoint)),
            self.dropped(endpoint),
        )

    def inputs(self) -> list[str]:
        """Names of the input endpoints."""
        return sorted(dict(lab)["endpoint"]
                      for lab in self.matching("spikebridge_frames_received_total"))


def scrape(host: str, port: int, via: Sequence[str] = (), timeout: float = 5.0) -> Metrics:
    """GET /metrics from ``host:port`` (through the ``via`` command prefix when given)."""
    url = f"http://{host}:{port}/metrics"
    if via:
        code = ("import sys, urllib.request; sys.stdout.write(urllib.request.urlopen("
                f"{url!r}, timeout={timeout}).read().decode())")
        out = subprocess.run([*via, sys.executable, "-c", code], capture_output=True,
                             text=True, timeout=timeout + 10, check=True)
        return Metrics(out.stdout)
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return Metrics(resp.read().decode())


def rss_bytes(pid: int) -> int:
    """Resident memory of process ``pid`` (VmRSS), in bytes."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise OSError(f"no VmRSS for pid {pid}")


class ServiceProcess:
    """``spikebridge run ARGS`` as systemd runs it: fake NOTIFY_SOCKET, optional watchdog."""

    def __init__(self, args: Sequence[str], *, watchdog_usec: int = 0,
                 env: Mapping[str, str] | None = None, via: Sequence[str] = (),
                 metrics: tuple[str, int] | None = None, log_path: Path | None = None) -> None:
        self.notify = NotifyListener()
        self.metrics_at = metrics
        self.via = tuple(via)
        full = {**os.environ, "NOTIFY_SOCKET": self.notify.path, **(env or {})}
        full.pop("JOURNAL_STREAM", None)
        full.pop("WATCHDOG_PID", None)
        if watchdog_usec:
            full["WATCHDOG_USEC"] = str(watchdog_usec)
        else:
            full.pop("WATCHDOG_USEC", None)
        cmd = [*self.via, sys.executable, "-m", "bridge", "run", *args]
        if metrics is not None:
            cmd += ["--metrics", f"{metrics[0]}:{metrics[1]}"]
        self._log_path = log_path
        # Held open for the daemon's whole life (closed in close()), not a with-block.
        self._log = (open(log_path, "w+b") if log_path is not None  # noqa: SIM115
                     else tempfile.TemporaryFile())  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, env=full, stdout=self._log, stderr=subprocess.STDOUT)
        self.started = time.monotonic()

    @property
    def pid(self) -> int:
        """The daemon's pid (the Python process itself, unless ``via`` wraps it)."""
        return self.proc.pid

    def alive(self) -> bool:
        """True while the process runs."""
        return self.proc.poll() is None

    def wait_ready(self, timeout: float = 30.0) -> float:
        """Wait for READY=1; its arrival time. RuntimeError with the log if it never comes."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            t = self.notify.wait_for("READY=1", 0.05)
            if t is not None:
                return t
            if not self.alive():
                break
        raise RuntimeError(f"no READY=1 (exit {self.proc.poll()}):\n{self.output()}")

    def scrape(self) -> Metrics:
        """The daemon's metrics now."""
        if self.metrics_at is None:
            raise RuntimeError("started without --metrics")
        return scrape(*self.metrics_at, via=self.via)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> tuple[int, float]:
        """Send ``sig`` and wait: (exit code, seconds it took). Killed after ``timeout``."""
        t0 = time.monotonic()
        if self.alive():
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        return code, time.monotonic() - t0

    def output(self) -> str:
        """Everything the daemon has logged so far."""
        self._log.flush()
        self._log.seek(0)
        text = self._log.read().decode(errors="replace")
        self._log.seek(0, os.SEEK_END)
        return text

    def close(self) -> None:
        """Kill the daemon if it still runs and release the notify socket; idempotent."""
        if self.alive():
            self.proc.kill()
            self.proc.wait()
        self.notify.close()
        if not self._log.closed:
            self._log.close()


BLASTER_SOURCE = '''\
import signal, socket, sys, time
host, port, rate, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
msgs = [bytes.fromhex(h) for h in sys.argv[5].split(",")]
stop = False
def on_term(*_):
    global stop
    stop = True
signal.signal(signal.SIGTERM, on_term)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
s.connect((host, port))
send, clock, k, m = s.send, time.perf_counter, 0, len(msgs)
n = fails = 0
t0 = clock(); end = t0 + secs
print("started", flush=True)
while not stop:
    now = clock()
    if now >= end:
        break
    due = int((now - t0) * rate) if rate > 0 else n + 64
    while n < due:
        try:
            send(msgs[k]); n += 1; k = k + 1 if k + 1 < m else 0
        except OSError:
            fails += 1
            break
    if rate > 0:
        time.sleep(0.0002)
print(n, fails, clock() - t0, flush=True)
'''


class Blaster:
    """A sender process: ``datagrams`` in turn to host:port at ``rate``/s (0: flat out)."""

    def __init__(self, host: str, port: int, datagrams: Sequence[bytes], *, rate: float = 0.0,
                 seconds: float = 3600.0, via: Sequence[str] = ()) -> None:
        self.proc = subprocess.Popen(
            [*via, sys.executable, "-c", BLASTER_SOURCE, host, str(port), str(rate),
             str(seconds), ",".join(d.hex() for d in datagrams)],
            stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.proc.stdout.readline()  # "started": the socket is up and sending
        self.sent = 0      # datagrams the kernel took
        self.refused = 0   # sends the kernel refused (full send buffer)
        self.seconds = 0.0

    def wait(self, timeout: float | None = None) -> Blaster:
        """Wait for the run to end by itself; read its counts."""
        out, _ = self.proc.communicate(timeout=timeout)
        sent, refused, seconds = out.split()
        self.sent, self.refused, self.seconds = int(sent), int(refused), float(seconds)
        return self

    def stop(self) -> Blaster:
        """End the run now (SIGTERM); read its counts."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait(10)

    @property
    def rate(self) -> float:
        """Datagrams per second the kernel took, over the whole run."""
        return self.sent / self.seconds if self.seconds else 0.0
