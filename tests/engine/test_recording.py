"""The daemon records what it receives and sends ([record]), and the file is complete on SIGTERM."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import pytest

from bridge.codecs.native import NativeCodec
from bridge.config import build_config
from bridge.errors import ConfigError
from bridge.frame import SpikeFrame
from bridge.record.sbrfile import load_table
from bridge.testing import UdpPeer, free_udp_port, wait_for


def test_record_names_must_exist() -> None:
    with pytest.raises(ConfigError, match="no endpoint is named 'nope'"):
        build_config({"input": ["udp://127.0.0.1:1?neurons=4"],
                      "record": {"path": "/tmp/x.sbr", "endpoints": ["nope"]}})


def test_daemon_records_inputs_and_outputs(daemon: Any, tmp_path: Path) -> None:
    pin = free_udp_port()
    rx = UdpPeer()
    tx = UdpPeer()
    sbr = tmp_path / "run.sbr"
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'[[input]]\nurl = "udp://127.0.0.1:{pin}?format=native&neurons=16"\nname = "sim"\n'
        f'[[output]]\nurl = "udp://127.0.0.1:{rx.port}?format=native&neurons=16"\n'
        f'name = "board"\n[record]\npath = "{sbr}"\n'
    )
    d = daemon(str(cfg))
    codec = NativeCodec(16)
    sent = [[1, 2], [3], [15, 0]]

    def probe() -> bool:
        tx.send(pin, codec.encode(SpikeFrame.of([], source=5, seq=0,
                                                t_sent_ns=time.time_ns()))[0])
        return rx.recv(0.1) is not None

    assert wait_for(probe, timeout=10)  # the daemon is up and relaying
    for i, ids in enumerate(sent, start=1):
        tx.send(pin, codec.encode(SpikeFrame.of(ids, source=5, seq=i,
                                                t_sent_ns=time.time_ns()))[0])
    got = [codec.decode(x).ids.tolist() for x in rx.recv_all()]
    assert got[-3:] == sent
    assert d.stop(signal.SIGTERM) == 0
    table = load_table([sbr])
    names = [e.name for e in table.header.endpoints]
    assert names == ["sim", "board"]
    assert all(r.complete and not r.problems() for r in table.reports), table.reports
    for slot in (0, 1):
        rows = table.endpoint == slot
        frames = sorted(set(table.frame[rows].tolist()))
        per_frame = [table.ids[rows & (table.frame == f)].tolist() for f in frames]
        assert per_frame[-3:] == sent
    rx.close()
    tx.close()


def test_recording_counters_are_exported(run_bridge: Any, peers: Any, tmp_path: Path) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from bridge.service import metrics

    tx, rx = peers(), peers()
    rb = run_bridge({"input": ["udp://127.0.0.1:0?format=native&neurons=8"],
                     "output": [f"udp://127.0.0.1:{rx.port}?format=native&neurons=8"],
                     "record": {"path": str(tmp_path / "r.sbr")}})
    tx.send(rb.in_port(), NativeCodec(8).encode(SpikeFrame.of([1], seq=0, t_sent_ns=1))[0])
    assert rx.recv_all()
    rb.stop()  # close() writes what is queued
    registry = CollectorRegistry()
    metrics.register(rb.bridge.stats, registry)
    text = generate_latest(registry).decode()
    assert "spikebridge_record_frames_total 2.0" in text  # the input frame and the output frame
    assert 'spikebridge_record_dropped_frames_total{reason="overflow"} 0.0' in text
    assert "spikebridge_record_paused 0.0" in text
