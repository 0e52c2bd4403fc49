"""Random argument lists and random config files for every command: the exit code is 0, 1 or
2 and stderr never holds a traceback.

Each command line runs as its own process in a scratch directory, forked from a server that
has imported the command modules once (tests/cli_forkserver.py: ``bridge.cli.main`` as the
console script runs it, an escaping exception printed as a traceback), with a time limit: a
command that is still running then (a daemon, a listener, a benchmark) is stopped with
SIGTERM and must still exit 0, 1 or 2 without a traceback. The words are drawn
from each command's own ``--help`` (options and choices), numbers that break parsers (nan,
inf, negative, huge), files (random TOML configs, random bytes, a PNG, a recording, a CSV,
missing paths) and endpoint URLs. Network safety: every URL and address is drawn from a fixed
list whose hosts are all 127.0.0.1, and free text never holds ':' or '/', so no random word
can become an address; datagrams sent to the listed ports land in sockets this test holds.

The default run tries 8 lines per command; ``-m slow`` runs 400 * SPIKEBRIDGE_SLOW_BUDGET per
command.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, event, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from bridge.cli import COMMANDS  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TIME_LIMIT_S = 2.5
TRACEBACK = "Traceback (most recent call last)"


def budget() -> float:
    """The slow-test scale factor: 1.0 runs the full figures, CI sets a small one."""
    return float(os.environ.get("SPIKEBRIDGE_SLOW_BUDGET", "1.0"))


def _help_words(command: str) -> list[str]:
    """Options and choices that ``spikebridge COMMAND --help`` names."""
    res = subprocess.run([sys.executable, "-m", "bridge", command, "--help"],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    text = res.stdout + res.stderr
    words = set(re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", text))
    for group in re.findall(r"\{([\w,.-]+)\}", text):
        words.update(group.split(","))
    if command == "bench":  # "  relay    UDP relay ..." lines name the benchmarks
        words.update(re.findall(r"^  ([a-z]+)\s{2,}", text, re.M))
    return sorted(words)


@pytest.fixture(scope="module")
def words() -> dict[str, list[str]]:
    found = {name: _help_words(name) for name in COMMANDS}
    bench = subprocess.run([sys.executable, "-m", "bridge", "bench", "--help"],
                           capture_output=True, text=True, timeout=60, cwd=ROOT).stdout
    BENCHMARKS[:] = re.findall(r"^  ([a-z]+)\s{2,}", bench, re.M)
    assert BENCHMARKS, bench
    return found


@pytest.fixture(scope="module")
def sinks() -> Iterator[list[int]]:
    """Loopback UDP ports this test holds: sends go here, binds to them are refused."""
    socks = []
    for _ in range(2):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
        socks.append(s)
    yield [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with the fixed files the random words may name."""
    d = tmp_path_factory.mktemp("fuzzcli")
    (d / "raster.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 64)
    (d / "noise.bin").write_bytes(os.urandom(4096))
    (d / "spikes.csv").write_text("time_s,neuron\n0.001,1\n0.002,x\n")
    (d / "steps.py").write_text("def step(ids):\n    return ids\n\n"
                                "def bad(ids, now):\n    return ids\n\n"
                                "def boom(ids):\n    raise RuntimeError('boom')\n")
    from bridge.record.format import EndpointInfo, Header, encode_end, encode_spikes
    from bridge.record.sbrfile import SbrWriter

    w = SbrWriter(d / "rec.sbr", Header(
        (EndpointInfo("in0", "udp://127.0.0.1:9", "in", "native", 8),),
        start_wall_ns=0, start_mono_ns=0, run="fuzz"))
    w.write(encode_spikes(1000, 0, 3, 0, 0, __import__("numpy").array([1, 2], dtype="uint32")))
    w.write(encode_end(2000, 1, 0, 0, 0))
    w.close()
    return d


NUMBERS = ["0", "1", "-1", "2", "0.5", "1e9", "1e-9", "nan", "inf", "-inf", "4294967296",
           "-0", "65536", "0x10", ""]
FILES = ["raster.png", "noise.bin", "spikes.csv", "rec.sbr", "steps.py", "missing.toml",
         "out.sbr", "out.csv", "out.npz", "out.png", "out.xyz", ".", "cfg.toml"]
PROCESSORS = ["relay", "relay:x", "python:steps.py:step", "python:steps.py:bad",
              "python:steps.py:boom", "python:steps.py:nope", "python:missing.py:step",
              "python:nosuchmodule:f", "brian2:missing.py", "nir:missing.nir", "python:"]
FORMATS = ["native", "legacy", "eieio", "spif", "board", "edvs", "nope"]
KEYS = ["neurons", "offset", "format", "name", "source", "allow", "mtu", "key", "colour"]
TEXT = st.text(alphabet=st.characters(blacklist_characters=":/\\\x00",
                                      blacklist_categories=("Cs",)), max_size=12)


def urls(ports: list[int]) -> st.SearchStrategy[str]:
    """Endpoint URLs, every host 127.0.0.1; query values free text without ':' or '/'."""
    base = st.sampled_from(
        [f"udp://127.0.0.1:{p}" for p in ports] + ["udp://127.0.0.1:0", "loop://fuzz",
                                                   "file:rec.sbr", "file:out.sbr",
                                                   "serial:loop://", "serial:/dev/nonexistent",
                                                   "udp://127.0.0.1:99999", "tcp://127.0.0.1:1"])
    query = st.lists(st.tuples(st.sampled_from(KEYS),
                               st.one_of(st.sampled_from(NUMBERS + FORMATS), TEXT)), max_size=3)
    return st.builds(lambda b, q: b + ("?" + "&".join(f"{k}={v}" for k, v in q) if q else ""),
                     base, query)


def toml_value(ports: list[int]) -> st.SearchStrategy[str]:
    scalar = st.one_of(
        st.integers(-2**40, 2**40).map(str),
        st.sampled_from(["nan", "inf", "-inf", "0.0", "1.5", "1e-9", "true", "false"]),
        st.sampled_from(PROCESSORS + FORMATS + ["catch-up", "skip", "stop", "stepped",
                                                "relay", "127.0.0.1:0", ":0"]).map(repr),
        urls(ports).map(repr), TEXT.map(repr))
    return st.one_of(scalar, st.lists(scalar, max_size=3).map(lambda v: "[" + ", ".join(v) + "]"))


SECTIONS = {
    "bridge": ["node", "mode", "processor", "dt_ms", "policy", "spin_us", "miss_us", "duration_s",
               "repetitions", "queue_frames", "max_age_ms", "on_error", "colour"],
    "processor.params": ["n", "weight", "tau_ms"],
    "metrics": ["listen"], "watchdog": ["stall_ms", "max_misses", "window_s"],
    "realtime": ["priority", "cpus", "mlock", "gc_freeze", "required", "switch_interval_us"],
    "record": ["path", "endpoints", "rotate_mb"], "brian2": ["target", "cache_dir"],
    "nope": ["x"],
}


def configs(ports: list[int]) -> st.SearchStrategy[bytes]:
    """TOML made of real sections and keys with hostile values, or plain random bytes."""

    def render(draw_tables: list[tuple[str, list[tuple[str, str]]]], inputs: list[str],
               outputs: list[str]) -> bytes:
        lines = []
        for name, items in draw_tables:
            lines.append(f"[{name}]")
            lines += [f"{k} = {v}" for k, v in items]
        for kind, items in (("input", inputs), ("output", outputs)):
            for url in items:
                lines += [f"[[{kind}]]", f"url = {url!r}"]
        return ("\n".join(lines) + "\n").encode()

    tables = st.lists(st.sampled_from(sorted(SECTIONS)).flatmap(
        lambda name: st.tuples(st.just(name), st.lists(
            st.tuples(st.sampled_from(SECTIONS[name]), toml_value(ports)), max_size=4))),
        max_size=4, unique_by=lambda t: t[0])
    text = st.builds(render, tables, st.lists(urls(ports), max_size=2),
                     st.lists(urls(ports), max_size=2))
    return st.one_of(text, text, text, st.binary(max_size=200))


def argument_lists(words: dict[str, list[str]], ports: list[int],
                   name: str) -> st.SearchStrategy[tuple[str, list[str], bytes]]:
    """Command lines for command ``name``: its own words mixed with hostile ones."""
    word = st.one_of(
        st.sampled_from(words[name] or ["--help"]), st.sampled_from(words[name] or ["-h"]),
        st.sampled_from(NUMBERS), st.sampled_from(FILES), st.sampled_from(PROCESSORS),
        urls(ports), st.sampled_from([f"127.0.0.1:{p}" for p in ports]
                                     + ["http://127.0.0.1:1/metrics", "127.0.0.1:0"]),
        TEXT)
    args = st.lists(word, max_size=7)
    shaped = _shaped(name, ports, word)
    if shaped is not None:  # half of the lines have the command's own shape, with bad values
        args = st.one_of(args, shaped)
    if name == "bench":
        args = args.map(_no_benchmark_run)
    return st.tuples(st.just(name), args, configs(ports))


def _shaped(name: str, ports: list[int],
            word: st.SearchStrategy[str]) -> st.SearchStrategy[list[str]] | None:
    """Argument lists in the shape the command expects (positionals first, then options)."""
    url = urls(ports)
    num = st.one_of(st.sampled_from(NUMBERS), st.floats(allow_nan=True).map(repr))
    cfg = st.sampled_from(["cfg.toml", "cfg.toml", "raster.png", "missing.toml"])
    extra = st.lists(word, max_size=2)
    shapes: dict[str, list[st.SearchStrategy[list[str]]]] = {
        "check": [st.tuples(cfg).map(list)],
        "prebuild": [st.tuples(cfg).map(list)],
        "run": [st.tuples(cfg).map(list),
                st.tuples(st.just("--in"), url, st.just("--out"), url, st.just("--dt"), num,
                          st.just("--processor"), st.sampled_from(PROCESSORS),
                          st.just("--duration"), st.sampled_from(["0.2", "0.5", "nan", "-1"]))
                .map(list)],
        "top": [st.tuples(st.one_of(cfg, url), st.just("--iterations"), st.just("1"),
                          st.just("--interval"), num).map(list)],
        "send": [st.tuples(url, st.just("--ids"), st.sampled_from(
            ["1,7", "0-3", "", "x", "4294967296", "9-1"]), st.just("--count"),
            st.sampled_from(["1", "3", "-1"]), st.just("--node"), num).map(list)],
        "listen": [st.tuples(url, st.just("--timeout"), st.sampled_from(["0.2", "nan", "-1"]),
                             st.just("--count"), st.just("1")).map(list)],
        "record": [st.tuples(url, st.sampled_from(["out.sbr", "rec.sbr", "out.csv"]),
                             st.just("--duration"), st.sampled_from(["0.3", "nan", "inf"]),
                             st.just("--rotate-mb"), num).map(list)],
        "replay": [st.tuples(st.sampled_from(["rec.sbr", "raster.png", "missing.sbr"]), url,
                             st.just("--speed"), num).map(list)],
        "plot": [st.tuples(st.sampled_from(["rec.sbr", "raster.png", "spikes.csv"]),
                           st.just("-o"), st.sampled_from(["out.png", "out.xyz", "out"]),
                           st.just("--bin-ms"), num, st.just("--start"), num).map(list)],
        "convert": [st.tuples(st.sampled_from(["rec.sbr", "spikes.csv", "raster.png",
                                               "noise.bin", "missing.npz"]),
                              st.sampled_from(["out.sbr", "out.csv", "out.npz", "out.xyz"]),
                              st.just("--dt-ms"), num).map(list)],
        "demo": [st.tuples(st.just("--seconds"), st.sampled_from(["0.5", "nan", "-1"]),
                           st.just("--dt"), num, st.just("--metrics"),
                           st.sampled_from(["", "127.0.0.1:0", "nan"])).map(list)],
        "emulate": [st.tuples(st.sampled_from(["edvs", "board", "nope"]),
                              st.just("--duration"), st.sampled_from(["0.3", "nan", "-1"]),
                              st.just("--rate"), num).map(list)],
    }
    if name not in shapes:
        return None
    return st.tuples(st.one_of(shapes[name]), extra).map(lambda t: [*t[0], *t[1]])


BENCHMARKS: list[str] = []


def _no_benchmark_run(args: list[str]) -> list[str]:
    """``bench NAME ...`` only with --help: a benchmark runs for minutes, and ``bench fuzz``
    adds what it finds to the repository's corpus."""
    if args and args[0] in BENCHMARKS and not {"-h", "--help"} & set(args):
        return [*args, "--help"]
    return args


def _env(cwd: Path) -> dict[str, str]:
    env = {**os.environ, "HOME": str(cwd), "XDG_CACHE_HOME": str(cwd / "cache"),
           "PYTHONPATH": str(ROOT)}
    env.pop("NOTIFY_SOCKET", None)
    env.pop("WATCHDOG_USEC", None)
    return env


class ForkServer:
    """tests/cli_forkserver.py in a subprocess: ``run(cwd, command, args)`` like run_line."""

    def __init__(self, cwd: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("cli_forkserver.py"))], cwd=cwd,
            env=_env(cwd), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            start_new_session=True)
        assert self.proc.stdout is not None
        assert json.loads(self.proc.stdout.readline()) == {"ready": True}

    def run(self, cwd: Path, command: str, args: list[str]) -> tuple[int, str, bool]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"args": [command, *args], "cwd": str(cwd),
                                          "limit": TIME_LIMIT_S}) + "\n")
        self.proc.stdin.flush()
        reply = json.loads(self.proc.stdout.readline())
        return int(reply["code"]), str(reply["stderr"]), bool(reply["stopped"])

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@pytest.fixture(scope="module")
def server(scratch: Path) -> Iterator[ForkServer]:
    fs = ForkServer(scratch)
    yield fs
    fs.close()


