"""The exporter process: the exposition as in-process, the daemon's process metrics, cleanup."""

from __future__ import annotations

import os
import socket
import time
import urllib.request

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from bridge.engine.stats import BridgeStats
from bridge.errors import EndpointError
from bridge.service.metrics import register
from bridge.service.metrics_process import MetricsProcess, restore, snapshot

pytestmark = pytest.mark.integration


def busy() -> BridgeStats:
    st = BridgeStats()
    cam = st.add_input("cam")
    cam.frames, cam.accepted, cam.spikes, cam.unrouted = 120, 100, 900, 7
    cam.drop("unrouted", 20)
    cam.one_way.observe(30_000)
    out = st.add_output("board")
    out.frames, out.peer_up = 99, 0
    out.drop("peer_unreachable", 1)
    st.latency("relay").observe(12_000)
    st.step_lateness.observe(5_000)
    st.realtime_refused["priority"] = 1
    st.steps = 5
    return st


def spikebridge_lines(text: str) -> list[str]:
    return sorted(line for line in text.splitlines() if line.startswith("spikebridge_"))


def test_a_snapshot_is_detached_and_gives_the_same_exposition() -> None:
    st = busy()
    snap, gc_stats = restore(snapshot(st))
    assert len(gc_stats) == 3 and "collections" in gc_stats[0]
    st.inputs[0].frames += 1000  # later changes do not reach the snapshot
    st.inputs[0].drops[0] += 1
    st.step_lateness.observe(1)
    reg_live, reg_snap = CollectorRegistry(), CollectorRegistry()
    before = busy()
    register(before, reg_live, build={"version": "0"})
    register(snap, reg_snap, build={"version": "0"})
    assert spikebridge_lines(generate_latest(reg_snap).decode()) == spikebridge_lines(
        generate_latest(reg_live).decode())


def test_the_child_serves_the_daemons_counters_and_process_metrics() -> None:
    st = busy()
    srv = MetricsProcess("127.0.0.1", 0, st)
    port = srv.start()[1]
    try:
        assert srv.pid is not None and srv.pid != os.getpid()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            text = resp.read().decode()
        assert 'spikebridge_frames_received_total{endpoint="cam"} 120.0' in text
        assert 'spikebridge_peer_up{endpoint="board"} 0.0' in text
        assert "python_gc_objects_collected_total" in text
        # process_* describe the daemon (this process), not the child.
        start = [line for line in text.splitlines()
                 if line.startswith("process_start_time_seconds ")]
        with open(f"/proc/{os.getpid()}/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat") as f:
            btime = next(int(x.split()[1]) for x in f if x.startswith("btime"))
        assert start and abs(float(start[0].split()[1]) - (btime + ticks / 100)) < 1.0
        st.inputs[0].frames = 121  # read at scrape time
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            assert 'endpoint="cam"} 121.0' in resp.read().decode()
        assert srv.scrapes == 2
    finally:
        srv.close()
        srv.close()
    with socket.socket() as s:  # the port is free again (as a restarted daemon binds it)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))


def test_a_taken_port_is_an_endpoint_error_in_the_parent() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        with pytest.raises(EndpointError, match=f"127.0.0.1:{port}"):
            MetricsProcess("127.0.0.1", port, BridgeStats()).start()


def test_the_child_goes_when_the_server_closes() -> None:
    srv = MetricsProcess("127.0.0.1", 0, BridgeStats())
    srv.start()
    pid = srv.pid
    assert pid is not None
    srv.close()
    end = time.monotonic() + 5
    while time.monotonic() < end and os.path.exists(f"/proc/{pid}"):
        time.sleep(0.05)
    assert not os.path.exists(f"/proc/{pid}")


def test_scrapes_that_arrive_while_it_starts_do_not_break_the_start() -> None:
    """A scraper polling the port (Prometheus, a readiness check) before the child is up."""
    import threading

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    stop = threading.Event()
    answers: list[int] = []

    def poll() -> None:
        while not stop.is_set():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                    answers.append(r.status)
            except OSError:
                time.sleep(0.001)

    t = threading.Thread(target=poll, daemon=True)
    t.start()
    srv = MetricsProcess("127.0.0.1", port, busy())
    try:
        srv.start()
        end = time.monotonic() + 10
        while not answers and time.monotonic() < end:
            time.sleep(0.01)
        assert answers and set(answers) == {200}
    finally:
        stop.set()
        t.join(timeout=10)
        srv.close()


def test_a_late_snapshot_fails_its_scrape_and_never_answers_a_later_one() -> None:
    """A stalled daemon: its scrape fails (500, then SpikebridgeDown), the next one is right."""
    import struct
    import threading

    from bridge.service.metrics_process import SnapshotCollector

    ask, reply = struct.Struct("!cI"), struct.Struct("!II")
    child_end, daemon_end = socket.socketpair()
    collector = SnapshotCollector(child_end, timeout_s=0.2)

    def daemon() -> None:
        for frames in (111, 222):
            _, number = ask.unpack(daemon_end.recv(ask.size))
            st = busy()
            st.inputs[0].frames = frames
            data = snapshot(st)
            if frames == 111:
                time.sleep(0.5)  # misses the scrape's deadline
            daemon_end.sendall(reply.pack(number, len(data)) + data[:10])
            daemon_end.sendall(data[10:])

    t = threading.Thread(target=daemon, daemon=True)
    t.start()
    try:
        with pytest.raises(TimeoutError):
            list(collector.collect())
        time.sleep(0.5)  # the late reply is in the socket now
        families = {f.name: f for f in collector.collect()}
        received = families["spikebridge_frames_received"].samples
        assert [s.value for s in received] == [222]
    finally:
        t.join(timeout=5)
        child_end.close()
        daemon_end.close()


def test_a_snapshot_taken_mid_frame_still_balances_the_books() -> None:
    # The loop books a frame in two steps (received first, then accepted or a drop reason),
    # and the snapshot thread can run between them. Here another thread books frames as the
    # loop does, switching the interpreter as often as it can; every snapshot must balance.
    import sys
    import threading

    st = BridgeStats()
    cam = st.add_input("cam")
    stop = threading.Event()

    def loop() -> None:
        n = 0
        while not stop.is_set():
            cam.frames += 1
            n += 1  # the decode and the checks, between the two halves of the booking
            if n % 7:
                cam.accepted += 1
            else:
                cam.drops[0] += 1

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    t = threading.Thread(target=loop, daemon=True)
    t.start()
    try:
        torn = 0
        for _ in range(300):
            got = restore(snapshot(st))[0].inputs[0]
            torn += got.frames != got.accepted + sum(got.drops)
        assert cam.frames > 0
        assert torn == 0
    finally:
        stop.set()
        t.join()
        sys.setswitchinterval(old)
