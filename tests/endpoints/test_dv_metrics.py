"""DV endpoints through the loop: their own counters and drops, as a scrape shows them."""

from __future__ import annotations

import re
import socket
import time

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from bridge.codecs import dvstream
from bridge.config import config_from_flags
from bridge.endpoints import endpoint_spec, make_codec
from bridge.engine.stats import BridgeStats
from bridge.frame import SpikeFrame
from bridge.service.metrics import register
from bridge.service.metrics_process import restore, snapshot
from bridge.testing import RunningBridge, UdpPeer, wait_for

pytestmark = pytest.mark.integration

W, H = 64, 48
N = W * H * 2


def free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def samples(reg: CollectorRegistry) -> dict[str, float]:
    """Every sample of the exposition, by its name and labels as written."""
    out = {}
    for line in generate_latest(reg).decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def scrape(stats: BridgeStats) -> dict[str, float]:
    """A scrape as the daemon serves it (through a snapshot), checked against a live one."""
    snap = CollectorRegistry()
    register(restore(snapshot(stats))[0], snap, build={"version": "t"})
    direct = CollectorRegistry()
    register(stats, direct, build={"version": "t"})
    text, live = samples(snap), samples(direct)
    own = {k: v for k, v in text.items() if k.startswith("spikebridge_endpoint_events_total")}
    assert own and own == {k: live[k] for k in own}
    return text


def packet(xs: list[int], ys: list[int]) -> bytes:
    n = len(xs)
    return dvstream.event_packet(dvstream.events_array(
        np.arange(1_000, 1_000 + n), np.array(xs), np.array(ys), np.ones(n, dtype=bool)))


def test_input_reconnect_and_events_outside_are_counted_and_the_books_balance() -> None:
    port = free_tcp_port()
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # stands in for a DV server
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", port))
    server.listen(4)
    server.settimeout(10)
    out = UdpPeer()
    rb = RunningBridge(config_from_flags(
        [f"dv+tcp://127.0.0.1:{port}?neurons={N}&backoff=20&backoff_max=80&name=cam"],
        [f"udp://127.0.0.1:{out.port}?format=native&neurons={N}&name=net"]))
    st = rb.bridge.stats.inputs[0]
    conn, _ = server.accept()
    try:
        conn.sendall(dvstream.io_header(W, H) + packet([1, 2, 3], [0, 0, 0]))
        got = out.recv()
        assert got is not None
        assert wait_for(lambda: st.accepted == 1)
        conn.sendall(packet([5, W + 7, 6], [1, 1, H]))  # two events outside 64x48
        assert wait_for(lambda: st.frames == 2)
        text = scrape(rb.bridge.stats)
        assert text['spikebridge_frames_dropped_total{endpoint="cam",reason="id_out_of_range"}'
                    ] == 1
        assert text['spikebridge_endpoint_events_total{counter="events_outside",endpoint="cam"}'
                    ] == 2
        assert text['spikebridge_endpoint_events_total{counter="reconnects",endpoint="cam"}'] == 0

        conn.close()  # the server drops us ...
        conn, _ = server.accept()  # ... and takes the reconnection
        assert wait_for(lambda: st.up == 1 and rb.bridge.inputs[0].ep.reconnects == 1, 10)
        conn.sendall(dvstream.io_header(W, H) + packet([9], [9]))
        assert wait_for(lambda: st.accepted == 2)
        text = scrape(rb.bridge.stats)
        assert text['spikebridge_endpoint_events_total{counter="reconnects",endpoint="cam"}'] == 1
        assert text['spikebridge_endpoint_up{endpoint="cam"}'] == 1
        received = text['spikebridge_frames_received_total{endpoint="cam"}']
        accepted = text['spikebridge_frames_accepted_total{endpoint="cam"}']
        dropped = sum(v for k, v in text.items()
                      if k.startswith('spikebridge_frames_dropped_total{endpoint="cam"'))
        assert (received, accepted, dropped) == (3, 2, 1)  # received = accepted + dropped
        assert st.balanced()
        assert text['spikebridge_spikes_received_total{endpoint="cam"}'] == 4  # 3 + 1
    finally:
        conn.close()
        rb.stop()
        server.close()
        out.close()


def test_output_slow_client_is_dropped_and_counted_in_the_scrape() -> None:
    port = free_tcp_port()
    rb = RunningBridge(config_from_flags(
        [f"udp://127.0.0.1:0?format=native&neurons={N}&name=net"],
        [f"dv+tcp://127.0.0.1:{port}?neurons={N}&width={W}&height={H}&client_buffer_kb=64"
         "&name=cam"]))
    ep = rb.bridge.outputs[0].ep
    slow = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    codec = make_codec(endpoint_spec(f"udp://127.0.0.1:1?format=native&neurons={N}", "out"))
    try:
        slow.connect(("127.0.0.1", port))  # connects, never reads
        assert wait_for(lambda: ep.clients == 1, 5)  # type: ignore[attr-defined]
        ids = np.arange(0, 200, dtype=np.uint32)
        addr = ("127.0.0.1", rb.in_port(0))
        end = time.monotonic() + 20
        k = 0
        while ep.slow_clients == 0 and time.monotonic() < end:  # type: ignore[attr-defined]
            for d in codec.encode(SpikeFrame(0, k, 0, ids)):
                tx.sendto(d, addr)
            k += 1
            time.sleep(0.001)
        text = scrape(rb.bridge.stats)
        assert text['spikebridge_endpoint_events_total{counter="slow_clients",endpoint="cam"}'
                    ] == 1
        assert text['spikebridge_endpoint_events_total{counter="clients_accepted",'
                    'endpoint="cam"}'] == 1
        assert text['spikebridge_endpoint_events_total{counter="clients_refused",'
                    'endpoint="cam"}'] == 0
        # the input side's counters are not the output's
        assert not [k for k in text if re.search(r'counter="reconnects",endpoint="cam"', k)]
        assert text['spikebridge_frames_sent_total{endpoint="cam"}'] > 0
    finally:
        slow.close()
        tx.close()
        rb.stop()
