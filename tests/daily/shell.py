"""Run documented shell command lines as a user would, on free loopback ports.

Used by the tests that execute the examples' header lines and the docs' command blocks. A
block is a list of command lines (backslash continuations joined, comments dropped). Ports
written in the lines and in the files they use (``examples/``, copied into a scratch
directory) are rewritten to free ones, consistently. Lines that run until stopped (``run``,
``listen``, ``emulate``, ``top``, ``demo``, ``replay``, anything ending in ``&``) are started
in the background and, once the block's other lines ran, given a moment, then ended with
SIGINT; a line counts as passing when it exits with the documented code (0 unless stated).
``spikebridge`` lines that end by themselves run in-process through ``bridge.cli.main``.

It must never send to an address other than loopback: hosts other than 127.0.0.1, 0.0.0.0
and localhost in a command line are refused before anything runs.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bridge.cli import main as cli_main

REPO = Path(__file__).resolve().parents[2]
ANY_HOSTPORT = re.compile(r"(?<![\w.])(\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}|localhost):(\d{2,5})\b")
HOSTPORT = re.compile(r"(?<![\w.])(127\.0\.0\.1|0\.0\.0\.0|localhost):(\d{2,5})\b")
FOREIGN = re.compile(r"(?<![\w.])(\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}):\d+")
LONG = {"run", "listen", "emulate", "top", "demo", "replay", "record"}
BOUNDS = ("--duration", "--count", "--timeout", "--seconds", "--frames")
SHELL_CHARS = set("|><;$`")


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port: int = u.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port


class PortMap:
    """Each documented port -> one free port, the same wherever it appears.

    With ``loopback_all`` every IPv4 host (a documented peer at 10.0.0.2, a bind on 0.0.0.0)
    becomes 127.0.0.1 too, so that nothing is sent off this machine.
    """

    def __init__(self, loopback_all: bool = False) -> None:
        self.ports: dict[str, int] = {}
        self.loopback_all = loopback_all

    def rewrite(self, text: str) -> str:
        def sub(m: re.Match[str]) -> str:
            new = self.ports.setdefault(m.group(2), free_port())
            host = "127.0.0.1" if self.loopback_all else m.group(1)
            return f"{host}:{new}"

        return (ANY_HOSTPORT if self.loopback_all else HOSTPORT).sub(sub, text)


def logical_lines(text: str) -> list[str]:
    """Command lines of a shell block: continuations joined, comments and prompts dropped."""
    out: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.rstrip()
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = (pending + line).strip()
        pending = ""
        if line.startswith("$ "):
            line = line[2:]
        if not line or line.startswith("#"):
            continue
        out.append(line)
    return out


@dataclass
class Outcome:
    """One command line: what ran, its exit code, its output."""

    line: str
    code: int | None
    output: str = ""


@dataclass
class Scratch:
    """A scratch working directory holding a port-rewritten copy of the repository's files."""

    root: Path
    ports: PortMap = field(default_factory=PortMap)

    @classmethod
    def make(cls, root: Path, dirs: tuple[str, ...] = ("examples", "deploy"),
             loopback_all: bool = False) -> Scratch:
        scratch = cls(root, PortMap(loopback_all))
        for name in dirs:
            src = REPO / name
            if not src.is_dir():
                continue
            shutil.copytree(src, root / name, ignore=shutil.ignore_patterns("__pycache__"))
            for path in (root / name).rglob("*"):
                if path.is_file() and path.suffix in (".toml", ".py", ".yml", ".yaml", ".md"):
                    text = scratch.ports.rewrite(path.read_text())
                    path.write_text(text.replace("/tmp/", f"{root}/tmp-"))
        return scratch

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        env["PYTHONPATH"] = str(REPO)
        env.pop("NOTIFY_SOCKET", None)
        return env

    def prepare(self, line: str, duration: str | None = None) -> str:
        """The line with its ports rewritten, /tmp paths moved here and ``--duration`` short."""
        line = self.ports.rewrite(line).replace("/tmp/", f"{self.root}/tmp-")
        bad = [m.group(1) for m in FOREIGN.finditer(line)
               if m.group(1) not in ("127.0.0.1", "0.0.0.0")]
        if bad:
            raise AssertionError(f"refusing a command line sending off loopback: {line}")
        if duration is not None:
            line = re.sub(r"--duration[ =][0-9.]+", f"--duration {duration}", line)
        return line

    def run_block(self, lines: list[str], *, duration: str = "1", grace: float = 1.0,
                  expect: dict[str, int] | None = None, timeout: float = 90.0) -> list[Outcome]:
        """Run ``lines`` in order (long ones in the background); every line's outcome."""
        background: list[tuple[str, subprocess.Popen[str]]] = []
        outcomes: list[Outcome] = []
        try:
            for original in lines:
                line = self.prepare(original, duration)
                words = shlex.split(line, comments=True)
                if not words:
                    continue
                amp = words[-1] == "&"
                if amp:
                    words = words[:-1]
                    line = line.rstrip().rstrip("&").rstrip()
                is_sb = words[0] == "spikebridge"
                long = amp or (is_sb and len(words) > 1 and words[1] in LONG
                               and not any(w.split("=")[0] in BOUNDS for w in words))
                bounded_run = is_sb and len(words) > 1 and words[1] == "run" and not long
                if long or bounded_run:
                    proc = subprocess.Popen(line, shell=True, cwd=self.root, env=self.env(),
                                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                            text=True, start_new_session=True,
                                            executable="/bin/bash")
                    background.append((original, proc))
                    if is_sb and words[1] == "run":
                        _wait_running(proc, timeout)
                    else:
                        time.sleep(0.5)
                elif is_sb and not SHELL_CHARS & set(line.replace("&&", "")):
                    outcomes.append(self._in_process(original, words[1:]))
                else:
                    done = subprocess.run(line, shell=True, cwd=self.root, env=self.env(),
                                          capture_output=True, text=True, timeout=timeout,
                                          executable="/bin/bash")
                    outcomes.append(Outcome(original, done.returncode,
                                            done.stdout + done.stderr))
            time.sleep(grace)
        finally:
            for original, proc in reversed(background):
                outcomes.append(_stop(original, proc, timeout))
        return outcomes

    def _in_process(self, original: str, argv: list[str]) -> Outcome:
        out = io.StringIO()
        here = os.getcwd()
        os.chdir(self.root)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
                try:
                    code: int | None = cli_main(argv)
                except SystemExit as exc:
                    code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None
                                                                       else 2)
        finally:
            os.chdir(here)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
        return Outcome(original, code, out.getvalue())


def _wait_running(proc: subprocess.Popen[str], timeout: float) -> None:
    """Block until ``spikebridge run`` logs that it runs, exits, or ``timeout`` passes."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    os.set_blocking(fd, False)
    seen = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and b"running (" not in seen:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                chunk = None
            if chunk:
                seen += chunk
            elif chunk == b"" or proc.poll() is not None:
                break
            else:
                time.sleep(0.05)
    finally:
        os.set_blocking(fd, True)
    proc.early = seen.decode(errors="replace")  # type: ignore[attr-defined]


def _stop(original: str, proc: subprocess.Popen[str], timeout: float) -> Outcome:
    """SIGINT a background line (unless it ended), then its exit code and output."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)
    try:
        rest, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        rest, _ = proc.communicate()
        return Outcome(original, None, "did not stop on SIGINT\n" + (rest or ""))
    return Outcome(original, proc.returncode, getattr(proc, "early", "") + (rest or ""))
