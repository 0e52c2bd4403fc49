"""No client can hold the metrics endpoint: idle, slow and many clients against a real daemon."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator

import pytest

pytestmark = pytest.mark.integration

LISTENING = re.compile(r"metrics on http://127\.0\.0\.1:(\d+)/metrics")


class Daemon:
    """``spikebridge run`` in relay mode with metrics on an ephemeral loopback port."""

    def __init__(self) -> None:
        env = {**os.environ}
        env.pop("NOTIFY_SOCKET", None)
        env.pop("JOURNAL_STREAM", None)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            out_port = s.getsockname()[1]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bridge", "run", "--in", "udp://127.0.0.1:0?neurons=16",
             "--out", f"udp://127.0.0.1:{out_port}?neurons=16", "--metrics", "127.0.0.1:0"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self.lines: list[str] = []
        self.port = self._wait_for_port()

    def _wait_for_port(self) -> int:
        assert self.proc.stdout is not None
        end = time.monotonic() + 30
        while time.monotonic() < end:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.lines.append(line)
            m = LISTENING.search(line)
            if m:
                # Keep reading the output so that the daemon never blocks on a full pipe.
                threading.Thread(target=self._drain, daemon=True).start()
                return int(m.group(1))
        self.close()
        raise AssertionError("the daemon never served metrics:\n" + "".join(self.lines))

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def daemon() -> Iterator[Daemon]:
    d = Daemon()
    yield d
    d.close()


def timed_scrape(port: int, method: str = "GET") -> tuple[float, int, bytes]:
    """(seconds, status, body) of one request to /metrics."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", method=method)
    t0 = time.monotonic()
    with urllib.request.urlopen(req, timeout=15) as resp:
        body = resp.read()
        return time.monotonic() - t0, resp.status, body


def idle_connections(port: int, n: int) -> list[socket.socket]:
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        socks.append(s)
    return socks


def test_one_idle_connection_does_not_delay_a_scrape(daemon: Daemon) -> None:
    idle = idle_connections(daemon.port, 1)
    try:
        seconds, status, body = timed_scrape(daemon.port)
    finally:
        for s in idle:
            s.close()
    assert status == 200 and b"spikebridge_frames_received_total" in body
    assert seconds < 1.0, f"a scrape took {seconds:.2f} s beside one idle connection"


def test_100_idle_connections_and_a_slow_client_do_not_hold_the_endpoint(daemon: Daemon) -> None:
    idle = idle_connections(daemon.port, 100)
    slow = socket.create_connection(("127.0.0.1", daemon.port), timeout=5)
    stop = threading.Event()

    def dribble() -> None:  # a request sent one byte a second
        for byte in b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n":
            if stop.wait(1.0):
                return
            try:
                slow.send(bytes([byte]))
            except OSError:
                return  # the server closed it at its deadline: that is allowed

    t = threading.Thread(target=dribble, daemon=True)
    t.start()
    try:
        time.sleep(1.5)  # the slow client is mid-request
        worst = 0.0
        for _ in range(5):
            seconds, status, body = timed_scrape(daemon.port)
            assert status == 200 and b"spikebridge_endpoint_up" in body
            worst = max(worst, seconds)
        assert worst < 1.0, f"a scrape took {worst:.2f} s beside 100 idle and 1 slow client"
    finally:
        stop.set()
        t.join(timeout=5)
        for s in [*idle, slow]:
            s.close()
    assert daemon.proc.poll() is None


def test_head_metrics_answers_like_get_without_a_body(daemon: Daemon) -> None:
    _, status, body = timed_scrape(daemon.port, "HEAD")
    assert status == 200 and body == b""
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=5) as s:
        s.sendall(b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
    head, _, rest = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    length = int(re.search(rb"Content-Length: (\d+)", head).group(1))  # type: ignore[union-attr]
    assert length > 1000 and rest == b""


def test_the_exporter_process_does_not_outlive_a_killed_daemon(daemon: Daemon) -> None:
    pid = daemon.proc.pid
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        children = [int(c) for c in f.read().split()]
    assert len(children) == 1  # the exporter
    child = children[0]
    daemon.proc.kill()
    daemon.proc.wait()
    end = time.monotonic() + 10
    while time.monotonic() < end and running(child):
        time.sleep(0.05)
    assert not running(child), "the exporter process outlived its daemon"


def running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (exited, not yet reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
