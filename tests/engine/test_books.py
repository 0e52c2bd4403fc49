"""Every spike is in the books: unrouted ids, refused sends, the 32-bit id range.

Real UDP on 127.0.0.1; a peer that is down is a real closed loopback port.
"""

from __future__ import annotations

import logging
import socket
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bridge.codecs.legacy import LegacyCodec
from bridge.codecs.native import NativeCodec
from bridge.config import build_config
from bridge.endpoints import endpoint_spec
from bridge.engine.loop import PEER_DOWN_HOLD_NS, Bridge
from bridge.engine.router import Span, count_unrouted, routed_mask, uncovered
from bridge.errors import REASON_INDEX, ConfigError
from bridge.frame import SpikeFrame
from bridge.testing import RunningBridge, free_udp_port, wait_for

UNROUTED = REASON_INDEX["unrouted"]
PEER_UNREACHABLE = REASON_INDEX["peer_unreachable"]
SEND_FAILED = REASON_INDEX["send_failed"]


def legacy(ids: list[int], neurons: int = 10) -> bytes:
    return LegacyCodec(neurons).encode(SpikeFrame.of(ids, source=1))[0]


def native(ids: list[int], seq: int, neurons: int) -> bytes:
    return NativeCodec(neurons).encode(
        SpikeFrame.of(ids, source=7, seq=seq, t_sent_ns=time.time_ns()))[0]


def books(st: Any) -> bool:
    return bool(st.frames == st.accepted + sum(st.drops))


def closed_udp_port() -> int:
    """A loopback UDP port nobody listens on (bound, then released)."""
    return free_udp_port()


# -- routing arithmetic ---------------------------------------------------------------------


@pytest.mark.parametrize(("span", "covers", "gaps"), [
    (Span(10, 20), [Span(0, 10)], [Span(10, 20)]),
    (Span(0, 20), [Span(0, 20)], []),
    (Span(0, 20), [Span(5, 8), Span(12, 30)], [Span(0, 5), Span(8, 12)]),
    (Span(0, 20), [Span(12, 30), Span(0, 5), Span(3, 8)], [Span(8, 12)]),
    (Span(5, 10), [], [Span(5, 10)]),
    (Span(0, 0), [Span(0, 4)], []),
])
def test_uncovered_ranges(span: Span, covers: list[Span], gaps: list[Span]) -> None:
    assert uncovered(span, covers) == gaps


def test_count_unrouted_with_a_mask() -> None:
    mask = routed_mask(Span(0, 10), [Span(3, 5)])
    assert mask.tolist() == [True] * 3 + [False] * 2 + [True] * 5
    ids = np.array([0, 3, 4, 4, 9], dtype=np.uint32)
    assert count_unrouted(ids, mask) == 3
    assert count_unrouted(np.array([], dtype=np.uint32), mask) == 0
    assert count_unrouted(np.array([2, 12], dtype=np.uint32), mask) == 1  # beyond: unrouted


# -- unrouted, per input --------------------------------------------------------------------


def test_an_input_that_reaches_no_output_is_counted_and_warned(
        run_bridge: Any, peers: Any, caplog: pytest.LogCaptureFixture) -> None:
    """The issue's case: offset=10 input, a 10-neuron output: every frame is unrouted."""
    tx, rx = peers(), peers()
    with caplog.at_level(logging.WARNING, logger="spikebridge.loop"):
        rb = run_bridge({
            "input": ["udp://127.0.0.1:0?format=legacy&neurons=10&offset=10"],
            "output": [f"udp://127.0.0.1:{rx.port}?format=legacy&neurons=10"],
        })
    assert any("input in0 (merged ids 10..19) reaches no output" in r.getMessage()
               for r in caplog.records), caplog.text
    tx.send(rb.in_port(), legacy([1, 2, 3]))
    tx.send(rb.in_port(), legacy([4, 5, 6]))
    st = rb.bridge.stats.inputs[0]
    wait_for(lambda: st.frames == 2)
    assert rx.recv_all(quiet=0.2) == []
    rb.stop()
    assert st.drops[UNROUTED] == 2 and st.accepted == 0 and books(st)
    assert st.spikes == 6 and st.unrouted == 6  # accepted spikes = routed (0) + unrouted (6)


def test_a_partly_routed_input_counts_the_spikes_outside_every_slice(
        run_bridge: Any, peers: Any, caplog: pytest.LogCaptureFixture) -> None:
    tx, rx = peers(), peers()
    with caplog.at_level(logging.WARNING, logger="spikebridge.loop"):
        rb = run_bridge({
            "input": ["udp://127.0.0.1:0?format=native&neurons=20"],
            "output": [f"udp://127.0.0.1:{rx.port}?format=native&neurons=5&offset=5"],
        })
    assert any("input in0: ids 0..4, 10..19 (merged ids 0..4, 10..19) reach no output"
               in r.getMessage() for r in caplog.records), caplog.text
    tx.send(rb.in_port(), native([1, 5, 9, 12, 19], seq=0, neurons=20))
    got = [NativeCodec(5).decode(d).ids.tolist() for d in rx.recv_all()]
    rb.stop()
    st = rb.bridge.stats.inputs[0]
    assert got == [[0, 4]]
    assert st.accepted == 1 and st.drops[UNROUTED] == 0 and books(st)
    assert st.spikes == 5 and st.unrouted == 3
    assert st.spikes - st.unrouted == rb.bridge.stats.outputs[0].spikes  # routed = sent here