def run_line(cwd: Path, command: str, args: list[str]) -> tuple[int, str, bool]:
    """Run ``python -m bridge COMMAND ARGS`` in ``cwd``: (exit code, stderr, stopped by us)."""
    proc = subprocess.Popen([sys.executable, "-m", "bridge", command, *args], cwd=cwd,
                            env=_env(cwd),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    stopped = False
    try:
        _, err = proc.communicate(timeout=TIME_LIMIT_S)
    except subprocess.TimeoutExpired:
        stopped = True
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            _, err = proc.communicate()
            return -signal.SIGKILL, err.decode("utf-8", "replace"), True
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode, err.decode("utf-8", "replace"), stopped


def check_line(server: ForkServer, scratch: Path, line: tuple[str, list[str], bytes]) -> None:
    command, args, config = line
    (scratch / "cfg.toml").write_bytes(config)
    for made in ("out.sbr", "out.csv", "out.npz", "out.png", "out.xyz"):
        (scratch / made).unlink(missing_ok=True)
    code, err, stopped = server.run(scratch, command, args)
    event(f"exit {code}{' (stopped)' if stopped else ''}")
    log = os.environ.get("SPIKEBRIDGE_FUZZ_LOG")  # one line per command line tried
    if log:
        with open(log, "a") as fh:
            fh.write(f"{code}{'s' if stopped else ''}\t{command}\t{args!r}\t{err[-160:]!r}\n")
    shown = f"spikebridge {command} {' '.join(args)!s}\nconfig: {config[:300]!r}\n{err[-3000:]}"
    assert TRACEBACK not in err, shown
    if stopped:
        # Stopped by our SIGTERM: a clean stop (0, or 1/2 for what it found meanwhile), or
        # the signal itself for a command that leaves SIGTERM at its default.
        assert code in (0, 1, 2, -signal.SIGTERM), shown
    else:
        assert code in (0, 1, 2), shown


SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                      HealthCheck.function_scoped_fixture,
                                                      HealthCheck.data_too_large])


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_random_command_lines_exit_0_1_or_2_without_a_traceback(
        command: str, words: dict[str, list[str]], sinks: list[int], scratch: Path,
        server: ForkServer) -> None:
    @settings(max_examples=8, **SETTINGS)  # type: ignore[arg-type]
    @given(argument_lists(words, sinks, command))
    def one(line: tuple[str, list[str], bytes]) -> None:
        check_line(server, scratch, line)

    one()


