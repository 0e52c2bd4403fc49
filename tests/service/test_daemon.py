"""The daemon as systemd sees it: a subprocess talking to a fake NOTIFY_SOCKET."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bridge.config import load_config
from bridge.engine.clock import FakeClock
from bridge.engine.stats import BridgeStats
from bridge.service.daemon import EXTEND_TIMEOUT_NS, Reloader, StartupProgress
from bridge.service.heartbeat import Heartbeat
from bridge.service.notify import Notifier

pytestmark = pytest.mark.integration

# A stepped python processor that stalls the loop when told to through a file, and leaves
# a file behind from its post-run hook.
PROCESSOR = '''
import os, time
HERE = os.path.dirname(os.path.abspath(__file__))

def step(ids):
    flag = os.path.join(HERE, "stall")
    if os.path.exists(flag):
        seconds = float(open(flag).read())
        os.unlink(flag)
        time.sleep(seconds)
    global calls
    calls += 1
    if calls % 4 == 0 and os.path.exists(os.path.join(HERE, "slow")):
        time.sleep(0.0065)  # with dt = 5 ms, the next step starts 1.5 ms late: a miss
    return ids

calls = 0

def post_run():
    open(os.path.join(HERE, "post_run_done"), "w").close()
'''


class Daemon:
    """``spikebridge run`` under a fake service manager."""

    def __init__(self, tmp: Path, args: list[str], env: dict[str, str] | None = None,
                 exec_pid_env: bool = False) -> None:
        self.tmp = tmp
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(tmp / "notify.sock"))
        self.log: list[tuple[float, str]] = []
        self.cursor = 0  # wait_for looks at messages from here on
        full_env = {**os.environ, "NOTIFY_SOCKET": str(tmp / "notify.sock"), **(env or {})}
        full_env.pop("JOURNAL_STREAM", None)
        cmd = [sys.executable, "-m", "bridge", "run", *args]
        if exec_pid_env:
            # WATCHDOG_PID must name the daemon: exec keeps the shell's pid.
            cmd = ["sh", "-c", 'WATCHDOG_PID=$$ exec "$@"', "sh", *cmd]
        self.proc = subprocess.Popen(cmd, env=full_env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.t0 = time.monotonic()

    def read(self, seconds: float) -> list[str]:
        """Collect notifications for ``seconds``; all of them so far."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                msg = self.sock.recv(4096).decode()
            except TimeoutError:
                break
            self.log.append((time.monotonic() - self.t0, msg))
        return self.messages()

    def wait_for(self, text: str, timeout: float = 15.0) -> float:
        """Read until a message containing ``text`` comes after the last one waited for."""
        end = time.monotonic() + timeout
        while True:
            for i in range(self.cursor, len(self.log)):
                if text in self.log[i][1]:
                    self.cursor = i + 1
                    return self.log[i][0]
            if time.monotonic() >= end or self.proc.poll() is not None:
                break
            self.read(0.05)
        self.read(0.2)
        raise AssertionError(f"no {text!r} notification; got {self.messages()}\n{self.output()}")

    def messages(self) -> list[str]:
        return [m for _, m in self.log]

    def pings(self, after: float = 0.0, before: float = float("inf")) -> list[float]:
        return [t for t, m in self.log if m == "WATCHDOG=1" and after <= t < before]

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout=20)
        self.read(0.1)
        return code

    def output(self) -> str:
        if self.proc.poll() is None:
            return "(still running)"
        assert self.proc.stdout is not None
        return self.proc.stdout.read()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.sock.close()


@pytest.fixture
def daemons(tmp_path):
    started: list[Daemon] = []

    def start(args: list[str], **kw: object) -> Daemon:
        d = Daemon(tmp_path, args, **kw)  # type: ignore[arg-type]
        started.append(d)
        return d

    yield start
    for d in started:
        d.close()


def stepped_args(tmp: Path, extra: list[str] | None = None) -> list[str]:
    (tmp / "proc.py").write_text(PROCESSOR)
    return ["--in", "udp://127.0.0.1:0?neurons=16", "--processor",
            f"python:{tmp / 'proc.py'}:step", "--dt", "1", *(extra or [])]


