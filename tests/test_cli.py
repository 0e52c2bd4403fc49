"""The command line as scripts use it: real processes, real UDP on 127.0.0.1, exit codes."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from bridge.testing import free_udp_port, spikebridge_cmd, wait_for


def run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(spikebridge_cmd(*args), capture_output=True, text=True,
                          timeout=timeout)


def test_help_lists_every_command() -> None:
    res = run("--help")
    assert res.returncode == 0
    for cmd in ("run", "check", "send", "listen", "bench", "demo"):
        assert f"  {cmd} " in res.stdout


def test_unknown_command_exits_2() -> None:
    res = run("frobnicate")
    assert res.returncode == 2 and "unknown command 'frobnicate'" in res.stderr


@pytest.mark.parametrize(("args", "words"), [
    (["run"], "give a CONFIG file, or at least one --in URL"),
    (["run", "--in", "udp://127.0.0.1:1?neurons=4&colour=red"], "unknown key(s) colour"),
    (["run", "--in", "udp://127.0.0.1:1?neurons=4", "--dt", "-1"], "bridge.dt_ms"),
    (["run", "--in", "udp://127.0.0.1:1?neurons=4", "--processor", "python:nosuchmod:f"],
     "cannot import 'nosuchmod'"),
    (["send", "udp://127.0.0.1:1?format=legacy&neurons=4", "--ids", "1,x"], "--ids"),
    (["send", "udp://127.0.0.1:1?format=legacy&neurons=4", "--ids", "9"], "out of range"),
    (["listen", "udp://127.0.0.1:1?format=nope"], "unknown format 'nope'"),
    (["check", "/nonexistent.toml"], "cannot read config"),
])
def test_bad_arguments_exit_2_naming_the_problem(args: list[str], words: str) -> None:
    res = run(*args)
    assert res.returncode == 2, res.stderr
    assert words in res.stderr


def test_port_in_use_exits_2(daemon: Any) -> None:
    port = free_udp_port()
    first = daemon("--in", f"udp://127.0.0.1:{port}?neurons=4")
    assert wait_for(lambda: "running" in _peek(first), timeout=10)
    res = run("run", "--in", f"udp://127.0.0.1:{port}?neurons=4")
    assert res.returncode == 2
    assert "Address already in use" in res.stderr


def _peek(d: Any) -> str:
    import os
    import select

    fd = d.proc.stdout.fileno()
    os.set_blocking(fd, False)
    while select.select([fd], [], [], 0)[0]:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        d.output += chunk.decode()
    return str(d.output)


def test_check_accepts_a_good_config(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[[input]]\nurl = "udp://127.0.0.1:5000?format=legacy&neurons=10"\n')
    res = run("check", str(cfg))
    assert res.returncode == 0 and "ok" in res.stdout


def test_send_run_listen_end_to_end(daemon: Any) -> None:
    pin, pout = free_udp_port(), free_udp_port()
    d = daemon("--in", f"udp://127.0.0.1:{pin}?format=legacy&neurons=100",
               "--out", f"udp://127.0.0.1:{pout}?format=native&neurons=100", "--node", "4")
    assert wait_for(lambda: "running" in _peek(d), timeout=10)
    listener = subprocess.Popen(
        spikebridge_cmd("listen", f"udp://127.0.0.1:{pout}?format=native&neurons=100",
                        "--json", "--count", "5", "--duration", "20"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert wait_for(lambda: _listening(listener), timeout=10)
    res = run("send", f"udp://127.0.0.1:{pin}?format=legacy&neurons=100", "--ids", "1,7,99",
              "--count", "5", "--rate", "200", "--node", "2")
    assert res.returncode == 0, res.stderr
    out, _ = listener.communicate(timeout=20)
    lines = [json.loads(line) for line in out.splitlines()]
    assert len(lines) == 5
    assert all(rec["ids"] == [1, 7, 99] and rec["source"] == 4 for rec in lines)
    assert [rec["seq"] for rec in lines] == [0, 1, 2, 3, 4]  # native adds sequence numbers
    assert d.stop(signal.SIGTERM) == 0


def _listening(p: subprocess.Popen[str]) -> bool:
    import os
    import select

    assert p.stderr is not None
    fd = p.stderr.fileno()
    if select.select([fd], [], [], 0)[0]:
        line = os.read(fd, 4096).decode()
        return "listening" in line
    return False


def test_sigterm_exits_0(daemon: Any) -> None:
    d = daemon("--in", f"udp://127.0.0.1:{free_udp_port()}?neurons=4")
    assert wait_for(lambda: "running" in _peek(d), timeout=10)
    assert d.stop(signal.SIGTERM) == 0


def test_demo_runs_and_balances_its_books() -> None:
    res = run("demo", "--duration", "2", "--metrics", "127.0.0.1:0", timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "books balanced" in res.stderr
    assert "retina  received" in res.stdout and "motor   sent" in res.stdout


def test_on_error_stop_exits_1(daemon: Any, tmp_path: Path) -> None:
    mod = tmp_path / "crash.py"
    mod.write_text("def step(ids):\n    raise RuntimeError('boom')\n")
    pin = free_udp_port()
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[bridge]\nprocessor = "python:{mod}:step"\non_error = "stop"\n'
                   f'[[input]]\nurl = "udp://127.0.0.1:{pin}?format=native&neurons=4"\n')
    d = daemon(str(cfg))
    assert wait_for(lambda: "running" in _peek(d), timeout=10)
    res = run("send", f"udp://127.0.0.1:{pin}?format=native&neurons=4", "--ids", "1")
    assert res.returncode == 0
    assert d.proc.wait(10) == 1
    assert "RuntimeError: boom" in _peek(d) + (d.proc.stdout.read() if d.proc.stdout else "")
