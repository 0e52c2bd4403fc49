"""The Brian2 processor inside the daemon: UDP in, one Brian step per dt, UDP out, SIGTERM.

The test network stamps every output frame with its Brian time-step number, so the step in
which an input fired is read from the wire rather than guessed from timing.
"""

from __future__ import annotations

import json
import signal
import socket
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bridge.codecs.native import NativeCodec
from bridge.frame import SpikeFrame
from bridge.testing import free_udp_port, wait_for

pytest.importorskip("brian2")

NETS = Path(__file__).parent / "nets"
N_IN = 16
STAMP_BITS = 16
N_OUT = N_IN + STAMP_BITS + 1
DT_MS = 50.0  # long, so that "sent right after step s's output" always lands before s+1


def stamp_of(ids: np.ndarray) -> int:
    bits = ids[(ids >= N_IN) & (ids < N_IN + STAMP_BITS)] - N_IN
    return int(sum(1 << int(b) for b in bits))


class Peer:
    """Sends input frames to the daemon and reads its stamped output frames."""

    def __init__(self, port: int) -> None:
        self.rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rx.bind(("127.0.0.1", port))
        self.tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.out_codec = NativeCodec(N_OUT)
        self.in_codec = NativeCodec(N_IN)
        self.seq = 0

    def next_frame(self, timeout: float = 10.0) -> tuple[int, list[int]]:
        """The next output frame: (its step number, the input ids it echoes)."""
        self.rx.settimeout(timeout)
        frame = self.out_codec.decode(self.rx.recv(65536))
        assert N_OUT - 1 in frame.ids  # the every-step stamp neuron
        return stamp_of(frame.ids), sorted(int(i) for i in frame.ids if i < N_IN)

    def newest_frame(self) -> tuple[int, list[int]]:
        """Skip what is queued; wait for the frame of the step that runs next."""
        self.rx.setblocking(False)
        try:
            while True:
                self.rx.recv(65536)
        except BlockingIOError:
            pass
        return self.next_frame()

    def send(self, port: int, ids: list[int]) -> None:
        frame = SpikeFrame.of(ids, source=9, seq=self.seq)
        self.seq += 1
        for datagram in self.in_codec.encode(frame):
            self.tx.sendto(datagram, ("127.0.0.1", port))

    def close(self) -> None:
        self.rx.close()
        self.tx.close()


@pytest.mark.integration
def test_udp_spikes_fire_in_the_next_step_and_come_back(tmp_path: Path, daemon: Any) -> None:
    pin, pout = free_udp_port(), free_udp_port()
    report = tmp_path / "runs.jsonl"
    config = tmp_path / "stamped.toml"
    config.write_text(
        "[bridge]\n"
        f'processor = "brian2:{NETS / "stamped.py"}"\n'
        f"dt_ms = {DT_MS}\n"
        "[[input]]\n"
        f'url = "udp://127.0.0.1:{pin}?format=native&neurons={N_IN}"\n'
        "[[output]]\n"
        f'url = "udp://127.0.0.1:{pout}?format=native&neurons={N_OUT}"\n'
        "[processor.params]\n"
        f'report = "{report}"\n'
        "[brian2]\n"
        'target = "numpy"\n'
    )
    peer = Peer(pout)
    try:
        d = daemon(str(config))
        first, _ = peer.next_frame(timeout=60)  # start-up (Brian import, build) included
        later, _ = peer.next_frame()
        assert later == first + 1  # one frame per step, stamped with consecutive steps
        for trial in range(4):
            step, echoed = peer.newest_frame()
            assert echoed == []
            sent = [trial, trial + 5, 15]
            peer.send(pin, sent)  # arrives before the deadline of Brian step step + 1
            got_step, got = peer.next_frame()
            assert (got_step, got) == (step + 1, sent)
            assert peer.next_frame()[1] == []  # an input spike fires once
        last_step = peer.newest_frame()[0]
        assert d.stop(signal.SIGTERM) == 0, d.output
    finally:
        peer.close()
    assert wait_for(report.exists, timeout=5), d.output
    runs = [json.loads(line) for line in report.read_text().splitlines()]
    assert len(runs) == 1 and runs[0]["repetition"] == 0  # the hook ran once, on SIGTERM
    assert runs[0]["steps"] >= last_step + 1
    assert runs[0]["t_end"] == pytest.approx(runs[0]["steps"] * DT_MS / 1000)


@pytest.mark.integration
def test_repetitions_run_duration_over_dt_steps_each_then_exit(tmp_path: Path) -> None:
    import subprocess

    from bridge.testing import spikebridge_cmd

    report = tmp_path / "runs.jsonl"
    config = tmp_path / "reps.toml"
    config.write_text(
        "[bridge]\n"
        f'processor = "brian2:{NETS / "stamped.py"}"\n'
        "dt_ms = 10.0\nduration_s = 0.3\nrepetitions = 2\n"
        "[[input]]\n"
        f'url = "udp://127.0.0.1:{free_udp_port()}?format=native&neurons={N_IN}"\n'
        "[processor.params]\n"
        f'report = "{report}"\n'
        "[brian2]\n"
        'target = "numpy"\n'
    )
    done = subprocess.run(spikebridge_cmd("run", str(config)), capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    runs = [json.loads(line) for line in report.read_text().splitlines()]
    assert [r["repetition"] for r in runs] == [0, 1]  # the hook after each run, not again
    assert [r["steps"] for r in runs] == [30, 30]
    assert runs[1]["t_end"] == pytest.approx(0.6)  # Brian time continues across runs