def test_ready_then_pings_at_half_the_period_reload_and_clean_stop(daemons, tmp_path) -> None:
    d = daemons(stepped_args(tmp_path), env={"WATCHDOG_USEC": "200000"}, exec_pid_env=True)
    t_ready = d.wait_for("READY=1")
    d.read(1.5)
    msgs = d.messages()
    assert msgs[0].startswith("READY=1\nSTATUS=ready: 1 in, 0 out, stepped")
    assert "WATCHDOG=1" not in msgs[: msgs.index(next(m for m in msgs if m.startswith("READY")))]
    # One ping per 100 ms (half of WATCHDOG_USEC): never more often than that, and not
    # much less often even on a busy machine. Times are taken on arrival here.
    pings = d.pings(after=t_ready)
    span = d.log[-1][0] - t_ready
    assert 0.4 * span / 0.1 <= len(pings) <= span / 0.1 + 3, (span, pings)
    assert any(m.startswith("STATUS=") for m in msgs[1:])

    d.proc.send_signal(signal.SIGHUP)
    d.wait_for("RELOADING=1")
    d.wait_for("READY=1", timeout=5)
    reload_msgs = d.messages()
    i = next(i for i, m in enumerate(reload_msgs) if m.startswith("RELOADING=1"))
    fields = dict(line.split("=", 1) for line in reload_msgs[i].splitlines())
    assert fields["RELOADING"] == "1"
    now_usec = time.monotonic_ns() // 1000
    assert 0 < now_usec - int(fields["MONOTONIC_USEC"]) < 10_000_000
    assert any(m.startswith("READY=1") for m in reload_msgs[i + 1:])

    assert d.stop(signal.SIGTERM) == 0
    msgs = d.messages()
    assert any(m.startswith("STOPPING=1") for m in msgs)
    assert sum(m.startswith("STOPPING=1") for m in msgs) == 1
    assert (tmp_path / "post_run_done").exists()
    out = d.output()
    assert "stopped:" in out and "Traceback" not in out


def test_a_stalled_loop_stops_the_pings(daemons, tmp_path) -> None:
    args = stepped_args(tmp_path)
    d = daemons(args, env={"WATCHDOG_USEC": "200000"})
    t_ready = d.wait_for("READY=1")
    d.read(0.5)
    (tmp_path / "stall.tmp").write_text("1.5")
    os.rename(tmp_path / "stall.tmp", tmp_path / "stall")
    t_stall = time.monotonic() - d.t0
    d.read(2.5)
    assert d.stop() == 0
    before = d.pings(after=t_ready, before=t_stall)
    during = d.pings(after=t_stall + 0.2, before=t_stall + 1.4)
    after = d.pings(after=t_stall + 1.6)
    assert len(before) >= 2
    assert during == [], during
    assert len(after) >= 3  # the loop came back and ticks steadily again
    assert "withholding watchdog pings: loop stalled for 1.5" in d.output()


def test_deadline_misses_over_the_threshold_withhold_pings_until_a_reload_raises_it(
    daemons, tmp_path
) -> None:
    stepped_args(tmp_path)  # writes proc.py
    (tmp_path / "slow").touch()  # a deadline miss every 4th step, 50 a second
    config = tmp_path / "bridge.toml"
    base = (f'[bridge]\nprocessor = "python:{tmp_path / "proc.py"}:step"\ndt_ms = 5\n'
            '[[input]]\nurl = "udp://127.0.0.1:0?neurons=16"\n')
    config.write_text(base + "[watchdog]\nmax_misses = 5\nwindow_s = 0.5\n")
    d = daemons([str(config)], env={"WATCHDOG_USEC": "200000"})
    t_ready = d.wait_for("READY=1")
    d.read(1.0)
    assert len(d.pings(after=t_ready + 0.5)) == 0, d.log

    config.write_text(base + "[watchdog]\nmax_misses = 1000000\n")
    d.proc.send_signal(signal.SIGHUP)
    t_reload = d.wait_for("RELOADING=1")
    d.read(1.0)
    assert len(d.pings(after=t_reload)) >= 3
    assert d.stop() == 0
    assert "reload: applied [watchdog]" in d.output()