@pytest.mark.slow
@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.timeout(max(120, int(400 * budget() * (TIME_LIMIT_S + 1))))
def test_random_command_lines_long_run(command: str, words: dict[str, list[str]],
                                       sinks: list[int], scratch: Path,
                                       server: ForkServer) -> None:
    @settings(max_examples=max(1, int(400 * budget())), **SETTINGS)  # type: ignore[arg-type]
    @given(argument_lists(words, sinks, command))
    def one(line: tuple[str, list[str], bytes]) -> None:
        check_line(server, scratch, line)

    one()


@pytest.mark.parametrize(("command", "config"), [
    ("check", b"[bridge]\ndt_ms = nan\n"), ("run", b"[bridge]\ndt_ms = inf\n"),
    ("prebuild", b"\x89PNG\r\n\x1a\n\0\0"), ("top", b"[bridge]\nnode = \"\xff\"\n")])
def test_lines_that_gave_tracebacks_before(tmp_path: Path, command: str, config: bytes) -> None:
    """Lines the random search is meant to find: each printed a traceback before this check."""
    (tmp_path / "cfg.toml").write_bytes(config)
    code, err, stopped = run_line(tmp_path, command, ["cfg.toml"])
    assert (code, stopped) == (2, False) and TRACEBACK not in err, err
