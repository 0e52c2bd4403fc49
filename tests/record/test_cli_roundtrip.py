"""record -> replay -> listen over UDP on 127.0.0.1, as three real processes; argument errors."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bridge.codecs.native import NativeCodec
from bridge.frame import SpikeFrame
from bridge.record import player_cli, recorder_cli
from bridge.record.sbrfile import SbrReader

N = 40


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def cli(*args: str, **kw: object) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "bridge", *args],  # type: ignore[call-overload]
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def frame_ids(i: int) -> list[int]:
    return sorted({i, (7 * i) % 100, 99 - i % 50, 1000 + i})


@pytest.mark.integration
def test_record_replay_listen_keeps_ids_and_order(tmp_path: Path) -> None:
    rec_port, out_port = free_port(), free_port()
    path = tmp_path / "run.sbr"
    recorder = cli("record", f"udp://127.0.0.1:{rec_port}?format=native", str(path),
                   "--count", str(N), "--duration", "60")
    try:
        deadline = time.monotonic() + 30
        while not path.exists():  # the file appears once the endpoint is bound
            assert recorder.poll() is None, recorder.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.01)
        codec = NativeCodec(0)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            for i in range(N):
                frame = SpikeFrame.of(frame_ids(i), source=5, seq=i, t_sent_ns=time.time_ns())
                for d in codec.encode(frame):
                    tx.sendto(d, ("127.0.0.1", rec_port))
                time.sleep(0.002)
        out, err = recorder.communicate(timeout=60)
    finally:
        recorder.kill()
    assert recorder.returncode == 0, err
    # Piped: no progress line on stderr, and the one summary line on stdout.
    spikes = sum(len(frame_ids(i)) for i in range(N))
    assert err == b"" and re.fullmatch(
        rf"{re.escape(str(path))}: {N} frames, {spikes} spikes in [0-9.]+ s, 0 dropped\n",
        out.decode())
    recorded = list(SbrReader(path).spikes())
    assert [r.frame.ids.tolist() for r in recorded] == [frame_ids(i) for i in range(N)]

    listener = cli("listen", f"udp://127.0.0.1:{out_port}?format=native", "--json",
                   "--count", str(N), "--duration", "60")
    try:
        assert listener.stderr is not None
        assert b"listening on" in listener.stderr.readline()
        replay = subprocess.run(
            [sys.executable, "-m", "bridge", "replay", str(path),
             f"udp://127.0.0.1:{out_port}?format=native"],
            capture_output=True, timeout=60,
        )
        assert replay.returncode == 0, replay.stderr
        assert replay.stdout == b"" and replay.stderr == b""
        out, _ = listener.communicate(timeout=60)
    finally:
        listener.kill()
    got = [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")]
    assert [g["ids"] for g in got] == [frame_ids(i) for i in range(N)]
    assert [g["seq"] for g in got] == list(range(N))
    assert {g["source"] for g in got} == {5}
    # The replay kept the recorded spacing: the span of the sends matches the recording's.
    sent = np.array([g["t_sent_ns"] for g in got])
    rec_t = np.array([r.t_ns for r in recorded])
    assert abs((sent[-1] - sent[0]) - (rec_t[-1] - rec_t[0])) < 50_000_000


def test_record_refuses_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "x.sbr"
    path.write_bytes(b"")
    assert recorder_cli.main(["udp://127.0.0.1:0", str(path)]) == 2


@pytest.mark.parametrize("argv", [
    ["udp://127.0.0.1:0?bogus=1", "{dir}/a.sbr"],
    ["udp://127.0.0.1:0", "{dir}/a.sbr", "--duration", "-1"],
])
def test_record_bad_arguments(tmp_path: Path, argv: list[str]) -> None:
    assert recorder_cli.main([a.format(dir=tmp_path) for a in argv]) == 2


def test_replay_argument_errors(tmp_path: Path, sample_sbr: Path) -> None:
    url = f"udp://127.0.0.1:{free_port()}"
    assert player_cli.main([str(sample_sbr)]) == 2
    assert player_cli.main([str(tmp_path / "none.sbr"), url]) == 2
    assert player_cli.main([str(sample_sbr), url, "--endpoint", "nope"]) == 2
    assert player_cli.main([str(sample_sbr), url, "--speed", "0"]) == 2
    assert player_cli.main([str(sample_sbr), "udp://127.0.0.1:1?bogus=1"]) == 2


@pytest.mark.integration
def test_replay_selects_and_warns_about_a_cut_file(tmp_path: Path, sample_sbr: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    cut = tmp_path / "cut.sbr"
    cut.write_bytes(sample_sbr.read_bytes()[:-40])
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx:
        rx.bind(("127.0.0.1", port))
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        code = player_cli.main([str(cut), f"udp://127.0.0.1:{port}?format=native",
                                "--ignore-timing", "--endpoint", "in1", "--skip", "1.99"])
        assert code == 0
        rx.settimeout(5)
        codec = NativeCodec(0)
        seqs = []
        rx.setblocking(False)
        while True:
            try:
                seqs.append(codec.decode(rx.recv(65536)).seq)
            except BlockingIOError:
                break
    # in1's frames from 1.99 s on: seq 1990..1999 (the cut removed only the end record).
    assert seqs == list(range(1990, 2000))
    assert "cut off" in capsys.readouterr().err