def test_no_pings_for_another_pid(daemons, tmp_path) -> None:
    d = daemons(stepped_args(tmp_path), env={"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"})
    d.wait_for("READY=1")
    d.read(0.6)
    assert d.stop() == 0
    assert "WATCHDOG=1" not in d.messages()


def test_a_taken_metrics_port_is_exit_2_before_anything_runs(daemons, tmp_path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        d = daemons(stepped_args(tmp_path, ["--metrics", f"127.0.0.1:{port}"]))
        assert d.proc.wait(timeout=20) == 2
    d.read(0.1)
    assert not any(m.startswith("READY") for m in d.messages())
    assert f"127.0.0.1:{port}" in d.output()


def test_startup_progress_extends_the_timeout_at_most_once_a_second() -> None:
    sent: list[str] = []
    clock = FakeClock()
    progress = StartupProgress(Notifier({}, sender=lambda m: sent.append(m) or True), clock)
    progress("generating code")
    clock.advance(300_000_000)
    progress("compiling")       # too soon for another extension
    clock.advance(800_000_000)
    progress("linking")
    assert sent == [
        f"EXTEND_TIMEOUT_USEC={EXTEND_TIMEOUT_NS // 1000}\nSTATUS=starting: generating code",
        f"EXTEND_TIMEOUT_USEC={EXTEND_TIMEOUT_NS // 1000}\nSTATUS=starting: linking",
    ]


def test_a_refused_required_realtime_setting_is_exit_2_without_ready(daemons, tmp_path) -> None:
    config = tmp_path / "bridge.toml"
    config.write_text('[bridge]\ndt_ms = 5\n[[input]]\nurl = "udp://127.0.0.1:0?neurons=16"\n'
                      '[realtime]\ncpus = [4095]\nrequired = ["cpus"]\n')  # no such CPU
    d = daemons([str(config)], env={"WATCHDOG_USEC": "200000"})
    assert d.proc.wait(timeout=20) == 2
    d.read(0.1)
    assert not any(m.startswith(("READY", "WATCHDOG")) for m in d.messages()), d.messages()
    assert "required real-time setting refused" in d.output()


def test_reload_applies_the_watchdog_section_and_names_what_needs_a_restart(
    tmp_path, caplog
) -> None:
    path = tmp_path / "bridge.toml"
    base = '[[input]]\nurl = "udp://127.0.0.1:0?neurons=16"\n'
    path.write_text(base + "[bridge]\ndt_ms = 1\n[watchdog]\nmax_misses = 5\n")
    cfg = load_config(str(path))
    sent: list[str] = []
    notifier = Notifier({}, sender=lambda m: sent.append(m) or True)
    clock = FakeClock(start_ns=7_000_000_000)
    beat = Heartbeat(BridgeStats(), notifier, None)
    reload = Reloader(cfg, beat, notifier, clock, usec=2_000_000)

    path.write_text(base + "[bridge]\ndt_ms = 2\n[watchdog]\nmax_misses = 50\n")
    with caplog.at_level(logging.INFO, logger="spikebridge"):
        reload()
    assert beat.watchdog is not None and beat.watchdog.max_misses == 50
    assert sent[0] == "RELOADING=1\nMONOTONIC_USEC=7000000"
    assert sent[-1].startswith("READY=1\nSTATUS=")
    assert "reload: restart the service to apply: bridge.dt_ms 1 -> 2" in caplog.text

    caplog.clear()
    path.write_text(base + "[bridge]\ndt_ms = -1\n")
    with caplog.at_level(logging.INFO, logger="spikebridge"):
        reload()
    assert "bridge.dt_ms" in caplog.text and "keeping the running config" in caplog.text
    assert beat.watchdog.max_misses == 50
    assert sent[-1].startswith("READY=1")