def test_a_fully_routed_input_counts_nothing_unrouted(run_bridge: Any, peers: Any) -> None:
    tx, rx = peers(), peers()
    rb = run_bridge({
        "input": ["udp://127.0.0.1:0?format=native&neurons=20"],
        "output": [f"udp://127.0.0.1:{rx.port}?format=native&neurons=10",
                   f"udp://127.0.0.1:{rx.port}?format=native&neurons=10&offset=10"],
    })
    tx.send(rb.in_port(), native([1, 12], seq=0, neurons=20))
    assert len(rx.recv_all()) == 2
    rb.stop()
    st = rb.bridge.stats.inputs[0]
    assert st.unrouted == 0 and st.drops[UNROUTED] == 0 and st.accepted == 1
    assert not rb.bridge.inputs[0].partial


def test_stepped_relay_counts_unrouted_at_the_step(run_bridge: Any, peers: Any) -> None:
    tx, rx = peers(), peers()
    rb = run_bridge({
        "bridge": {"mode": "stepped", "dt_ms": 2},
        "input": ["udp://127.0.0.1:0?format=native&neurons=8",
                  "udp://127.0.0.1:0?format=native&neurons=8&offset=8"],
        "output": [f"udp://127.0.0.1:{rx.port}?format=native&neurons=12"],
    })
    tx.send(rb.in_port(0), native([0, 7], seq=0, neurons=8))
    tx.send(rb.in_port(1), native([1, 4, 6], seq=0, neurons=8))  # merged 9, 12, 14
    a, b = rb.bridge.stats.inputs
    wait_for(lambda: b.unrouted == 2)
    rb.stop()
    assert a.unrouted == 0 and b.unrouted == 2 and books(a) and books(b)


def test_processor_output_outside_every_slice_is_counted(
        run_bridge: Any, peers: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    mod = tmp_path / "double.py"
    mod.write_text(
        "import numpy as np\n"
        "def setup(inputs, params):\n    return inputs * 2\n"
        "def step(ids):\n    return np.concatenate([ids, ids + 8])\n"
    )
    tx, rx = peers(), peers()
    with caplog.at_level(logging.WARNING, logger="spikebridge.loop"):
        rb = run_bridge({"bridge": {"processor": f"python:{mod}:step"},
                         "input": ["udp://127.0.0.1:0?format=native&neurons=8"],
                         "output": [f"udp://127.0.0.1:{rx.port}?format=native&neurons=8"]})
    assert any("processor output ids 8..15 reach no output" in r.getMessage()
               for r in caplog.records), caplog.text
    tx.send(rb.in_port(), native([1, 3], seq=0, neurons=8))
    assert [NativeCodec(8).decode(d).ids.tolist() for d in rx.recv_all()] == [[1, 3]]
    rb.stop()
    assert rb.bridge.stats.processor_unrouted == 2
    assert rb.bridge.stats.inputs[0].unrouted == 0  # the input itself reached the processor


def test_the_run_summary_and_the_exit_show_unrouted_frames(tmp_path: Path) -> None:
    """``spikebridge run`` as a user runs it: the summary no longer says 0 dropped."""
    import subprocess
    import sys

    in_port, out_port = free_udp_port(), free_udp_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bridge", "run",
         "--in", f"udp://127.0.0.1:{in_port}?neurons=10&offset=10",
         "--out", f"udp://127.0.0.1:{out_port}?neurons=10", "--duration", "4"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # wait until it runs, however loaded the machine is
            lines.append(line)
            if "running (" in line:
                break
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for seq in range(2):
                s.sendto(native([0, 1], seq=seq, neurons=10), ("127.0.0.1", in_port))
        rest, _ = proc.communicate(timeout=60)
        out = "".join(lines) + rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out
    assert "reaches no output" in out
    assert "2 frames in, 0 out, 2 dropped, 4 spikes unrouted" in out, out


# -- the 32-bit id range ------------------------------------------------------------------------


@pytest.mark.parametrize("url", [
    "udp://127.0.0.1:0?neurons=10&offset=4294967295",
    "udp://127.0.0.1:0?neurons=4294967295&offset=2",
])
def test_ids_beyond_32_bits_are_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError, match="offset=") as err:
        endpoint_spec(url, "in")
    assert "beyond the 32-bit id range" in str(err.value)
    assert err.value.key is not None and err.value.key.endswith(": offset")


def test_the_top_of_the_id_range_is_allowed() -> None:
    spec = endpoint_spec("udp://127.0.0.1:0?neurons=10&offset=4294967286", "in")
    assert spec.offset + spec.neurons == 2**32


@pytest.mark.parametrize("command", ["check", "run"])
def test_check_and_run_refuse_an_offset_beyond_32_bits(command: str, tmp_path: Path) -> None:
    import subprocess
    import sys

    cfg = tmp_path / "bridge.toml"
    cfg.write_text('[[input]]\nurl = "udp://127.0.0.1:0"\nneurons = 10\noffset = 4294967295\n\n'
                   '[[output]]\nurl = "udp://127.0.0.1:9?neurons=10"\n')
    proc = subprocess.run([sys.executable, "-m", "bridge", command, str(cfg)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "offset=4294967295" in proc.stderr and "Traceback" not in proc.stderr


# -- a peer that is down ------------------------------------------------------------------------


def test_a_closed_peer_port_is_peer_unreachable_and_the_peer_reads_down(
        run_bridge: Any, peers: Any, caplog: pytest.LogCaptureFixture) -> None:
    tx = peers()
    dead = closed_udp_port()
    with caplog.at_level(logging.INFO, logger="spikebridge.loop"):
        rb = run_bridge({
            "input": ["udp://127.0.0.1:0?format=native&neurons=4"],
            "output": [f"udp://127.0.0.1:{dead}?format=native&neurons=4"],
        })
        out = rb.bridge.stats.outputs[0]
        for seq in range(20):
            tx.send(rb.in_port(), native([seq % 4], seq=seq, neurons=4))
            time.sleep(0.002)
        wait_for(lambda: rb.bridge.stats.inputs[0].accepted == 20)
        wait_for(lambda: out.peer_up == 0)
        assert any("the peer is not listening" in r.getMessage() for r in caplog.records)
        # Refused datagrams are their own reason, not a bridge fault.
        assert out.drops[PEER_UNREACHABLE] >= 5
        assert out.drops[SEND_FAILED] == 0 and out.up == 1
        # Every frame is either handed to the kernel or refused: the output's books.
        assert out.frames + out.drops[PEER_UNREACHABLE] == 20
        # The peer comes up on the same port: after the hold, with frames flowing, it reads up.
        back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        back.bind(("127.0.0.1", dead))
        try:
            refused = out.drops[PEER_UNREACHABLE]
            end = time.monotonic() + PEER_DOWN_HOLD_NS / 1e9 + 5
            seq = 20
            while out.peer_up == 0 and time.monotonic() < end:
                tx.send(rb.in_port(), native([1], seq=seq, neurons=4))
                seq += 1
                time.sleep(0.05)
            assert out.peer_up == 1
            assert out.drops[PEER_UNREACHABLE] <= refused + 1  # at most one stale refusal
            assert any("the peer accepts datagrams again" in r.getMessage()
                       for r in caplog.records)
        finally:
            back.close()
    rb.stop()


def test_peer_down_is_exported_apart_from_endpoint_up(peers: Any) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from bridge.service.metrics import register

    tx = peers()
    dead = closed_udp_port()
    cfg = build_config({
        "input": ["udp://127.0.0.1:0?format=native&neurons=4"],
        "output": [f"udp://127.0.0.1:{dead}?format=native&neurons=4&name=sink"],
    })
    rb = RunningBridge(cfg)
    try:
        reg = CollectorRegistry()
        register(rb.bridge.stats, reg, build={"version": "0"})
        for seq in range(6):
            tx.send(rb.in_port(), native([0], seq=seq, neurons=4))
            time.sleep(0.002)
        wait_for(lambda: rb.bridge.stats.outputs[0].peer_up == 0)
        text = generate_latest(reg).decode()
    finally:
        rb.stop()
    assert 'spikebridge_peer_up{endpoint="sink"} 0.0' in text
    assert 'spikebridge_endpoint_up{endpoint="sink"} 1.0' in text
    assert 'spikebridge_frames_dropped_total{endpoint="sink",reason="peer_unreachable"}' in text


def test_udp_send_to_a_closed_port_counts_a_refusal() -> None:
    from bridge.endpoints import open_endpoint

    ep = open_endpoint(endpoint_spec(f"udp://127.0.0.1:{closed_udp_port()}?neurons=4", "out"))
    try:
        assert ep.send(b"x") is True  # handed to the kernel; the ICMP answer comes back
        assert ep.refused == 0
        results = []
        deadline = time.monotonic() + 2
        while ep.refused == 0 and time.monotonic() < deadline:
            results.append(ep.send(b"x"))
            time.sleep(0.001)
        assert ep.refused >= 1 and results[-1] is False  # refused: False, and counted
        assert "refused" in ep.refusal.lower()
    finally:
        ep.close()


def test_the_plan_marks_an_input_that_reaches_no_output() -> None:
    """The routing plan is made at open: flags set, nothing counted before a frame comes."""
    cfg = build_config({"input": ["udp://127.0.0.1:0?neurons=4&offset=4"],
                        "output": ["udp://127.0.0.1:9?neurons=4"]})
    with Bridge(cfg) as br:
        br.open()
        assert br.inputs[0].nowhere and br.inputs[0].partial
        assert br.stats.inputs[0].unrouted == 0 and br.stats.inputs[0].dropped() == 0
